#!/usr/bin/env python3
"""Medians of the runs, ratios frugal / each peer, and the goals (issue 17): one table on
stdout, the same in peers.json, a Markdown copy and an SVG chart beside it. A ratio is taken
within each repetition (the two sides saw the same machine a few seconds apart) and the median
of those ratios is reported: this VM's speed drifts by ±30% between repetitions."""
import json
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

runs_file, out_json = sys.argv[1], sys.argv[2]
runs = defaultdict(list)
for line in open(runs_file):
    r = json.loads(line)
    if "upstream_us_per_req" in r and r.get("req_per_s"):
        r["upstream_busy"] = r["req_per_s"] * r["upstream_us_per_req"] / 1e6
    runs[r.pop("item")].append(r)


def med(item, key):
    vals = [r[key] for r in runs.get(item, []) if key in r]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return a / b if a and b else None


rows = []  # (label, value, unit, note)


def add(label, value, unit, note=""):
    rows.append((label, value, unit, note))


items = {
    "wrk_whole": "wrk, whole", "openai_whole": "openai SDK, whole",
    "openrouter_whole": "@openrouter/sdk, whole", "frugal_whole": "frugal, whole",
    "frugal_cascade": "frugal cascade (cheap answer kept), whole",
    "wrk_stream": "wrk, stream", "openai_stream": "openai SDK, stream",
    "openrouter_stream": "@openrouter/sdk, stream", "frugal_stream": "frugal, stream",
}
table = []
for item, label in items.items():
    if item not in runs:
        continue
    table.append({"client": label, "item": item, "runs": len(runs[item]),
                  "req_per_s": med(item, "req_per_s"), "chunks_per_s": med(item, "chunks_per_s"),
                  "cpu_us_per_req": med(item, "cpu_us_per_req"),
                  "cpu_us_per_chunk": med(item, "cpu_us_per_chunk"),
                  "p50_ms": med(item, "p50_ms"), "p99_ms": med(item, "p99_ms"),
                  "upstream_us_per_req": med(item, "upstream_us_per_req"),
                  # nginx's share of its CPU while this client ran: near 1, the upstream was
                  # the limit and the client's req/s says more about nginx than about it
                  "upstream_busy": med(item, "upstream_busy"),
                  "errors": sum(r.get("errors", 0) for r in runs[item])})
memory = [{"client": c, "kib_per_stream": med(f"{c}_hold", "kib_per_stream"),
           "open_streams": med(f"{c}_hold", "open_streams")}
          for c in ("openai", "openrouter", "frugal") if f"{c}_hold" in runs]
many = {"open_streams": med("frugal_hold_10k", "open_streams"),
        "kib_per_stream": med("frugal_hold_10k", "kib_per_stream")} if "frugal_hold_10k" in runs else None
parse = [{"parser": p, "mib_per_s": med(p, "mib_per_s"), "cpu_us_per_event": med(p, "cpu_us_per_event")}
         for p in ("esp_frame", "esp_decode", "frugal_frame", "frugal_decode") if p in runs]
P = {p["parser"]: p for p in parse}
T = {t["item"]: t for t in table}
M = {m["client"]: m for m in memory}


def g(item, key):
    return T.get(item, {}).get(key)


goals = []


def goal(name, value, target, ok, unit=""):
    goals.append({"goal": name, "measured": value, "target": target,
                  "met": bool(ok) if value is not None else None, "unit": unit})


def rep_ratio(a_item, a_key, b_item, b_key, op=lambda a, b: a / b, reps=None):
    """The median over repetitions (those in `reps`, when given) of op(a, b), each pair from
    the same repetition."""
    by_rep = defaultdict(dict)
    for item, key in ((a_item, a_key), (b_item, b_key)):
        for r in runs.get(item, []):
            if key in r and (reps is None or r.get("rep", 0) in reps):
                by_rep[r.get("rep", 0)][(item, key)] = r[key]
    vals = [op(v[(a_item, a_key)], v[(b_item, b_key)]) for v in by_rep.values()
            if (a_item, a_key) in v and (b_item, b_key) in v and v[(b_item, b_key)]]
    return statistics.median(vals) if vals else None


