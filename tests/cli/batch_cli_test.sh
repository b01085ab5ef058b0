#!/usr/bin/env bash
# `frugal batch` as a user runs it, against `frugal sim`: easy prompts stay free, hard ones
# escalate, bad lines are reported by number and skipped, the JSON totals equal the
# simulator's bill, a bad policy names its field, and --ledger keeps the cap across runs.
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

cat >"$tmp/policy.json" <<'P'
{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5",
 "escalate_on":["length","empty","error","refusal"],"max_tokens":512}
P
cat >"$tmp/prompts.jsonl" <<'P'
{"id":"easy1","prompt":"What is the capital of France?"}
{"id":"hard1","prompt":"Prove the theorem step by step, rigorously."}
this line is not JSON
{"id":"hard2","messages":[{"role":"user","content":"Derive the optimal complexity bound rigorously."}]}
{"id":"nothing"}
{"id":"easy2","prompt":"Name a colour."}
P

"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --no-budget --json --concurrency 4 \
    "$tmp/prompts.jsonl" >"$tmp/out.json" 2>"$tmp/err"
check "exit status 1: lines were skipped" 1 "$?"
contains "the bad JSON line is named" "$(cat "$tmp/err")" "line 3: not JSON"
contains "the line without a prompt is named" "$(cat "$tmp/err")" 'line 5: needs either "prompt" or "messages"'
read -r easy1 hard1 hard2 easy2 requests total <<<"$(python3 - "$tmp/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = {x["id"]: x for x in d["requests"]}
def tier(x):
    return ("esc" if x["escalated"] else "free") + ":" + x["final_model"]
print(tier(r["easy1"]), tier(r["hard1"]), tier(r["hard2"]), tier(r["easy2"]),
      len(d["requests"]), d["totals"]["cost"])
PY
)"
check "four prompts ran" 4 "$requests"
check "an easy prompt stays free" "free:google/gemma-4-31b-it:free" "$easy1"
check "another easy prompt stays free" "free:google/gemma-4-31b-it:free" "$easy2"
check "a hard prompt escalates" "esc:anthropic/claude-fable-5" "$hard1"
check "a hard chat escalates" "esc:anthropic/claude-fable-5" "$hard2"
billed=$(sim_total "$url")
check "the JSON total is the simulator's bill" "$billed" "$(python3 -c "import decimal,sys; print(decimal.Decimal('$total').normalize())")"

table=$("$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --no-budget "$tmp/prompts.jsonl" 2>/dev/null)
contains "the table names the flagship" "$table" "anthropic/claude-fable-5"
contains "the table has the totals" "$table" "4 prompts: 2 escalated"

echo '{"cheap":"a","flagship":"b","escalate_on":["lenght"]}' >"$tmp/bad.json"
"$frugal" batch --base-url "$url" --policy "$tmp/bad.json" --no-budget "$tmp/prompts.jsonl" >/dev/null 2>"$tmp/err"
check "a bad policy exits 2" 2 "$?"
contains "the bad policy's field is named" "$(cat "$tmp/err")" '"escalate_on": unknown condition "lenght"'

# A cap kept in a ledger holds across runs: the second run finds it spent.
hard=$(for i in 1 2 3 4 5 6; do echo "{\"id\":\"h$i\",\"prompt\":\"Prove the theorem rigorously, part $i.\"}"; done)
echo "$hard" >"$tmp/hard.jsonl"
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.004 --ledger "$tmp/ledger.db" \
    --json "$tmp/hard.jsonl" >"$tmp/run1.json" 2>/dev/null
check "the first run exits 0" 0 "$?"
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.004 --ledger "$tmp/ledger.db" \
    --json "$tmp/hard.jsonl" >"$tmp/run2.json" 2>/dev/null
read -r spent1 spent2 denied2 <<<"$(python3 - "$tmp/run1.json" "$tmp/run2.json" <<'PY'
import json, sys, decimal
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
d = lambda x: decimal.Decimal(x["totals"]["cost"])
print(d(a), d(b), sum(1 for r in b["requests"] if r["budget_denied"]))
PY
)"
check "both runs together stay within the cap" "yes" "$(python3 -c "import decimal as d; print('yes' if d.Decimal('$spent1') + d.Decimal('$spent2') <= d.Decimal('0.004') else 'no')")"
check "the second run is denied escalations" "yes" "$([ "$denied2" -gt 0 ] && echo yes || echo no)"
finish
