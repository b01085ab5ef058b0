#!/usr/bin/env python3
"""The gateway comparison's measurements, one JSON line each (benchmarks/peers/run.sh):

  gateway.py cpu PID URL SECONDS CONNECTIONS LUA
      wrk drives URL (closed loop, its own CPU); the gateway process PID's CPU (user + system,
      from /proc) per request it passed through.
  gateway.py hold PID URL N BODY HEADER...
      N streamed requests are opened through URL and each read to its first event, then held;
      the growth of PID's resident set per open stream.

A gateway's CPU is all it adds: the upstream and the client are the same bytes on either side."""
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import wrk_report  # noqa: E402

TICK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1))


def cpu(pid, url, seconds, connections, script):
    before = cpu_seconds(pid)
    out = subprocess.run(['taskset', '-c', '0', 'wrk', '-t1', f'-c{connections}', f'-d{seconds}s',
                          '--latency', '-s', script, url], capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - before
    total, rps, errors = wrk_report(out)
    print(json.dumps({'requests': total, 'req_per_s': rps, 'cpu_us_per_req': used * 1e6 / max(total, 1),
                      'errors': errors}))


def hold(pid, url, n, body, headers):
    m = re.match(r'http://([^:/]+):(\d+)(/.*)', url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    request = (f'POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n'
               f'Content-Length: {len(body)}\r\n' + ''.join(h + '\r\n' for h in headers) + '\r\n' + body).encode()
    time.sleep(0.5)
    before = rss_kib(pid)
    socks, errors = [], 0
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(request)
        socks.append(s)
    opened = 0
    for s in socks:
        s.settimeout(10)
        got = b''
        try:
            while b'data:' not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        if b' 200 ' in got.split(b'\r\n', 1)[0] and b'data:' in got:
            opened += 1
        else:
            errors += 1
    time.sleep(0.5)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    print(json.dumps({'open_streams': opened, 'errors': errors,
                      'kib_per_stream': (after - before) / max(opened, 1)}))


what = sys.argv[1]
if what == 'cpu':
    cpu(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
else:
    hold(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:])