def at_least(v, target):
    return v is not None and v >= target


def at_most(v, target):
    return v is not None and v <= target


r = rep_ratio("frugal_whole", "cpu_us_per_req", "wrk_whole", "cpu_us_per_req")
goal("whole: frugal CPU per request / wrk's", r, 1.25, at_most(r, 1.25), "x")
r = rep_ratio("frugal_whole", "req_per_s", "openai_whole", "req_per_s")
goal("whole: frugal req/s / openai SDK req/s (warmed up, keep-alive)", r, 40, at_least(r, 40), "x")
r = rep_ratio("frugal_stream", "chunks_per_s", "openai_stream", "chunks_per_s")
goal("stream: frugal content chunks/s / openai SDK's", r, 40, at_least(r, 40), "x")
r = g("frugal_stream", "cpu_us_per_chunk")
goal("stream: frugal CPU per chunk (JSON decoded)", r, 0.5, at_most(r, 0.5), "µs")
r = rep_ratio("frugal_cascade", "cpu_us_per_req", "frugal_whole", "cpu_us_per_req", lambda a, b: a - b)
goal("cascade (cheap answer kept): CPU over a direct call", r, 2, at_most(r, 2), "µs")
r = M.get("frugal", {}).get("kib_per_stream")
goal("memory per open stream", r, 8, at_most(r, 8), "KiB")
goal("open streams on one thread", many and many["open_streams"], 10000,
     many and (many["open_streams"] or 0) >= 10000, "")
r = P.get("frugal_frame", {}).get("mib_per_s")
goal("SSE framing", r, 1024, at_least(r, 1024), "MiB/s")
r = ratio(P.get("frugal_decode", {}).get("mib_per_s"), P.get("esp_decode", {}).get("mib_per_s"))
goal("framing + decoding / eventsource-parser + JSON.parse", r, 5, at_least(r, 5), "x")

# The gateway (issue 18): what frugal serve and Portkey add to a direct call.
gateway = {}
for item in ("gateway_cpu", "portkey_cpu"):
    if item in runs:
        gateway[item] = {"cpu_us_per_req": med(item, "cpu_us_per_req"), "req_per_s": med(item, "req_per_s"),
                         "errors": sum(r.get("errors", 0) for r in runs[item])}
for item in ("direct_rate", "gateway_rate", "portkey_rate"):
    if item in runs:
        gateway[item] = {k: med(item, k) for k in ("p50_us", "p99_us", "p999_us", "queued")}
        gateway[item]["errors"] = sum(r.get("errors", 0) for r in runs[item])
if "machine_stalls" in runs:
    gateway["machine_stalls"] = {k: med("machine_stalls", k)
                                 for k in ("lost_ms_per_s", "longest_ms", "gaps_over_1ms", "seconds")}
for item in ("gateway_hold", "portkey_hold"):
    if item in runs:
        gateway[item] = {"kib_per_stream": med(item, "kib_per_stream"), "open_streams": med(item, "open_streams")}
kept = set()  # the repetitions whose direct call kept its schedule
if "gateway_cpu" in runs:
    r = rep_ratio("portkey_cpu", "cpu_us_per_req", "gateway_cpu", "cpu_us_per_req")
    goal("gateway: Portkey's CPU per request / frugal serve's", r, 20, at_least(r, 20), "x")
    # Only the repetitions whose direct call kept its schedule: a direct call that fell behind
    # (queued requests) has a p99 of its queue, and the difference would flatter the gateway.
    kept = {r.get("rep", 0) for r in runs.get("direct_rate", []) if not r.get("queued")}
    r = rep_ratio("gateway_rate", "p99_us", "direct_rate", "p99_us", lambda a, b: a - b, reps=kept)
    goal("gateway: added p99 at 5,000 req/s (repetitions whose direct call kept its schedule)",
         r, 200, at_most(r, 200), "µs")
    r = gateway.get("gateway_hold", {}).get("kib_per_stream")
    goal("gateway: memory per open stream", r, 16, at_most(r, 16), "KiB")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


