#!/usr/bin/env bash
# `frugal demo` as `make demo` runs it: the streamed escalation, a batch in which the guard
# denies an escalation, the report and reconciliation, the dashboard, and frugal's total equal
# to the simulator's bill.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset OPENROUTER_API_KEY OPENROUTER_BASE_URL HTTPS_PROXY https_proxy

"$frugal" demo --out "$tmp/demo" >"$tmp/out" 2>"$tmp/err"
check "the demo exits 0" 0 "$?"
out=$(cat "$tmp/out")
contains "an answer escalates mid-stream" "$out" "escalating to anthropic/claude-fable-5"
contains "easy prompts stay on the free model" "$out" "answered by google/gemma-4-31b-it:free"
contains "the guard denies an escalation" "$out" "escalation DENIED by the budget"
contains "the report shows the free model at \$0" "$(grep '^google/gemma-4-31b-it:free' "$tmp/out")" " 0 free"
contains "the report compares with the flagship alone" "$out" "on anthropic/claude-fable-5 alone:"
contains "the reconciliation finds the books equal to the provider's records" "$out" "frugal's books match the provider's bill"
line=$(grep "the simulator's bill" "$tmp/out")
read -r ours theirs <<<"$(echo "$line" | sed -n "s/.*total \\\$\([0-9.]*\), the simulator's bill \\\$\([0-9.]*\): equal.*/\1 \2/p")"
check "the printed total equals the simulator's bill" "${theirs:-none}" "${ours:-missing}"
denied=$(grep -o 'escalations denied by the budget: [0-9]*' "$tmp/out" | grep -o '[0-9]*$')
check "the report counts the denials the batch printed" "$(grep -c 'DENIED' "$tmp/out")" "${denied:-none}"
[ -s "$tmp/demo/dashboard.html" ] && check "the dashboard is written" yes yes || check "the dashboard is written" yes no
contains "the demo says where the dashboard is" "$out" "dashboard: $tmp/demo/dashboard.html"
contains "the demo says how long it took" "$out" "done in"

"$frugal" demo --live --out "$tmp/live" >/dev/null 2>"$tmp/err"
check "--live without a key is a usage error" 2 "$?"
contains "--live without a key says why" "$(cat "$tmp/err")" "OPENROUTER_API_KEY"
finish
