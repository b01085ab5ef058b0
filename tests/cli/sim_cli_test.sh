#!/usr/bin/env bash
# `frugal sim` as a user runs it: the first line, serving, stopping on SIGTERM, bad input.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

"$frugal" sim --port 0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/out" ] && break; sleep 0.05; done
line=$(head -1 "$tmp/out")
port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)/api/v1$|\1|p' "$tmp/out")
check "first line names the base URL" "listening on http://127.0.0.1:$port/api/v1" "$line"

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /api/v1/models HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n' >&3
reply=$(cat <&3)
exec 3<&-
check "it serves the catalog" "HTTP/1.1 200 OK" "$(printf '%s' "$reply" | head -1 | tr -d '\r')"

kill -TERM "$pid"
for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
wait "$pid"
check "SIGTERM stops it with status 0" 0 "$?"

"$frugal" sim --port "$port" >/dev/null 2>"$tmp/err2" &
pid2=$!
sleep 0.3
"$frugal" sim --port "$port" >/dev/null 2>"$tmp/err3"
check "a busy port exits 1" 1 "$?"
check "and says so" "frugal sim: cannot listen on 127.0.0.1:$port: Address already in use" "$(cat "$tmp/err3")"
kill -INT "$pid2"; wait "$pid2"
check "SIGINT stops it with status 0" 0 "$?"

printf '{"seed": 1, "models": [{"id": "x/y", "prompt_price": "cheap"}]}' >"$tmp/bad.json"
"$frugal" sim --config "$tmp/bad.json" >/dev/null 2>"$tmp/err4"
check "a bad config exits 1" 1 "$?"
check "naming the field" \
    "frugal sim: $tmp/bad.json: config.models[0].prompt_price: \"cheap\" is not a plain decimal with at most 18 fractional digits" \
    "$(cat "$tmp/err4")"

# Every configuration shown in docs/simulator.md is accepted.
docs="$(dirname "$0")/../../docs/simulator.md"
awk -v dir="$tmp" '/^```json/{f=1;n++;next} /^```/{f=0} f{print > (dir "/doc" n ".json")}' "$docs"
for conf in "$tmp"/doc*.json; do
    first=$(timeout 2 "$frugal" sim --config "$conf" 2>&1 | head -1)
    check "docs example $(basename "$conf") is accepted" "listening" "${first%% *}"
done

finish