machine = {"cpu": sh("lscpu | sed -n 's/^Model name: *//p'"), "cores": sh("nproc"),
           "kernel": platform.release(), "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
           "node": sh("node --version"), "nginx": sh("nginx -v 2>&1 | sed 's/.*nginx\\///'"),
           "wrk": sh("wrk -v 2>&1 | head -1 | awk '{print $2}'")}
result = {"machine": machine, "clients": table, "memory": memory, "many_streams": many,
          "parsing": parse, "gateway": gateway, "goals": goals}
json.dump(result, open(out_json, "w"), indent=1)


def f(v, d=1):
    if v is None:
        return "-"
    return f"{v:,.{d}f}"


lines = []
lines.append(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, node {machine['node']}, "
             f"nginx {machine['nginx']} (server pinned to CPU 0, each client to CPU 1)")
lines.append("")
lines.append("How each client was run: nginx serves the same canned bytes to all; every client runs")
lines.append("alone on CPU 1 with 64 requests in flight over keep-alive connections, after an")
lines.append("unmeasured warm-up (wrk: none needed; the Node SDKs: a quarter of the measured count,")
lines.append("at least 256 requests, so the JIT has compiled the hot paths and the pool is open;")
lines.append("frugal-load: 1,000 requests). CPU is the process's user + system time over the")
lines.append("measured phase (getrusage; wrk's from its child accounting). Streamed chunks are")
lines.append("content deltas on every side. Ratios are medians of per-repetition ratios. The")
lines.append("upstream columns are nginx's CPU per request during each client's run and the share of")
lines.append("its CPU that took: near 100%, nginx was the limit, not the client.")
lines.append("")
lines.append("| client | req/s | chunks/s | CPU µs/req | CPU µs/chunk | p50 ms | p99 ms | errors | upstream µs/req | upstream busy |")
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in table:
    lines.append(f"| {t['client']} | {f(t['req_per_s'])} | {f(t['chunks_per_s'], 0) if t['chunks_per_s'] else '-'} | "
                 f"{f(t['cpu_us_per_req'], 2)} | {f(t['cpu_us_per_chunk'], 3) if t['cpu_us_per_chunk'] else '-'} | "
                 f"{f(t['p50_ms'], 2)} | {f(t['p99_ms'], 2)} | {t['errors']} | "
                 f"{f(t['upstream_us_per_req'], 2)} | "
                 f"{f(t['upstream_busy'] * 100, 0) + '%' if t['upstream_busy'] is not None else '-'} |")
lines.append("")
lines.append("| memory per open stream | KiB |")
lines.append("|---|---:|")
for m in memory:
    lines.append(f"| {m['client']} ({int(m['open_streams'] or 0)} open) | {f(m['kib_per_stream'], 2)} |")
if many:
    lines.append(f"| frugal ({int(many['open_streams'] or 0)} open on one thread) | {f(many['kib_per_stream'], 2)} |")
lines.append("")
lines.append("| SSE parsing, 64 MiB | MiB/s | CPU µs/event |")
lines.append("|---|---:|---:|")
names = {"esp_frame": "eventsource-parser", "esp_decode": "eventsource-parser + JSON.parse",
         "frugal_frame": "frugal sse_parser", "frugal_decode": "frugal sse_parser + the client's chunk decoder"}
for p in parse:
    lines.append(f"| {names[p['parser']]} | {f(p['mib_per_s'])} | {f(p['cpu_us_per_event'], 3)} |")
