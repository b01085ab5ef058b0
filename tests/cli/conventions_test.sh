#!/usr/bin/env bash
# The command line as a new user meets it, against `frugal sim`: --version, an unknown flag
# named before anything is said to be missing, the prompt from stdin, -m and --system, a policy
# through `frugal chat` (whole, streamed with its withdrawal, --json), `frugal models` with its
# prices and the free rule, one clean line per failure, and plain decimals in JSON.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null; rm -rf "$tmp"' EXIT
"$frugal" sim --port 0 >"$tmp/sim" 2>&1 &
sim=$!
url=$(sim_url "$tmp/sim")
use_key sk-or-v1-conventions-0123456789abcdef0123456789abcdef
j() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# --version, and flags.
out=$("$frugal" --version)
check "--version exits 0" 0 "$?"
contains "--version names frugal and its version" "$out" "frugal 0."
"$frugal" chat --modle anthropic/claude-fable-5 "Hi" >/dev/null 2>"$tmp/err"
check "a misspelt flag is a usage error" 2 "$?"
contains "that names the flag" "$(cat "$tmp/err")" "--modle"
if grep -q "is required" "$tmp/err"; then said=yes; else said=no; fi
check "before saying anything is missing" no "$said"
"$frugal" batch --polcy p.json x.jsonl >/dev/null 2>"$tmp/err"
contains "batch names the misspelt flag too" "$(cat "$tmp/err")" "--polcy"
"$frugal" batch x.jsonl >/dev/null 2>"$tmp/err"
check "a missing --policy is a usage error" 2 "$?"
contains "naming it" "$(cat "$tmp/err")" "--policy is required"

# The prompt from stdin, -m, --system.
out=$(echo "Hi [sim tokens=3]" | "$frugal" chat --base-url "$url" -m anthropic/claude-fable-5)
check "the prompt is read from stdin" 0 "$?"
check "three words" 3 "$(echo "$out" | wc -w | tr -d ' ')"
out=$(echo "Hi [sim tokens=4]" | "$frugal" chat --base-url "$url" -m anthropic/claude-fable-5 --system "Be brief." -)
check "- reads stdin too, with --system" 4 "$(echo "$out" | wc -w | tr -d ' ')"
"$frugal" chat --base-url "$url" -m anthropic/claude-fable-5 </dev/null >/dev/null 2>"$tmp/err"
check "no prompt at all is a usage error" 2 "$?"

# A policy through chat.
cat >"$tmp/policy.json" <<'P'
{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5"}
P
"$frugal" chat --base-url "$url" --policy "$tmp/policy.json" "Hi" >/dev/null 2>"$tmp/err"
check "a policy's paid tier needs --budget" 2 "$?"
contains "saying so" "$(cat "$tmp/err")" "--budget"
"$frugal" chat --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --json \
    "Prove the theorem rigorously, step by step." >"$tmp/chat.json"
check "chat --policy --json exits 0" 0 "$?"
check "a hard prompt escalated, saying why" "True anthropic/claude-fable-5" \
    "$(j "$tmp/chat.json" 'str(d["escalated"]) + " " + d["final_model"]')"
check "with a reason" True "$(j "$tmp/chat.json" 'd["reason"] in ("length", "empty", "refusal")')"
check "with its content, cost (a string) and attempts" True \
    "$(j "$tmp/chat.json" 'bool(d["content"]) and isinstance(d["cost"], str) and len(d["attempts"]) == 2')"
"$frugal" chat --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --stream --max-tokens 20 \
    "Go on [sim poor=length]" >"$tmp/stream.out" 2>"$tmp/stream.err"
check "chat --policy --stream exits 0" 0 "$?"
contains "a streamed escalation says the cheap text is taken back" "$(cat "$tmp/stream.err")" "withdrawn"
"$frugal" chat --base-url "$url" --policy "$tmp/policy.json" --no-budget "Name a colour." >/dev/null
check "--no-budget runs it uncapped, on purpose" 0 "$?"
# A denied escalation is not an escalation.
"$frugal" chat --base-url "$url" --policy "$tmp/policy.json" --budget 0.0000001 --json \
    "Think it over [sim poor=empty]" >"$tmp/denied.json" 2>/dev/null
check "a denied escalation: escalated false, budget_denied true, the cheap model's answer" \
    "False True google/gemma-4-31b-it:free empty" \
    "$(j "$tmp/denied.json" 'str(d["escalated"]) + " " + str(d["budget_denied"]) + " " + str(d["final_model"]) + " " + str(d["wanted"])')"

# A streamed cascade that fails still reports its attempts.
"$frugal" chat --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --stream --json \
    "Hi [sim fault=500]" >"$tmp/sfail.json" 2>/dev/null
check "a failed streamed cascade exits 1" 1 "$?"
check "and its --json still has the attempts and the provider's words" True \
    "$(j "$tmp/sfail.json" 'len(d["attempts"]) >= 1 and d["error"] is not None and "500" in d["error"] or "Internal" in str(d["error"])')"

# frugal models.
"$frugal" models --base-url "$url" >"$tmp/models.txt"
check "models exits 0" 0 "$?"
contains "the table prices per million tokens" "$(grep '^anthropic/claude-fable-5 ' "$tmp/models.txt")" " 15 "
"$frugal" models --base-url "$url" --json >"$tmp/models.json"
check "the paid twin is not free, whatever its canonical slug" False \
    "$(j "$tmp/models.json" '[m["free"] for m in d["models"] if m["id"]=="google/gemma-4-31b-it"][0]')"
check "the :free row is free" True \
    "$(j "$tmp/models.json" '[m["free"] for m in d["models"] if m["id"]=="google/gemma-4-31b-it:free"][0]')"
check "prices are exact strings" "0.000003" \
    "$(j "$tmp/models.json" '[m["pricing"]["prompt"] for m in d["models"] if m["id"]=="anthropic/claude-fable-5"][0]')"
check "aliases name their target" "anthropic/claude-fable-5" \
    "$(j "$tmp/models.json" '[m["alias_target"] for m in d["models"] if m["id"].startswith("~")][0]')"
"$frugal" models --base-url "$url" --free --json >"$tmp/free.json"
check "--free lists only free models" True "$(j "$tmp/free.json" 'all(m["free"] for m in d["models"]) and len(d["models"]) == 3')"

# One clean line per failure.
OPENROUTER_API_KEY= "$frugal" chat --base-url "$url" -m anthropic/claude-fable-5 "Hi" 2>"$tmp/err"
check "no key: one line" 1 "$(wc -l <"$tmp/err" | tr -d ' ')"
check "without repeated phrases or SDK names" "frugal chat: chat failed: no API key: set OPENROUTER_API_KEY" "$(cat "$tmp/err")"
OPENROUTER_API_KEY= "$frugal" models --base-url "$url" 2>"$tmp/err"
if grep -q "client_params" "$tmp/err"; then sdk=yes; else sdk=no; fi
check "no SDK parameter names in the CLI's words" no "$sdk"

# JSON numbers in plain decimals (a rate is never 7E-1).
echo '{"id":"a","prompt":"Name a colour."}' >"$tmp/one.jsonl"
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --ledger "$tmp/l.db" "$tmp/one.jsonl" >/dev/null 2>&1
"$frugal" report --ledger "$tmp/l.db" --json >"$tmp/report.json"
if grep -qE '[0-9]E-?[0-9]' "$tmp/report.json"; then sci=yes; else sci=no; fi
check "report --json has no exponent notation" no "$sci"
finish
