"""What the gateway's tests share: starting `frugal sim` and `frugal serve`, and plain HTTP."""
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

UPSTREAM_KEY = 'sk-or-v1-upstream-secret-7f3e9a'


class Checks:
    def __init__(self):
        self.failures = 0

    def __call__(self, name, ok, detail=''):
        if ok:
            print('ok  ', name)
        else:
            self.failures += 1
            print('FAIL', name, detail)


def environment():
    """The upstream key set, and nothing that could send a request anywhere but loopback."""
    env = dict(os.environ, OPENROUTER_API_KEY=UPSTREAM_KEY)
    for k in ('OPENROUTER_BASE_URL', 'HTTPS_PROXY', 'https_proxy'):
        env.pop(k, None)
    return env


def start(args, env):
    """Starts a server that prints `listening on http://127.0.0.1:PORT/api/v1`; its port."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    m = re.match(r'listening on http://127\.0\.0\.1:(\d+)/api/v1', line)
    if not m:
        p.kill()
        raise SystemExit('did not start: %r %s' % (line, p.stderr.read()))
    return p, int(m.group(1))


def request(port, method, path, body=None, key=None, timeout=30):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    headers = {'Content-Type': 'application/json'}
    if key:
        headers['Authorization'] = 'Bearer ' + key
    c.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body, headers=headers)
    r = c.getresponse()
    data = r.read().decode()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def chat(port, key, body, timeout=30):
    return request(port, 'POST', '/api/v1/chat/completions', body, key, timeout)


def user(text):
    return [{'role': 'user', 'content': text}]


def metric_costs(metrics_text, by_outcome=False):
    """frugal_cost_usd_total by (tenant, model), its outcomes summed, or by (tenant, model,
    outcome), in the ledger's units (1e-12 USD)."""
    out = {}
    for m in re.finditer(r'^frugal_cost_usd_total\{tenant="([^"]*)",model="([^"]*)",outcome="([^"]*)"\} ([0-9.]+)$',
                         metrics_text, re.M):
        whole, _, frac = m.group(4).partition('.')
        key = m.group(1, 2, 3) if by_outcome else m.group(1, 2)
        out[key] = out.get(key, 0) + int(whole) * 10**12 + int((frac + '0' * 12)[:12])
    return out


def ledger_costs_by_outcome(db):
    """The ledger's cost by (tenant, model asked, outcome)."""
    return {(keys.split(':', 1)[1], model, outcome): cost for keys, model, outcome, cost in
            db.execute('SELECT keys, model_asked, outcome, SUM(cost) FROM ledger GROUP BY keys, model_asked, outcome')}


def ledger_costs(db):
    """The ledger's cost by (tenant, model asked)."""
    return {(keys.split(':', 1)[1], model): cost for keys, model, cost in
            db.execute('SELECT keys, model_asked, SUM(cost) FROM ledger GROUP BY keys, model_asked')}


def sim_bill_total(sim_port):
    """The simulator's own bill, in the ledger's units."""
    _, _, body = request(sim_port, 'GET', '/__sim/bill')
    total = json.loads(body)['total']['cost_usd']
    whole, _, frac = total.partition('.')
    return int(whole) * 10**12 + int((frac + '0' * 12)[:12])


def sigterm_mid_stream(check, gw, port, key, ledger_path):
    """SIGTERM while two streams run, one waiting on the upstream's first token and one whose
    text has begun: the gateway drains, cancels both at the grace's end, exits 0, and both
    attempts are in the ledger, held at their worst case."""
    replies = {}
    began = threading.Event()  # the started stream's first text has arrived

    def stream(name, directive):
        try:
            c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
            c.request('POST', '/api/v1/chat/completions',
                      json.dumps({'model': 'anthropic/claude-sonnet-4.5', 'stream': True, 'max_tokens': 50,
                                  'messages': user(directive + ' wait')}),
                      {'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'})
            r = c.getresponse()
            body = b''
            while True:
                line = r.readline()
                if not line:
                    break
                body += line
                if b'"content"' in line:
                    began.set()
            replies[name] = (r.status, {}, body.decode())
            c.close()
        except Exception as e:
            replies[name] = (0, {}, str(e))

    threads = [threading.Thread(target=stream, args=('waiting', '[sim fault=slow-first-token ms=60000]')),
               threading.Thread(target=stream, args=('started', '[sim tokens=40 fault=stall after=3 ms=60000]'))]
    for t in threads:
        t.start()
    # SIGTERM once text is flowing, and the other request has long been waiting (a slow
    # sanitizer build included).
    check('SIGTERM: the stream\'s text began before the signal', began.wait(timeout=30))
    time.sleep(0.5)
    gw.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    try:
        gw.wait(timeout=60)
    except subprocess.TimeoutExpired:
        gw.kill()
    check('SIGTERM: the gateway exits 0', gw.returncode == 0, str(gw.returncode))
    status, _, body = replies.get('started', (0, {}, ''))
    events = [e[6:] for e in body.split('\n\n') if e.startswith('data: ')]
    shown = ''.join(json.loads(e)['choices'][0]['delta'].get('content', '') for e in events[:-1]
                    if e != '[DONE]' and json.loads(e).get('choices'))
    check('SIGTERM: a stream whose text began ends with an error chunk and [DONE]',
          status == 200 and shown and len(events) >= 2 and events[-1] == '[DONE]' and
          json.loads(events[-2]).get('error') is not None, body[-400:])
    db = sqlite3.connect(ledger_path)
    rows = db.execute("SELECT outcome, cost FROM ledger WHERE model_asked = 'anthropic/claude-sonnet-4.5' "
                      "ORDER BY id DESC LIMIT 2").fetchall()
    db.close()
    check('SIGTERM: both cut streams are in the ledger, held at their worst case',
          len(rows) == 2 and all(o == 'cancelled' and c > 0 for o, c in rows), str(rows))
