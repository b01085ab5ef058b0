#!/usr/bin/env bash
# `frugal chat` as a user runs it, against `frugal sim`: content, --stream, --json with the
# billed cost, one clear stderr line on failure (never the key), and the --timeout deadline.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null; rm -rf "$tmp"' EXIT
"$frugal" sim --port 0 >"$tmp/sim" 2>&1 &
sim=$!
url=$(sim_url "$tmp/sim")
use_key sk-or-v1-cli-test-secret-0123456789

out=$("$frugal" chat --base-url "$url" --model anthropic/claude-fable-5 "Hi [sim tokens=4]")
check "prints the content" 0 "$?"
check "four words" 4 "$(echo "$out" | wc -w | tr -d ' ')"
check "ending in a full stop" "." "${out: -1}"

streamed=$("$frugal" chat --base-url "$url" --model anthropic/claude-fable-5 --stream "Hi [sim tokens=4]")
check "--stream prints the same content" "$out" "$streamed"

json=$(OPENROUTER_BASE_URL="$url" "$frugal" chat --model meta-llama/llama-4-scout --json --max-tokens 50 "Hi [sim tokens=6]")
check "--json exits 0 (base URL from OPENROUTER_BASE_URL)" 0 "$?"
contains "--json has the generation id" "$json" '"id":"gen-'
contains "--json has the model" "$json" '"model":"meta-llama/llama-4-scout"'
contains "--json has the finish reason" "$json" '"finish_reason":"stop"'
contains "--json has the token counts" "$json" '"usage":{"prompt_tokens":'
cost=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["cost"])')
bill=$(sim_bill "$url")
billed=$(echo "$bill" | sed -n 's/.*"meta-llama\/llama-4-scout":{[^}]*"cost_usd":"\([0-9.]*\)".*/\1/p')
check "--json cost is what the simulator billed" "$billed" "$cost"

"$frugal" chat --base-url "$url" --model anthropic/claude-fable-5 "Hi [sim fault=402]" >"$tmp/out" 2>"$tmp/err"
check "a 402 exits 1" 1 "$?"
check "with one line on stderr" 1 "$(wc -l <"$tmp/err" | tr -d ' ')"
contains "naming the status and the server's message" "$(cat "$tmp/err")" "Insufficient credits. Add more using https://openrouter.ai/credits (HTTP 402)"
check "and nothing on stdout" "" "$(cat "$tmp/out")"
if grep -q "$OPENROUTER_API_KEY" "$tmp/err"; then check "the key is not printed" no yes; else check "the key is not printed" no no; fi

start=$(date +%s%N)
"$frugal" chat --base-url "$url" --model anthropic/claude-fable-5 --timeout 1 "Hi [sim fault=hang]" 2>"$tmp/err"
status=$?
elapsed=$((($(date +%s%N) - start) / 1000000))
check "a hung server exits 1" 1 "$status"
contains "saying it timed out" "$(cat "$tmp/err")" "timed out"
if [ "$elapsed" -lt 2500 ]; then check "within the --timeout" yes yes; else check "within the --timeout (${elapsed} ms)" yes no; fi

"$frugal" chat --base-url "$url" --model anthropic/claude-fable-5 --stream "Hi [sim tokens=9 fault=cut after=4]" >"$tmp/out" 2>"$tmp/err"
check "a cut stream exits 1" 1 "$?"
contains "saying so" "$(cat "$tmp/err")" "the stream ended before [DONE]"

OPENROUTER_API_KEY= "$frugal" chat --base-url "$url" --model m "Hi" 2>"$tmp/err"
check "no key exits 1" 1 "$?"
contains "saying so" "$(cat "$tmp/err")" "OPENROUTER_API_KEY"

"$frugal" chat --base-url "http://example.com/api/v1" --model m "Hi" 2>"$tmp/err"
check "plain http to a remote host is refused" 1 "$?"
contains "saying why" "$(cat "$tmp/err")" "unencrypted"

finish
