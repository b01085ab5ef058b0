#!/usr/bin/env python3
"""Two `frugal serve` processes sharing one cap through Redis, in front of one simulator.

8 clients on each gateway spend under one tenant's cap: the two ledgers together stay under
the cap and add up to the simulator's bill, both gateways refuse with 402 once it is spent, and
another tenant, on the same Redis, goes on. A key's rpm holds across the two. Each gateway
streams, answers 400 and 401 in the OpenAI shape, and has /metrics equal to its own ledger;
SIGTERM on one mid-stream leaves both cut streams in its ledger.

Exit 77 (skipped) without redis-server. Usage: serve_fleet_test.py FRUGAL
"""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_common import (Checks, chat, environment, ledger_costs, metric_costs, request, sigterm_mid_stream,
                          sim_bill_total, start, user)

FRUGAL = sys.argv[1]
if not shutil.which('redis-server'):
    print('SKIP: no redis-server')
    sys.exit(77)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


check = Checks()
tmp = tempfile.mkdtemp(prefix='frugal-serve-fleet-')
rport = free_port()
redis = subprocess.Popen(['redis-server', '--port', str(rport), '--bind', '127.0.0.1', '--save', '',
                          '--appendonly', 'no'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(('127.0.0.1', rport), timeout=0.2).close()
        break
    except OSError:
        time.sleep(0.05)

env = environment()
sim, sim_port = start([FRUGAL, 'sim', '--port', '0'], env)
SHARED, OTHER = 'shared-key-0123456789abcdef', 'other-key-0123456789abcdef'
RATED = 'rated-key-0123456789abcdef'
gateways = []
for i in range(2):
    config = {
        'upstream': {'base_url': 'http://127.0.0.1:%d/api/v1' % sim_port},
        'keys': {SHARED: {'tenant': 'shared', 'budget': {'usd': '0.006'}},
                 OTHER: {'tenant': 'other', 'budget': {'usd': '1.00'}},
                 RATED: {'tenant': 'rated', 'budget': {'usd': '1.00'}, 'rpm': 3}},
        'ledger': os.path.join(tmp, 'ledger%d.db' % i),
        'budget_store': 'redis://127.0.0.1:%d/0' % rport,
        'limits': {'grace_seconds': 1},
    }
    path = os.path.join(tmp, 'gateway%d.json' % i)
    with open(path, 'w') as f:
        json.dump(config, f)
    gateways.append(start([FRUGAL, 'serve', '--config', path, '--port', '0'], env) + (config['ledger'],))

statuses = []
lock = threading.Lock()


def client(port):
    for _ in range(4):
        s, _, body = chat(port, SHARED, {'model': 'anthropic/claude-sonnet-4.5', 'messages': user('[sim tokens=40] go'),
                                         'max_tokens': 60})
        with lock:
            statuses.append((port, s, body))


# One request through each first, so that each is seen to spend; then both at once.
for g in gateways:
    s, _, body = chat(g[1], SHARED, {'model': 'anthropic/claude-sonnet-4.5', 'messages': user('[sim tokens=40] go'),
                                     'max_tokens': 60})
    statuses.append((g[1], s, body))
threads = [threading.Thread(target=client, args=(g[1],)) for g in gateways for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
codes = {(p, s) for p, s, _ in statuses}
check('both gateways answered', all((g[1], 200) in codes for g in gateways), str(sorted(codes)))
check('both gateways refuse once the shared cap is spent', all((g[1], 402) in codes for g in gateways), str(sorted(codes)))
s, _, body = chat(gateways[1][1], OTHER, {'model': 'anthropic/claude-sonnet-4.5', 'messages': user('hi'), 'max_tokens': 60})
check('another tenant on the same Redis goes on', s == 200, body[:200])

# A key's rate is the fleet's: three a minute through both gateways together, not each.
rated = [chat(gateways[i % 2][1], RATED, {'model': 'google/gemma-4-31b-it:free', 'messages': user('hi'),
                                          'max_tokens': 20}) for i in range(5)]
check('a key\'s rpm holds across the fleet, with Retry-After',
      [r[0] for r in rated] == [200, 200, 200, 429, 429] and int(rated[3][1].get('retry-after', '0')) >= 1,
      str([(r[0], r[1].get('retry-after')) for r in rated]))

# The rest of what one gateway promises, on each of the two.
for i, (_, port, ledger) in enumerate(gateways):
    s, _, whole = chat(port, OTHER, {'model': 'anthropic/claude-sonnet-4.5', 'messages': user('Say hello'),
                                     'max_tokens': 60})
    s2, h, streamed = chat(port, OTHER, {'model': 'anthropic/claude-sonnet-4.5', 'stream': True,
                                         'messages': user('Say hello'), 'max_tokens': 60})
    events = [e[6:] for e in streamed.split('\n\n') if e.startswith('data: ')]
    text = ''.join(json.loads(e)['choices'][0]['delta'].get('content', '') for e in events
                   if e != '[DONE]' and json.loads(e).get('choices'))
    check('gateway %d: a stream is the whole answer, ending with [DONE]' % i,
          (s, s2) == (200, 200) and events[-1] == '[DONE]' and
          text == json.loads(whole)['choices'][0]['message']['content'], streamed[-300:])
    s, _, body = chat(port, 'unknown-key-0123456789abcdef', {'model': 'anthropic/claude-sonnet-4.5',
                                                              'messages': user('x')})
    s2, _, body2 = chat(port, OTHER, {'model': 'anthropic/claude-sonnet-4.5', 'messages': []})
    check('gateway %d: 401 and 400 in the OpenAI shape' % i,
          s == 401 and json.loads(body)['error']['type'] and s2 == 400 and
          json.loads(body2)['error']['param'] == 'messages', body + body2)
    _, _, metrics = request(port, 'GET', '/metrics')
    db = sqlite3.connect(ledger)
    own = ledger_costs(db)
    db.close()
    check('gateway %d: /metrics equals its own ledger' % i, metric_costs(metrics) == own,
          '%s vs %s' % (metric_costs(metrics), own))


def ledgers_spent():
    spent = {}
    for _, _, ledger in gateways:
        db = sqlite3.connect(ledger)
        for (tenant, _), v in ledger_costs(db).items():
            spent[tenant] = spent.get(tenant, 0) + v
        db.close()
    return spent


# Before the SIGTERM below: the streams it cuts are held at their worst case until reconciled.
spent = ledgers_spent()
check('the two ledgers add up to the simulator\'s bill', sum(spent.values()) == sim_bill_total(sim_port),
      '%d vs %d' % (sum(spent.values()), sim_bill_total(sim_port)))

# SIGTERM on one gateway mid-stream: both its cut streams settled in its ledger; the other
# stops as usual.
sigterm_mid_stream(check, gateways[0][0], gateways[0][1], OTHER, gateways[0][2])

# Redis gone: a paid request's spend could not be recorded, so it is refused with a 503 that
# says so, not blamed on the upstream; a free one goes on.
redis.terminate()
redis.wait()
status, _, body = chat(gateways[1][1], OTHER, {'model': 'anthropic/claude-sonnet-4.5', 'max_tokens': 20,
                                                'messages': user('x')})
check('Redis gone: a paid request is refused with 503 budget_store_unavailable',
      status == 503 and 'budget_store_unavailable' in body, '%d %s' % (status, body[:300]))
status, _, body = chat(gateways[1][1], OTHER, {'model': 'google/gemma-4-31b-it:free', 'messages': user('x')})
check('Redis gone: a free request goes on', status == 200, '%d %s' % (status, body[:300]))
gateways[1][0].terminate()
for p, _, _ in gateways:
    p.wait(timeout=60)
check('both gateways stop cleanly', all(p.returncode == 0 for p, _, _ in gateways), str([p.returncode for p, _, _ in gateways]))
spent = ledgers_spent()
check('the two ledgers together stay under the shared cap', 0 < spent.get('shared', 0) <= 6 * 10**9, str(spent))
sim.terminate()
redis.terminate()
sim.wait()
redis.wait()
if check.failures:
    print('%d check(s) failed' % check.failures)
    sys.exit(1)
