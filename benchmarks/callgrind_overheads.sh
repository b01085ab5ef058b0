#!/bin/bash
# Instructions a cascade (or a budgeted call) costs over a direct call, under callgrind, which
# the VM's noise does not move: frugal-load against `frugal sim` (free limits out of the way),
# 16 in flight, the 3,000-request run minus the 1,000-request one, so that start-up cancels out.
#
#   benchmarks/callgrind_overheads.sh cascade          # the free answer kept, against a direct call
#   benchmarks/callgrind_overheads.sh cascade_guarded  # the same with a budget guard in the router
#   benchmarks/callgrind_overheads.sh budgeted         # a paid call through the guard, against one without
#
# BIN (default build/bin) names the binaries. WARMUP sets the requests before each measured run:
# a budgeted call's memory store fills its 65,536-record ledger ring first by default, so
# that the figure is its steady state (a few minutes under callgrind).
set -euo pipefail
mode=${1:?usage: callgrind_overheads.sh cascade|budgeted}
bin=${BIN:-build/bin}
work=$(mktemp -d)
trap 'kill "$sim" 2>/dev/null || true; rm -rf "$work"' EXIT
case $mode in
cascade) model=google/gemma-4-31b-it:free flag=--cascade warmup=${WARMUP:-200} ;;
cascade_guarded) model=google/gemma-4-31b-it:free flag="--cascade --budgeted --flagship anthropic/claude-fable-5" warmup=${WARMUP:-66000} ;;
budgeted) model=openai/gpt-5-mini flag=--budgeted warmup=${WARMUP:-66000} ;;
*) echo "callgrind_overheads.sh: unknown mode $mode" >&2; exit 2 ;;
esac
echo '{"free_requests_per_minute": 100000000, "free_requests_per_day": 100000000}' >"$work/sim.json"
"$bin/frugal" sim --config "$work/sim.json" --seed 1 >"$work/sim.out" 2>&1 &
sim=$!
for _ in $(seq 100); do grep -q listening "$work/sim.out" && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$work/sim.out" | head -1)
[ -n "$url" ] || { echo "callgrind_overheads.sh: the simulator did not start" >&2; exit 1; }

# Instructions of one frugal-load run of $1 requests, with the flags that follow.
run() {
    local n=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin/frugal-load" \
        --base-url "$url" --model "$model" --requests "$n" --warmup "$warmup" --concurrency 16 \
        "$@" >/dev/null 2>"$work/vg.out"
    grep -o 'Collected : [0-9]*' "$work/vg.out" | grep -o '[0-9]*'
}
per_request() { echo $((($(run 3000 "$@") - $(run 1000 "$@")) / 2000)); }
base=$(per_request)
# shellcheck disable=SC2086 # $flag holds several words
with=$(per_request $flag)
echo "{\"mode\":\"$mode\",\"direct_instructions\":$base,\"${mode}_instructions\":$with,\"overhead\":$((with - base))}"
