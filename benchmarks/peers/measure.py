#!/usr/bin/env python3
"""Runs wrk and turns its report into the comparison's JSON line (requests per second, latency
percentiles, and wrk's own CPU per request from the kernel's child accounting). `wrk_report`
reads a report for gateway.py too."""
import json
import re
import resource
import subprocess
import sys


def ms(text):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def wrk_report(out):
    """The requests, requests a second and errors (non-2xx answers and socket errors) of a
    wrk report."""
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return total, rps, errors


if __name__ == "__main__":
    url, seconds, connections, script = sys.argv[1:5]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    total, rps, errors = wrk_report(out)
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    print(json.dumps({"requests": total, "seconds": float(seconds), "req_per_s": rps,
                      "cpu_us_per_req": cpu * 1e6 / max(total, 1), "p50_ms": p50, "p99_ms": p99,
                      "errors": errors, "peak_rss_kib": after.ru_maxrss}))
