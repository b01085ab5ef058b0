#!/usr/bin/env python3
"""The official `openai` Node SDK and `@openrouter/sdk` (pinned, from npm) against
`frugal serve` in front of `frugal sim`: serve_sdk_client.mjs makes the calls, this script
starts the servers and checks the money after: each tenant under its cap, the ledger equal to
the simulator's bill and to /metrics, and SIGTERM mid-stream losing no spend.

Exit 77 (skipped) without node and npm, or when the packages cannot be installed.
Usage: serve_sdk_test.py FRUGAL NPM_DIR
"""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_common import (UPSTREAM_KEY, Checks, environment, ledger_costs, metric_costs, request,
                          sigterm_mid_stream, sim_bill_total, start)

FRUGAL, NPM_DIR = sys.argv[1], sys.argv[2]
PACKAGES = {'openai': '6.49.0', '@openrouter/sdk': '1.3.19'}
here = os.path.dirname(os.path.abspath(__file__))


def installed(name, version):
    try:
        with open(os.path.join(NPM_DIR, 'node_modules', name, 'package.json')) as f:
            return json.load(f).get('version') == version
    except OSError:
        return False


if not shutil.which('node') or not shutil.which('npm'):
    print('SKIP: node and npm are needed to run the SDKs')
    sys.exit(77)
if not all(installed(n, v) for n, v in PACKAGES.items()):
    os.makedirs(NPM_DIR, exist_ok=True)
    if not os.path.exists(os.path.join(NPM_DIR, 'package.json')):
        with open(os.path.join(NPM_DIR, 'package.json'), 'w') as f:
            f.write('{"private": true}')
    r = subprocess.run(['npm', 'install', '--no-audit', '--no-fund', '--silent'] +
                       ['%s@%s' % nv for nv in PACKAGES.items()], cwd=NPM_DIR, timeout=300)
    if r.returncode != 0 or not all(installed(n, v) for n, v in PACKAGES.items()):
        print('SKIP: could not install %s from the npm registry' % PACKAGES)
        sys.exit(77)

check = Checks()
tmp = tempfile.mkdtemp(prefix='frugal-serve-sdk-')
env = environment()
sim, sim_port = start([FRUGAL, 'sim', '--port', '0'], env)
keys = {t: '%s-key-%s' % (t, '0123456789abcdef') for t in ('alpha', 'beta', 'delta', 'limited')}
caps = {'alpha': '1.00', 'beta': '0.004', 'delta': '0.50'}
config = {
    'upstream': {'base_url': 'http://127.0.0.1:%d/api/v1' % sim_port},
    'policies': {'cheap': {'tiers': ['google/gemma-4-31b-it:free', 'anthropic/claude-sonnet-4.5']}},
    'keys': {keys[t]: {'tenant': t, 'budget': {'usd': caps[t]}} for t in caps},
    'ledger': os.path.join(tmp, 'ledger.db'),
    'limits': {'grace_seconds': 1},
}
config['keys'][keys['beta']]['allow'] = ['frugal/cheap', 'anthropic/claude-sonnet-4.5']
config['keys'][keys['limited']] = {'tenant': 'limited', 'rpm': 1}
with open(os.path.join(tmp, 'gateway.json'), 'w') as f:
    json.dump(config, f)
gw, port = start([FRUGAL, 'serve', '--config', os.path.join(tmp, 'gateway.json'), '--port', '0'], env)

r = subprocess.run(['node', os.path.join(here, 'serve_sdk_client.mjs'), os.path.join(NPM_DIR, 'node_modules'),
                    'http://127.0.0.1:%d/api/v1' % port, json.dumps(keys)],
                   capture_output=True, text=True, timeout=300)
print(r.stdout, end='')
check('the SDK checks ran to their end', r.returncode == 0, r.stderr[-2000:])

db = sqlite3.connect(config['ledger'])
ledger = ledger_costs(db)
db.close()
for tenant, cap in caps.items():
    spent = sum(v for (t, _), v in ledger.items() if t == tenant)
    whole, _, frac = cap.partition('.')
    check('%s spent no more than its cap' % tenant, spent <= int(whole) * 10**12 + int((frac + '0' * 12)[:12]), str(spent))
check('the ledger equals the simulator\'s bill', sum(ledger.values()) == sim_bill_total(sim_port),
      '%d vs %d' % (sum(ledger.values()), sim_bill_total(sim_port)))
_, _, metrics = request(port, 'GET', '/metrics')
check('/metrics equals the ledger', metric_costs(metrics) == ledger, '%s vs %s' % (metric_costs(metrics), ledger))


sigterm_mid_stream(check, gw, port, keys['alpha'], config['ledger'])
check('the upstream key appears nowhere', UPSTREAM_KEY not in gw.stderr.read() + r.stdout + r.stderr + metrics)
sim.terminate()
sim.wait()
if check.failures:
    print('%d check(s) failed' % check.failures)
    sys.exit(1)
