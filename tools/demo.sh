#!/usr/bin/env bash
# The demo until `frugal demo` lands: the simulator with realistic latencies, frugal's client
# streaming from it token by token, a hard prompt that defeats the free model, the flagship
# answering it, and the simulator's bill.
set -euo pipefail
frugal=${1:-build/bin/frugal}
log=$(mktemp)
"$frugal" sim --demo-latency --port 0 >"$log" &
sim=$!
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$log")
port=$(echo "$url" | sed 's|.*:\([0-9]*\)/api/v1|\1|')
export OPENROUTER_API_KEY=sk-or-v1-demo OPENROUTER_BASE_URL="$url"
echo "simulator: $url"

hard='Prove, step by step, that the budget guard never overspends.'
echo
echo "== a free model streams an easy answer, token by token =="
"$frugal" chat --model google/gemma-4-31b-it:free --stream --max-tokens 60 "What is cheap-first routing?"
echo
echo "== the same free model on a hard prompt: a poor answer (cut at max_tokens, empty or a refusal) =="
"$frugal" chat --model google/gemma-4-31b-it:free --json --max-tokens 60 "$hard"
echo
echo "== the paid flagship answers it (cost is the exact decimal OpenRouter would bill) =="
"$frugal" chat --model anthropic/claude-fable-5 --json --max-tokens 60 "$hard"
echo
echo "== a failure is one clear line =="
"$frugal" chat --model anthropic/claude-fable-5 "Hi [sim fault=402]" || true
echo
echo "== the simulator's own bill: free calls at \$0, the flagship at its per-token price =="
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /__sim/bill HTTP/1.0\r\n\r\n' >&3
sed '1,/^\r$/d' <&3
exec 3<&-
echo
