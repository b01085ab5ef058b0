#!/usr/bin/env bash
# make bench-peers: frugal beside the SDKs users would pick instead, on the same server and the
# same bytes. nginx (pinned to CPU 0) serves canned OpenRouter responses on loopback; each
# client in turn runs pinned to CPU 1, alternating, PEERS_REPS times; the medians, ratios and
# goals go to stdout and BUILD/bench/peers.json (with peers.md and peers.svg beside it).
# Every client is warmed up before it is measured (the SDKs and frugal-load on a quarter and a
# fixed number of unmeasured requests), every one keeps its connections alive, all run 64
# requests in flight, and streamed chunks are counted the same way on both sides (content
# deltas). A ratio is taken within one repetition, then the median of those is reported.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-build}" && pwd)
reps=${PEERS_REPS:-3}
work=$build/peers
npm_dir=$build/npm
load=$build/bin/frugal-load
mkdir -p "$work/www" "$work/tmp" "$build/bench"

for tool in nginx wrk node npm python3 taskset curl; do
    command -v "$tool" >/dev/null || { echo "bench-peers: $tool is missing (make bench-peers installs it)" >&2; exit 1; }
done
packages="openai@6.49.0 @openrouter/sdk@1.3.19 eventsource-parser@3.1.1"
if [ ! -f "$npm_dir/node_modules/openai/package.json" ] ||
    [ ! -f "$npm_dir/node_modules/@openrouter/sdk/package.json" ] ||
    [ ! -f "$npm_dir/node_modules/eventsource-parser/package.json" ]; then
    mkdir -p "$npm_dir"
    [ -f "$npm_dir/package.json" ] || echo '{"private": true}' >"$npm_dir/package.json"
    # shellcheck disable=SC2086
    (cd "$npm_dir" && npm install --no-audit --no-fund --silent $packages)
fi
modules=$npm_dir/node_modules

python3 "$here/fixtures.py" "$work/www"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed "s|@DIR@|$work|g; s|@PORT@|$port|g" "$here/nginx.conf.in" >"$work/nginx.conf"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
taskset -c 0 nginx -c "$work/nginx.conf" -e "$work/error.log"
trap 'kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -f "$work/nginx.pid" ] && break; sleep 0.1; done
whole=http://127.0.0.1:$port/whole/api/v1
stream=http://127.0.0.1:$port/stream/api/v1
runs=$work/runs.jsonl
: >"$runs"

# The upstream's CPU time (its worker's user + system, in clock ticks) and the requests it has
# served: their differences over a client's run give nginx's CPU per request, recorded beside
# the client's figures, so that a run whose upstream was the limit shows as one.
upstream() {
    local worker stat served
    worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
    read -r -a stat <"/proc/$worker/stat"
    served=$(curl -s "http://127.0.0.1:$port/status" | sed -n 3p | awk '{print $3}')
    echo "$((stat[13] + stat[14])) $served"
}

run() { # item command...
    local item=$1
    shift
    local line before after
    before=$(upstream)
    if line=$(taskset -c 1 "$@" 2>"$work/last.err" | tail -1) && [ -n "$line" ]; then
        after=$(upstream)
        line=$(python3 -c 'import sys
t0, n0, t1, n1 = map(int, sys.argv[1:5])
if n1 - n0 < 100:  # a run that did not go through nginx (the parsers)
    print(sys.argv[6])
else:
    print(sys.argv[6][:-1] + ",\"upstream_us_per_req\":%.3f}" % ((t1 - t0) * 1e6 / int(sys.argv[5]) / (n1 - n0)))' $before $after "$(getconf CLK_TCK)" "$line")
        echo "{\"item\":\"$item\",\"rep\":${rep:-0},${line#\{}" >>"$runs"
        printf '  %-18s %s\n' "$item" "$line"
    else
        echo "  $item failed: $(head -c 300 "$work/last.err")" >&2
    fi
}

for rep in $(seq "$( [ "${PEERS_ONLY_GATEWAY:-0}" = 1 ] && echo 0 || echo "$reps")"); do
    echo "repetition $rep of $reps"
    run wrk_whole python3 "$here/measure.py" "$whole/chat/completions" 4 64 "$here/post.lua"
    run openai_whole node "$here/peers.mjs" "$modules" openai whole "$whole" 4000 64
    run frugal_whole "$load" --base-url "$whole" --requests 150000 --concurrency 64
    run openrouter_whole node "$here/peers.mjs" "$modules" openrouter whole "$whole" 3000 64
    run frugal_cascade "$load" --base-url "$whole" --requests 150000 --concurrency 64 --cascade
    run wrk_stream python3 "$here/measure.py" "$stream/chat/completions" 4 64 "$here/post.lua"
    run openai_stream node "$here/peers.mjs" "$modules" openai stream "$stream" 400 64
    run frugal_stream "$load" --base-url "$stream" --requests 12000 --concurrency 64 --stream
    run openrouter_stream node "$here/peers.mjs" "$modules" openrouter stream "$stream" 300 64
    run openai_hold node --expose-gc "$here/peers.mjs" "$modules" openai hold "$stream" 1000 0
    run openrouter_hold node --expose-gc "$here/peers.mjs" "$modules" openrouter hold "$stream" 1000 0
    run frugal_hold "$load" --base-url "$stream" --hold-streams 1000
    run esp_frame node "$here/peers.mjs" "$modules" parse "$work/www/big.sse" frame
    run frugal_frame "$load" --parse "$work/www/big.sse"
    run esp_decode node "$here/peers.mjs" "$modules" parse "$work/www/big.sse" decode
    run frugal_decode "$load" --parse "$work/www/big.sse" --decode
done
[ "${PEERS_ONLY_GATEWAY:-0}" = 1 ] || run frugal_hold_10k "$load" --base-url "$stream" --hold-streams 10000
if [ "${PEERS_GATEWAY:-1}" = 1 ]; then
    # shellcheck source=benchmarks/peers/gateway.sh
    . "$here/gateway.sh"
fi
echo
python3 "$here/table.py" "$runs" "$build/bench/peers.json"