lines.append("")
if gateway:
    lines.append("The gateway: CPU per request with each gateway alone on CPU 1 in front of nginx on CPU 0,")
    lines.append("driven by wrk (64 connections) on CPU 0. Latency at a fixed 5,000 requests a second")
    lines.append("(frugal-rate on CPU 0, open loop, from when each request was due) with the upstream a second")
    lines.append("nginx on CPU 1 beside the gateway, so that the direct call and the gateway cross CPUs as")
    lines.append("often: added latency = through the gateway - direct.")
    lines.append("")
    lines.append("| gateway | CPU µs/req (its own) | req/s (closed loop) | p50 µs at 5k/s | p99 µs at 5k/s | queued | KiB per open stream |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, cpu_item, rate_item, hold_item in (("direct call (no gateway)", None, "direct_rate", None),
                                                 ("frugal serve", "gateway_cpu", "gateway_rate", "gateway_hold"),
                                                 ("Portkey gateway 1.15.2", "portkey_cpu", "portkey_rate", "portkey_hold")):
        c, rt, h = gateway.get(cpu_item, {}), gateway.get(rate_item, {}), gateway.get(hold_item, {})
        if not (c or rt or h):
            continue
        # A gateway too slow for 5,000 requests a second is not driven at it (gateway.sh); one
        # whose streams all failed has no memory per stream to show.
        slow = cpu_item and not rt and (c.get("req_per_s") or 0) < 6000
        p50 = "cannot sustain 5k/s" if slow else f(rt.get('p50_us'), 0)
        held = f(h.get('kib_per_stream'), 2) if h.get("open_streams") else ("every stream failed" if h else "-")
        lines.append(f"| {name} | {f(c.get('cpu_us_per_req'), 1)} | {f(c.get('req_per_s'), 0)} | "
                     f"{p50} | {f(rt.get('p99_us'), 0)} | {f(rt.get('queued'), 0)} | {held} |")
    lines.append("")
    st = gateway.get("machine_stalls")
    if st:
        lines.append("The machine itself, both CPUs busy (frugal-stall-probe, a thread spinning on each, median of")
        lines.append(f"the repetitions): {f(st['lost_ms_per_s'], 1)} ms a second taken (summed over the CPUs), "
                     f"{f(st['gaps_over_1ms'], 0)} gaps over 1 ms")
        lines.append(f"in {f(st['seconds'], 0)} seconds, the longest {f(st['longest_ms'], 2)} ms. A request in flight "
                     "in such a gap waits it out,")
        lines.append("direct or through a gateway: the p99s above stand on this floor.")
        lines.append("")
    if runs.get("direct_rate") and not kept:
        lines.append("The direct call queued requests in every repetition: the added p99 is not measured.")
        lines.append("")
lines.append("| goal | measured | target | met |")
lines.append("|---|---:|---:|---|")
for gl in goals:
    lines.append(f"| {gl['goal']} | {f(gl['measured'], 2)} {gl['unit']} | {gl['target']} {gl['unit']} | "
                 f"{'yes' if gl['met'] else 'no' if gl['met'] is not None else '-'} |")
text = "\n".join(lines)
print(text)
open(out_json.replace(".json", ".md"), "w").write(text + "\n")

# A chart: frugal's advantage over each peer (log-free bars of the ratio, labelled).
bars = []
for name, a, b in (("whole req/s vs openai", g("frugal_whole", "req_per_s"), g("openai_whole", "req_per_s")),
                   ("whole req/s vs @openrouter/sdk", g("frugal_whole", "req_per_s"), g("openrouter_whole", "req_per_s")),
                   ("stream chunks/s vs openai", g("frugal_stream", "chunks_per_s"), g("openai_stream", "chunks_per_s")),
                   ("stream chunks/s vs @openrouter/sdk", g("frugal_stream", "chunks_per_s"), g("openrouter_stream", "chunks_per_s")),
                   ("parse+decode vs eventsource-parser", P.get("frugal_decode", {}).get("mib_per_s"), P.get("esp_decode", {}).get("mib_per_s"))):
    r = ratio(a, b)
    if r:
        bars.append((name, r))
top = max([r for _, r in bars] + [1])
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{40 + 34 * len(bars)}" '
       'font-family="sans-serif" font-size="13">',
       '<text x="10" y="22" font-weight="bold">frugal / peer, same server and bytes (higher is better)</text>']
for i, (name, r) in enumerate(bars):
    y = 36 + 34 * i
    w = 420 * r / top
    svg.append(f'<text x="250" y="{y + 17}" text-anchor="end">{name}</text>')
    svg.append(f'<rect x="260" y="{y + 4}" width="{w:.1f}" height="20" fill="#2f6fdf"/>')
    svg.append(f'<text x="{266 + w:.1f}" y="{y + 18}">{r:.1f}×</text>')
svg.append("</svg>")
open(out_json.replace(".json", ".svg"), "w").write("\n".join(svg) + "\n")
