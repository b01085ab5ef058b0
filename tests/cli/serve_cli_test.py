#!/usr/bin/env python3
"""`frugal serve` in front of `frugal sim`, as a client of the OpenAI wire sees it.

Checks: whole and streamed answers with usage.cost and the x-frugal headers; a cascade that
escalates in a stream never shows the cheap tier's text; the error shapes (400, 401, 402, 403,
404, 429) and Retry-After; a tenant's spend stays under its cap while another tenant goes on;
/metrics parses and its cost counters equal the ledger; SIGTERM mid-stream leaves the attempt
in the ledger; the upstream key appears nowhere; config errors name the member.

Usage: serve_cli_test.py FRUGAL
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_common import (UPSTREAM_KEY, Checks, chat, environment, ledger_costs, ledger_costs_by_outcome,
                          metric_costs, request, sigterm_mid_stream, start, user)

FRUGAL = sys.argv[1]
check = Checks()


def sse_events(text):
    out = []
    for block in text.split('\n\n'):
        for line in block.split('\n'):
            if line.startswith('data: '):
                out.append(line[6:])
    return out


def streamed_text(events):
    text = ''
    for e in events:
        if e == '[DONE]':
            continue
        j = json.loads(e)
        for ch in j.get('choices', []):
            text += ch.get('delta', {}).get('content', '') or ''
    return text


tmp = tempfile.mkdtemp(prefix='frugal-serve-')
env = environment()

sim, sim_port = start([FRUGAL, 'sim', '--port', '0'], env)
ALPHA, BETA, GAMMA = 'alpha-key-0123456789abcdef', 'beta-key-0123456789abcdef', 'gamma-key-0123456789abcdef'
ONE_A_MINUTE = 'one-a-minute-key-0123456789abcdef'
SLOW = 'slow-key-0123456789abcdef'
SHORT = 'short-cap-key-0123456789abcdef'  # its cap pays no escalation to the flagship
OVER = 'overbilled-key-0123456789abcdef'  # meets a provider billing above its prices
config = {
    'upstream': {'base_url': 'http://127.0.0.1:%d/api/v1' % sim_port},
    'policies': {'cheap': {'tiers': ['google/gemma-4-31b-it:free', 'anthropic/claude-sonnet-4.5']}},
    'keys': {
        ALPHA: {'tenant': 'alpha', 'budget': {'usd': '1.00', 'period': 'day'}},
        # written as its hash: the file holds no secret
        'sha256:' + hashlib.sha256(BETA.encode()).hexdigest(): {
            'tenant': 'beta', 'budget': {'usd': '0.004'}, 'allow': ['frugal/cheap', 'anthropic/claude-sonnet-4.5']},
        GAMMA: {'tenant': 'gamma', 'budget': {'usd': '1.00'}, 'rpm': 2},
        ONE_A_MINUTE: {'tenant': 'gamma', 'budget': {'usd': '1.00'}, 'rpm': 1},
        SLOW: {'tenant': 'slow', 'budget': {'usd': '5.00'}},
        SHORT: {'tenant': 'short', 'budget': {'usd': '0.0002'}},
        OVER: {'tenant': 'over', 'budget': {'usd': '1.00'}},
    },
    'ledger': os.path.join(tmp, 'ledger.db'),
    # A small kernel send buffer: a slow reader's stream overflows it (below), and every other
    # stream's writes may find it full too.
    'limits': {'grace_seconds': 1, 'socket_send_buffer_bytes': 16384},
}
cfg_path = os.path.join(tmp, 'gateway.json')
with open(cfg_path, 'w') as f:
    json.dump(config, f)

# Config errors name the member.
bad = dict(config, keys={ALPHA: {'tenant': 'alpha', 'budget': {'usd': '-1'}}})
bad_path = os.path.join(tmp, 'bad.json')
with open(bad_path, 'w') as f:
    json.dump(bad, f)
r = subprocess.run([FRUGAL, 'serve', '--config', bad_path, '--port', '0'], capture_output=True, text=True, env=env)
check('a bad budget is refused, naming the member', r.returncode == 2 and '.budget.usd' in r.stderr and ALPHA not in r.stderr, r.stderr)
with open(bad_path, 'w') as f:
    json.dump(dict(config, limits={'max_body': 5}), f)
r = subprocess.run([FRUGAL, 'serve', '--config', bad_path, '--port', '0'], capture_output=True, text=True, env=env)
check('an unknown member is refused by name', r.returncode == 2 and 'limits.max_body: unknown member' in r.stderr, r.stderr)

# A key written twice: the later copy would win without a word, and a cap with the earlier.
with open(bad_path, 'w') as f:
    f.write('{"keys": {"%s": {"tenant": "a", "budget": {"usd": "0.0001"}}, "%s": {"tenant": "a"}}}' % (ALPHA, ALPHA))
r = subprocess.run([FRUGAL, 'serve', '--config', bad_path, '--port', '0'], capture_output=True, text=True, env=env)
check('a key written twice is refused, without naming the key', r.returncode == 2 and
      'keys.<member 2> is written twice' in r.stderr and ALPHA not in r.stderr, r.stderr)

no_key = {k: v for k, v in env.items() if k != 'OPENROUTER_API_KEY'}
r = subprocess.run([FRUGAL, 'serve', '--config', cfg_path, '--port', '0'], capture_output=True, text=True,
                   env=no_key, timeout=30)
check('without the upstream key it says so and exits 1', r.returncode == 1 and 'OPENROUTER_API_KEY' in r.stderr,
      '%d %s' % (r.returncode, r.stderr))

gw, port = start([FRUGAL, 'serve', '--config', cfg_path, '--port', '0'], env)
status, _, body = request(port, 'GET', '/readyz')
check('ready once listening', status == 200, body)

# Whole, through the cascade, kept cheap.
status, h, body = chat(port, ALPHA, {'model': 'frugal/cheap', 'messages': user('Say hello')})
j = json.loads(body)
check('whole: 200 with a chat.completion', status == 200 and j['object'] == 'chat.completion', body)
check('whole: the model that answered', j['model'] == 'google/gemma-4-31b-it:free' == h.get('x-frugal-model'), str(h))
check('whole: usage carries cost and tokens', j['usage']['cost'] == 0 and j['usage']['total_tokens'] > 0, body)
check('whole: not escalated', h.get('x-frugal-escalated') == 'false', str(h))
check('whole: budget remaining', h.get('x-frugal-budget-remaining') == '1', str(h))

# A streamed cascade that escalates never shows the cheap tier's text: what streams is exactly
# the flagship's answer to the same prompt.
hard = user('[sim difficulty=10] Explain the theorem')
status, h, body = chat(port, ALPHA, {'model': 'frugal/cheap', 'stream': True, 'messages': hard, 'max_tokens': 200})
events = sse_events(body)
status2, _, direct = chat(port, ALPHA, {'model': 'anthropic/claude-sonnet-4.5', 'messages': hard, 'max_tokens': 200})
flagship_text = json.loads(direct)['choices'][0]['message']['content']
check('stream: 200 event-stream', status == 200 and h.get('content-type') == 'text/event-stream', str(h))
check('stream: escalated to the flagship', h.get('x-frugal-model') == 'anthropic/claude-sonnet-4.5' and h.get('x-frugal-escalated') == 'true', str(h))
check('stream: only the flagship\'s text was sent', streamed_text(events) == flagship_text, streamed_text(events) + ' vs ' + flagship_text)
check('stream: ends with [DONE]', events[-1] == '[DONE]', str(events[-2:]))
last = json.loads(events[-2])
check('stream: the last chunk has the usage and its cost', last['usage']['cost'] > 0 and last['choices'][0]['finish_reason'] == 'stop', events[-2])

# The budget refuses the escalation: the cheap answer is kept, and both forms say so.
prove = user('prove [sim difficulty=10]')
status, h, body = chat(port, SHORT, {'model': 'frugal/cheap', 'max_tokens': 20, 'messages': prove})
check('whole: an escalation the budget refused says so', status == 200 and
      h.get('x-frugal-budget-denied') == 'true' and h.get('x-frugal-escalated') == 'false', str((status, h)))
status, h, body = chat(port, SHORT, {'model': 'frugal/cheap', 'max_tokens': 20, 'stream': True, 'messages': prove})
check('stream: an escalation the budget refused says so', status == 200 and
      h.get('x-frugal-budget-denied') == 'true' and h.get('x-frugal-escalated') == 'false' and
      streamed_text(sse_events(body)) != '', str((status, h, body[:200])))

# A stream the upstream breaks after its text began ends with an error chunk that still says
# what was spent: the paid attempt, its bill unknown, at its worst case as the ledger holds it.
status, h, body = chat(port, ALPHA, {'model': 'anthropic/claude-sonnet-4.5', 'max_tokens': 30, 'stream': True,
                                     'messages': user('[sim tokens=20 fault=midstream-error] go')})
events = sse_events(body)
tail = json.loads(events[-2]) if len(events) >= 2 and events[-1] == '[DONE]' else {}
check('stream: an error chunk carries the usage and cost spent', status == 200 and 'error' in tail and
      tail.get('choices', [{}])[0].get('finish_reason') == 'error' and tail.get('usage', {}).get('cost', 0) > 0,
      body[-400:])

# An alias or a router names the model it chose in its chunks: the stream shows that model, in
# its header and every chunk, as a whole answer does.
status, h, body = chat(port, ALPHA, {'model': 'frugal/cheap', 'stream': True,
                                     'messages': user('Say hi [sim tokens=6 served=google/gemma-4-31b-it-0412]')})
served_models = {json.loads(e)['model'] for e in sse_events(body) if e != '[DONE]'}
check('stream: the model that served, in the header and every chunk',
      status == 200 and h.get('x-frugal-model') == 'google/gemma-4-31b-it-0412' and
      served_models == {'google/gemma-4-31b-it-0412'}, str((h.get('x-frugal-model'), served_models)))
# A name no model has is not repeated in every chunk: the tier asked is shown.
status, h, body = chat(port, ALPHA, {'model': 'frugal/cheap', 'stream': True,
                                     'messages': user('Say hi [sim tokens=6 served=' + 'x' * 5000 + ']')})
long_models = {json.loads(e)['model'] for e in sse_events(body) if e != '[DONE]'}
check('stream: a model name longer than any is not repeated in every chunk',
      status == 200 and 'x' * 300 not in body and h.get('x-frugal-model') == 'google/gemma-4-31b-it:free' and
      'google/gemma-4-31b-it:free' in long_models, str((h.get('x-frugal-model'), len(body))))

# A stream's id: the same in each of its chunks, and never again, in this gateway or another
# (clients key logs and retries by it; several gateways may share one cap).
def stream_ids(events):
    return {json.loads(e)['id'] for e in events if e != '[DONE]'}
first_ids = stream_ids(events)
_, _, again = chat(port, ALPHA, {'model': 'frugal/cheap', 'stream': True, 'messages': user('Say hello')})
check('stream: one id in all its chunks, of its own shape',
      len(first_ids) == 1 and re.fullmatch(r'gen-frugal-[0-9a-f]{16}-\d+', next(iter(first_ids))), str(first_ids))
check('stream: the next stream has another id', len(stream_ids(sse_events(again)) | first_ids) == 2,
      str(stream_ids(sse_events(again))))

# A client that reads slowly gets every byte. It reads nothing for a while, so the gateway's
# socket fills and the rest of the stream waits in the gateway; then it reads to the end and
# gets the same text as a client that read at once.
def send_chat(sock, key, payload):
    """A chat request written by hand on `sock`, for a client that does what http.client does not."""
    sock.sendall(('POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                  'Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s' % (key, len(payload), payload)).encode())


def read_to_end(sock):
    sock.settimeout(30)
    got = b''
    while True:
        piece = sock.recv(65536)
        if not piece:
            return got
        got += piece


def queued_bytes(local_port):
    """The bytes the kernel holds for this connection: the client's Recv-Q and the gateway's Send-Q."""
    out = subprocess.run(['ss', '-tnH', 'state', 'established'], capture_output=True, text=True).stdout
    total = 0
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and (f[2].endswith(':%d' % local_port) or f[3].endswith(':%d' % local_port)):
            total += int(f[0]) + int(f[1])
    return total


if shutil.which('ss') is None:
    sys.exit('serve_cli_test: the slow-reader check needs ss (iproute2) to see the kernel\'s queues')
long_ask = {'model': 'openai/gpt-5-mini', 'stream': True, 'max_tokens': 20000,
            'messages': user('[sim tokens=20000] A long story, read slowly')}
_, _, at_once = chat(port, SLOW, long_ask)
slow = socket.socket()
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
slow.connect(('127.0.0.1', port))
send_chat(slow, SLOW, json.dumps(long_ask))
# Until the kernel's queues stop growing: the socket is full, and what is left waits upstream or
# in the gateway.
in_kernel, steady, waited = 0, 0, 0.0
while steady < 3 and waited < 15:
    time.sleep(0.2)
    waited += 0.2
    now = queued_bytes(slow.getsockname()[1])
    steady = steady + 1 if now == in_kernel and now > 0 else 0
    in_kernel = now
got = read_to_end(slow)
slow.close()
slow_text = got.decode().split('\r\n\r\n', 1)[1]
check('slow reader: more was sent than the kernel held, so some waited in the gateway',
      len(got) > 2 * in_kernel, '%d bytes sent, %d in the kernel' % (len(got), in_kernel))
check('slow reader: the same text as a client that read at once',
      streamed_text(sse_events(slow_text)) == streamed_text(sse_events(at_once)) and len(streamed_text(sse_events(at_once))) > 80000,
      '%d vs %d characters' % (len(streamed_text(sse_events(slow_text))), len(streamed_text(sse_events(at_once)))))
check('slow reader: it ends with [DONE]', sse_events(slow_text)[-1:] == ['[DONE]'], slow_text[-200:])


# The endpoints that are read answer HEAD with GET's head and no body, and other methods with
# 405 and the methods they take.
raw = socket.create_connection(('127.0.0.1', port))
raw.sendall(b'HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
head = read_to_end(raw).decode()
raw.close()
check('HEAD /healthz: 200, the length GET would send, no body', head.startswith('HTTP/1.1 200') and
      'Content-Length: 15\r\n' in head and head.endswith('\r\n\r\n'), head)
for path in ('/api/v1/models', '/metrics', '/healthz', '/readyz'):
    status, h, body = request(port, 'POST', path, '{}', ALPHA)
    check('POST %s: 405 with Allow: GET, HEAD' % path, status == 405 and h.get('allow') == 'GET, HEAD' and
          'method_not_allowed' in body, str((status, h.get('allow'), body[:200])))


# A chunked request body whose size line never ends (1 MiB of a chunk extension): Beast bounds
# no such line, so the gateway bounds its read buffer and answers 400 at once, instead of
# keeping what it reads until the client's deadline (or its memory) runs out.
raw = socket.create_connection(('127.0.0.1', port))
raw.settimeout(20)
try:
    raw.sendall(b'POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                b'Content-Type: application/json\r\n\r\n5;' + b'a' * (1 << 20))
except OSError:
    pass  # the gateway may close before taking it all; its answer is read below
endless = read_to_end(raw).decode(errors='replace')
raw.close()
check('a chunk size line without end: 400 at once, saying why', endless.startswith('HTTP/1.1 400') and
      "chunk's size line" in endless, endless[:300])


# Errors in OpenAI's shape.
def error_of(body):
    # OpenRouter's shape: the status as `code`, frugal's reason in `metadata.reason`.
    try:
        e = json.loads(body)['error']
        return dict(e, code=e['metadata']['reason'], status=e['code'])
    except Exception:
        return {}

status, _, body = chat(port, 'no-such-key-0000000000', {'model': 'frugal/cheap', 'messages': user('x')})
check('401 unknown key', status == 401 and error_of(body).get('code') == 'invalid_api_key', body)
status, _, body = chat(port, ALPHA, '{"model": "frugal/cheap", "messages": ')
check('400 bad JSON', status == 400 and 'not JSON' in error_of(body).get('message', ''), body)
status, _, body = chat(port, ALPHA, {'model': 'frugal/cheap', 'messages': user('x'), 'max_tokens': -3})
check('400 bad member names its param', status == 400 and error_of(body).get('param') == 'max_tokens', body)
status, _, body = chat(port, ALPHA, '{"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "x"}], '
                                     '"temperature": 1e400}')
check('400 a number out of range names its param', status == 400 and error_of(body).get('param') == 'temperature', body)
status, _, body = chat(port, ALPHA, {'model': 'frugal/cheap', 'messages': user('x'), 'models': ['a/b']})
check('400 fallback list refused', status == 400 and error_of(body).get('param') == 'models', body)
status, _, body = chat(port, ALPHA, {'model': 'no/such-model', 'messages': user('x')})
check('404 unknown model', status == 404 and error_of(body).get('code') == 'model_not_found', body)
status, _, body = chat(port, BETA, {'model': 'openai/gpt-5-mini', 'messages': user('x')})
check('403 model not allowed', status == 403 and error_of(body).get('code') == 'model_not_allowed', body)
codes = [chat(port, GAMMA, {'model': 'frugal/cheap', 'messages': user('x')}) for _ in range(3)]
check('429 past the key\'s rpm, with Retry-After', [c[0] for c in codes] == [200, 200, 429] and
      int(codes[2][1].get('retry-after', '0')) >= 1 and error_of(codes[2][2]).get('code') == 'rate_limited',
      str([(c[0], c[1].get('retry-after')) for c in codes]))
# The upstream's own 429, once the client's retries are spent: its Retry-After goes to the client.
status, h, body = chat(port, ALPHA, {'model': 'anthropic/claude-sonnet-4.5', 'max_tokens': 20,
                                     'messages': user('x [sim fault=429 retry_after=2]')})
check('429 from the upstream, with its Retry-After', status == 429 and h.get('retry-after') == '2' and
      error_of(body).get('code') == 'upstream_rate_limited', str((status, h.get('retry-after'), body[:200])))
status, h, body = chat(port, ALPHA, {'model': 'anthropic/claude-sonnet-4.5', 'max_tokens': 20,
                                     'messages': user('x [sim fault=429-no-retry-after]')})
check('429 from the upstream that named no wait: none made up', status == 429 and 'retry-after' not in h,
      str((status, h)))
status, _, body = request(port, 'POST', '/api/v1/chat/completions', 'x' * (2 << 20), ALPHA)
check('413 past the body limit', status == 413, body[:200])

# A provider that bills above its prices: the answer is delivered and booked at its bill, the
# model is priced as unknown from then on (for every tenant: its prices bound nothing), and
# /metrics says so for the operator.
surprise_model = 'deepseek/deepseek-v3.2'
status, _, body = chat(port, OVER, {'model': surprise_model, 'max_tokens': 20, 'messages': user('x [sim overbill=0.5]')})
check('an answer billed above its prices is delivered', status == 200, body[:200])
_, _, text = request(port, 'GET', '/metrics')
check('/metrics: the surprise counted, its model named', 'frugal_price_surprises_total 1\n' in text and
      'frugal_model_price_unknown{model="%s"} 1\n' % surprise_model in text,
      '\n'.join(l for l in text.splitlines() if 'surprise' in l or 'price_unknown' in l))
status, _, body = chat(port, ALPHA, {'model': surprise_model, 'max_tokens': 20, 'messages': user('x')})
check('then the model is refused with 400 price_unknown, saying why', status == 400 and
      error_of(body).get('code') == 'price_unknown' and 'billed' in error_of(body).get('message', ''), body)

# Beta's cap ($0.004) under 8 concurrent clients of paid requests: its spend stays under the
# cap, it gets 402s that say so, and alpha is not blocked.
results = []
lock = threading.Lock()


def beta_client():
    for _ in range(4):
        s, hh, b = chat(port, BETA, {'model': 'anthropic/claude-sonnet-4.5', 'messages': user('[sim tokens=40] go'), 'max_tokens': 60})
        with lock:
            results.append((s, b))


threads = [threading.Thread(target=beta_client) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
statuses = [s for s, _ in results]
denied = [b for s, b in results if s == 402]
check('402 once beta\'s cap is reached', 200 in statuses and len(denied) > 0, str(statuses))
check('402 says which cap and what is left', denied and 'tenant:beta' in error_of(denied[0]).get('message', '') and
      'left of its $0.004 cap' in error_of(denied[0]).get('message', ''), denied[0] if denied else '')
status, _, body = chat(port, ALPHA, {'model': 'anthropic/claude-sonnet-4.5', 'messages': user('hi'), 'max_tokens': 60})
check('another tenant goes on', status == 200, body[:200])

# A client that goes away mid-stream: its attempt is settled, in the ledger and in /metrics alike.
gone = socket.create_connection(('127.0.0.1', port))
send_chat(gone, ALPHA, json.dumps({'model': 'anthropic/claude-sonnet-4.5', 'stream': True, 'max_tokens': 40,
                                   'messages': user('[sim fault=slow-first-token ms=3000] gone')}))
time.sleep(0.3)
gone.close()
time.sleep(0.5)

status, _, metrics = request(port, 'GET', '/metrics')
line_re = re.compile(r'^(#.*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? -?[0-9.eE+Inf]+)$')
bad_lines = [l for l in metrics.strip().split('\n') if not line_re.match(l)]
check('/metrics follows the text format', status == 200 and not bad_lines, str(bad_lines[:3]))
db = sqlite3.connect(config['ledger'])
ledger = ledger_costs(db)
by_outcome = ledger_costs_by_outcome(db)
db.close()
as_units = metric_costs(metrics)
check('/metrics cost counters equal the ledger, a stream its client left included', as_units == ledger,
      '%s vs %s' % (as_units, ledger))
check('/metrics splits cost by outcome as the ledger does, the cancelled stream apart',
      metric_costs(metrics, by_outcome=True) == by_outcome and
      by_outcome.get(('alpha', 'anthropic/claude-sonnet-4.5', 'cancelled'), 0) > 0,
      '%s vs %s' % (metric_costs(metrics, by_outcome=True), by_outcome))
db = sqlite3.connect(config['ledger'])
left = db.execute("SELECT outcome, cost FROM ledger WHERE keys = 'tenant:alpha' ORDER BY id DESC LIMIT 1").fetchall()
ledger_reasons = dict(db.execute("SELECT reason, COUNT(*) FROM ledger WHERE reason != '' GROUP BY reason"))
db.close()
metric_reasons = {m.group(1): int(m.group(2)) for m in
                  re.finditer(r'^frugal_escalations_total\{reason="([^"]*)"\} ([0-9]+)$', metrics, re.M)}
check('/metrics escalations by reason equal the ledger\'s, the denied escalation included',
      metric_reasons == ledger_reasons and sum(ledger_reasons.values()) >= 2, '%s vs %s' % (metric_reasons, ledger_reasons))
check('the stream its client left is settled as cancelled, held at its worst case',
      left and left[0][0] == 'cancelled' and left[0][1] > 0, str(left))
beta_spent = ledger.get(('beta', 'anthropic/claude-sonnet-4.5'), 0)
check('beta spent no more than its cap', 0 < beta_spent <= 4 * 10**9, str(beta_spent))

# frugal report on the gateway's ledger, one tenant at a time.
r = subprocess.run([FRUGAL, 'report', '--ledger', config['ledger'], '--tenant', 'beta', '--json'],
                   capture_output=True, text=True)
rep = json.loads(r.stdout) if r.stdout.startswith('{') else {}
check('report --tenant: that tenant\'s spend and cap only',
      rep.get('caps', [{}])[0].get('budget') == 'tenant:beta' and len(rep.get('caps', [])) == 1 and
      round(float(rep.get('total_cost', '-1')) * 1e12) == sum(v for (t, _), v in ledger.items() if t == 'beta'),
      r.stdout[:400] + r.stderr)

# Pass-through spend is its model's, not the policy's cheap tier's (at index 0 as well).
r = subprocess.run([FRUGAL, 'report', '--ledger', config['ledger'], '--tenant', 'alpha', '--json'],
                   capture_output=True, text=True)
rows = json.loads(r.stdout).get('by_tier', []) if r.stdout.startswith('{') else []
free_rows = [t for t in rows if t.get('model') == 'google/gemma-4-31b-it:free']
passed = [t for t in rows if t.get('model') == 'anthropic/claude-sonnet-4.5' and t.get('tier') == 0]
check('report: a pass-through is its own row, not the free tier\'s spend',
      free_rows and all(t.get('free') and float(t.get('cost', '1')) == 0 for t in free_rows) and
      passed and not passed[0].get('free') and float(passed[0].get('cost', '0')) > 0, json.dumps(rows)[:600])

# SIGHUP: a key added to the file works at once, on the connections already open too. A key's
# rate is not refilled by it: a key at its limit before the reload still is.
DELTA = 'delta-key-0123456789abcdef'
with_delta = dict(config['keys'], **{DELTA: {'tenant': 'delta'}})
with open(cfg_path, 'w') as f:
    json.dump(dict(config, keys=with_delta), f)
before, _, _ = chat(port, ONE_A_MINUTE, {'model': 'frugal/cheap', 'messages': user('x')})
gw.send_signal(signal.SIGHUP)
time.sleep(0.5)
status, _, body = chat(port, DELTA, {'model': 'frugal/cheap', 'messages': user('Say hello')})
check('SIGHUP: an added key works', status == 200, body[:200])
again, h, _ = chat(port, ONE_A_MINUTE, {'model': 'frugal/cheap', 'messages': user('x')})
check('SIGHUP: a key at its rate limit before the reload still is', (before, again) == (200, 429) and
      h.get('retry-after') is not None, str((before, again)))

# A cap raised by SIGHUP holds at once and keeps what was spent: beta, at its cap above, is
# served again, and what it has left is the new cap less everything it spent.
BETA_ENTRY = 'sha256:' + hashlib.sha256(BETA.encode()).hexdigest()
raised = dict(with_delta)
raised[BETA_ENTRY] = dict(raised[BETA_ENTRY], budget={'usd': '1.00'})
with open(cfg_path, 'w') as f:
    json.dump(dict(config, keys=raised), f)
gw.send_signal(signal.SIGHUP)
time.sleep(0.5)
status, h, body = chat(port, BETA, {'model': 'anthropic/claude-sonnet-4.5', 'max_tokens': 50,
                                    'messages': user('Say hello')})
db = sqlite3.connect(config['ledger'])
beta_total = sum(v for (t, _), v in ledger_costs(db).items() if t == 'beta')
db.close()
remaining = h.get('x-frugal-budget-remaining', '')
whole, _, frac = remaining.partition('.')
check('SIGHUP: a raised cap serves a tenant that had reached its cap', status == 200, body[:200])
check('SIGHUP: the raised cap counts what the tenant spent before it',
      remaining and int(whole) * 10**12 + int((frac + '0' * 12)[:12]) == 10**12 - beta_total,
      '%s left, %d spent' % (remaining, beta_total))

# A budget whose period changes is refused with its reason, and nothing of that file is applied.
changed = dict(raised)
changed[ALPHA] = {'tenant': 'alpha', 'budget': {'usd': '2.00', 'period': 'month'}}
with open(cfg_path, 'w') as f:
    json.dump(dict(config, keys=dict(changed, **{'epsilon-key-0123456789abcdef': {'tenant': 'epsilon'}})), f)
gw.send_signal(signal.SIGHUP)
time.sleep(0.5)
status, _, body = chat(port, 'epsilon-key-0123456789abcdef', {'model': 'frugal/cheap', 'messages': user('x')})
check('SIGHUP: a changed period refuses the whole file', status == 401, body[:200])
status, _, body = chat(port, DELTA, {'model': 'frugal/cheap', 'messages': user('Say hello')})
check('SIGHUP: the configuration before stays', status == 200, body[:200])
# A tenant whose keys are all gone is dropped at once: its key is refused from then on.
without_gamma = {k: v for k, v in config['keys'].items() if k != GAMMA}
with open(cfg_path, 'w') as f:
    json.dump(dict(config, keys=without_gamma), f)
gw.send_signal(signal.SIGHUP)
time.sleep(0.5)
status, _, body = chat(port, GAMMA, {'model': 'frugal/cheap', 'messages': user('x')})
check('SIGHUP: a tenant removed, its key refused', status == 401, body[:200])
with open(cfg_path, 'w') as f:
    json.dump(config, f)
gw.send_signal(signal.SIGHUP)
time.sleep(0.5)
status, _, body = chat(port, GAMMA, {'model': 'frugal/cheap', 'messages': user('x')})
check('SIGHUP: the tenant back with the cap it had', status in (200, 429), body[:200])
# Beta's cap lowered back under what it spent: refused again.
status, _, body = chat(port, BETA, {'model': 'anthropic/claude-sonnet-4.5', 'max_tokens': 50,
                                    'messages': user('Say hello')})
check('SIGHUP: a cap lowered under the spend refuses the tenant', status == 402, body[:300])

sigterm_mid_stream(check, gw, port, ALPHA, config['ledger'])
err = gw.stderr.read()
check('SIGHUP: the refusal says why',
      'reload refused' in err and "budget 'tenant:alpha' would change its period from daily to monthly" in err,
      err[-500:])

# HTTPS with --tls-cert/--tls-key: a certificate made now, trusted by the client alone.
if shutil.which('openssl'):
    import http.client
    import ssl
    cert, pkey = os.path.join(tmp, 'cert.pem'), os.path.join(tmp, 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                    '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-keyout', pkey, '-out', cert], check=True, capture_output=True)
    tls_gw = subprocess.Popen([FRUGAL, 'serve', '--config', cfg_path, '--port', '0', '--tls-cert', cert,
                               '--tls-key', pkey], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = tls_gw.stdout.readline()
    m = re.match(r'listening on https://127\.0\.0\.1:(\d+)/api/v1', line)
    check('HTTPS: listening on an https URL', m is not None, line)
    if m:
        context = ssl.create_default_context(cafile=cert)
        replies = []
        for stream in (False, True):
            c = http.client.HTTPSConnection('127.0.0.1', int(m.group(1)), context=context, timeout=30)
            c.request('POST', '/api/v1/chat/completions', json.dumps(
                {'model': 'frugal/cheap', 'stream': stream, 'messages': user('Say hello')}),
                {'Authorization': 'Bearer ' + ALPHA})
            r = c.getresponse()
            replies.append((r.status, r.read().decode()))
            c.close()
        whole = json.loads(replies[0][1])['choices'][0]['message']['content'] if replies[0][0] == 200 else None
        check('HTTPS: a whole answer', replies[0][0] == 200 and whole, str(replies[0])[:300])
        check('HTTPS: a stream read to its end', replies[1][0] == 200 and
              streamed_text(sse_events(replies[1][1])) == whole and replies[1][1].endswith('data: [DONE]\n\n'),
              str(replies[1])[:300])
        tls_ids = stream_ids(sse_events(replies[1][1])) if replies[1][0] == 200 else set()
        check('HTTPS: another gateway process gives its streams other ids',
              len(tls_ids) == 1 and not tls_ids & first_ids and
              next(iter(tls_ids)).rsplit('-', 1)[0] != next(iter(first_ids)).rsplit('-', 1)[0],
              str(tls_ids) + ' vs ' + str(first_ids))
        # A client that sends bytes while its stream is open (the start of a pipelined request):
        # the gateway's watch reads them into the connection's buffer, over TLS as over TCP.
        # Under the sanitizers this caught a read into a buffer freed when the stream began.
        raw = context.wrap_socket(socket.create_connection(('127.0.0.1', int(m.group(1)))),
                                  server_hostname='127.0.0.1')
        slow_first = json.dumps({'model': 'google/gemma-4-31b-it', 'stream': True,
                                 'messages': user('[sim fault=slow-first-token ms=600] Say hello')})
        send_chat(raw, ALPHA, slow_first)
        time.sleep(0.2)
        raw.sendall(b'GET /healthz HTTP/1.1\r\nHost: x\r\n')
        piped = read_to_end(raw)
        raw.close()
        check('HTTPS: a stream whose client sends more bytes meanwhile ends whole',
              piped.startswith(b'HTTP/1.1 200') and piped.endswith(b'data: [DONE]\n\n'), piped[-300:])
        c = http.client.HTTPSConnection('127.0.0.1', int(m.group(1)), context=context, timeout=30)
        c.request('GET', '/healthz')
        check('HTTPS: the gateway serves on after it', c.getresponse().status == 200)
        c.close()
    tls_gw.terminate()
    tls_gw.wait(timeout=60)
    check('HTTPS: the gateway stops cleanly', tls_gw.returncode == 0, str(tls_gw.returncode))
else:
    print('skip HTTPS: no openssl command')

# A hostile catalog: the models listing offers only what the gateway would call. An upstream
# that serves nothing but /models is enough, since the gateway reads the catalog at start.
import http.server  # noqa: E402


def catalog_row(mid, prompt, completion):
    return {'id': mid, 'name': mid, 'created': 1, 'context_length': 1000,
            'pricing': {'prompt': prompt, 'completion': completion},
            'top_provider': {'max_completion_tokens': 100}}


hostile_rows = [catalog_row('good/model', '0.000001', '0.000002'),
                catalog_row('bad/nan', 'NaN', '0.000002'), catalog_row('bad/words', '0.000001', 'abc'),
                catalog_row('bad/negative', '-0.000001', '0.000002'),
                {'id': 'bad/no-pricing', 'name': 'x', 'created': 1, 'context_length': 1000},
                catalog_row('bad/twice', '0.000001', '0.000002'), catalog_row('bad/twice', '0.000003', '0.000002'),
                catalog_row('frugal/cheap', '0', '0')]


class CatalogOnly(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({'data': hostile_rows}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # An answer whose usage has no cost and a count that is no count: read as 0, it would
    # price the bill below what was served.
    def do_POST(self):
        asked = self.rfile.read(int(self.headers['Content-Length']))
        # A model name no model id could be: the gateway names the model asked instead, in its
        # header (200 KB would break the client's header parser) and in the body.
        model = 'good/model-' + 'M' * 200000 if b'huge-model' in asked else 'good/model'
        body = json.dumps({'id': 'gen-stub-1', 'model': model, 'object': 'chat.completion', 'created': 1,
                           'choices': [{'index': 0, 'finish_reason': 'stop',
                                        'message': {'role': 'assistant', 'content': 'fine'}}],
                           'usage': {'prompt_tokens': -1000000, 'completion_tokens': 5,
                                     'total_tokens': -999995}}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


stub = http.server.ThreadingHTTPServer(('127.0.0.1', 0), CatalogOnly)
threading.Thread(target=stub.serve_forever, daemon=True).start()
stub_cfg = {'upstream': {'base_url': 'http://127.0.0.1:%d/api/v1' % stub.server_address[1]},
            'policies': {'cheap': {'tiers': ['bad/nan', 'good/model']}},
            'keys': {ALPHA: {'tenant': 'alpha', 'budget': {'usd': '5.00', 'period': 'none'}}},
            'ledger': os.path.join(tmp, 'stub-ledger.db')}
stub_path = os.path.join(tmp, 'stub.json')
with open(stub_path, 'w') as f:
    json.dump(stub_cfg, f)
stub_gw, stub_port = start([FRUGAL, 'serve', '--config', stub_path, '--port', '0'], env)
_, _, listing = request(stub_port, 'GET', '/api/v1/models')
ids = [m['id'] for m in json.loads(listing)['data']]
check('models: only what the gateway would call, once, and its own frugal/ rows',
      ids == ['good/model', 'frugal/cheap'], str(ids))
policy_row = json.loads(listing)['data'][-1]
check('models: a policy is priced by the tiers the gateway can price',
      policy_row['pricing']['prompt'] == '0.000001' and policy_row['pricing']['completion'] == '0.000002',
      json.dumps(policy_row['pricing']))
status, headers, _ = chat(stub_port, ALPHA, {'model': 'good/model', 'max_tokens': 10, 'messages': user('hi')})
# Priced from its 5 completion tokens alone, the bill would be $0.00001; it is unknown, so the
# reservation (the prompt's bytes and 10 tokens at the catalog's prices) is booked instead.
check('hostile usage: a negative prompt count prices nothing; the reservation is booked',
      status == 200 and float(headers.get('x-frugal-cost', '0')) > 0.00003, '%d %s' % (status, headers))
status, headers, body = chat(stub_port, ALPHA, {'model': 'good/model', 'max_tokens': 10,
                                                 'messages': user('huge-model please')})
check('a model name past any id: the model asked is named, in the header and the body',
      status == 200 and headers.get('x-frugal-model') == 'good/model' and
      json.loads(body).get('model') == 'good/model', '%d %s' % (status, str(headers)[:300]))
stub_gw.terminate()
stub_gw.wait(timeout=60)
stub.shutdown()
row = sqlite3.connect(stub_cfg['ledger']).execute(
    "SELECT cost, estimated, anomaly FROM ledger WHERE model_asked = 'good/model'").fetchall()
check('hostile usage: the ledger says why and holds the reservation',
      len(row) == 2 and all(r[1] == 1 and r[0] > 30 * 10**6 and
                            r[2] == 'usage.prompt_tokens was negative (-1000000)' for r in row), str(row)[:300])

everything = err + metrics + open(config['ledger'], 'rb').read().decode('latin-1')
check('the upstream key appears nowhere', UPSTREAM_KEY not in everything)

sim.terminate()
sim.wait()
if check.failures:
    print('%d check(s) failed' % check.failures)
    sys.exit(1)
