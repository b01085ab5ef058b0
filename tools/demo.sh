#!/usr/bin/env bash
# The demo until frugal's own client lands: the simulator with realistic latencies, a live
# stream read through frugal's SSE parser as it arrives, and the simulator's bill.
set -euo pipefail
frugal=${1:-build/bin/frugal}
log=$(mktemp)
"$frugal" sim --demo-latency --port 0 >"$log" &
sim=$!
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$log")
port=$(echo "$url" | sed 's|.*:\([0-9]*\)/api/v1|\1|')
echo "simulator: $url"

# One request over bash's /dev/tcp as HTTP/1.0 (the body ends when the connection closes).
request() { # method path [body]
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '%s %s HTTP/1.0\r\nAuthorization: Bearer sk-or-v1-demo\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
        "$1" "$2" "${#3}" "$3" >&3
    sed -u '1,/^\r$/d' <&3 # drop the status line and headers
    exec 3<&-
}
chat() { # model prompt
    printf '{"model":"%s","stream":true,"max_tokens":60,"messages":[{"role":"user","content":"%s"}]}' "$1" "$2"
}

tokens() { # the content of each event, printed as it arrives
    sed -u -n 's/.*\\"content\\":\\"\([^\\"]*\)\\".*/\1/p' | while IFS= read -r t; do printf '%s' "$t"; done
    echo
}

echo
echo "== a free model streams an easy answer, token by token, through frugal sse =="
request POST /api/v1/chat/completions "$(chat google/gemma-4-31b-it:free 'What is cheap-first routing?')" |
    "$frugal" sse | tokens
echo
echo "== the same free model on a hard prompt gives a poor answer (cut at max_tokens, empty or a refusal) =="
request POST /api/v1/chat/completions \
    "$(chat google/gemma-4-31b-it:free 'Prove, step by step, that the budget guard never overspends.')" |
    "$frugal" sse | tokens
echo
echo "== the paid flagship answers it =="
request POST /api/v1/chat/completions \
    "$(chat anthropic/claude-fable-5 'Prove, step by step, that the budget guard never overspends.')" |
    "$frugal" sse | tokens
echo
echo "== the simulator's own bill (free calls at \$0, the flagship at its per-token price) =="
request GET /__sim/bill ""
echo
