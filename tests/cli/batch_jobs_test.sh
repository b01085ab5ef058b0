#!/usr/bin/env bash
# `frugal batch` doing the product's main job, as a new user runs it against `frugal sim`: the
# answers come back (--json, --jsonl as each completes, --output), failures say why, unknown
# models and uncapped paid tiers are usage errors, the free quota is waited for (never paid
# around, unless the policy opts in), --resume sends nothing twice, SIGINT keeps what completed,
# and the progress bar needs only stderr to be a terminal.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
# start_sim runs in $(...), a subshell: each simulator's pid goes to a file the trap reads.
trap 'kill $(cat "$tmp"/*.pid 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
start_sim() { # name config-json [more args]
    local name=$1
    echo "$2" >"$tmp/$name.json"
    shift 2
    "$frugal" sim --port 0 --config "$tmp/$name.json" "$@" >"$tmp/$name.log" 2>&1 &
    echo $! >"$tmp/$name.pid"
    sim_url "$tmp/$name.log"
}
use_key sk-or-v1-batch-jobs-0123456789abcdef0123456789abcdef
url=$(start_sim main '{"free_requests_per_minute": 100000}')
j() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

cat >"$tmp/policy.json" <<'P'
{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5"}
P
{
    echo '{"id":"easy","prompt":"Name a colour."}'
    echo '{"id":"hard","prompt":"Prove the theorem rigorously, step by step."}'
    echo '{"id":"broken","prompt":"Hi [sim fault=500]","messages":null}'
} >"$tmp/three.jsonl"
printf '%s\n' '{"id":"easy","prompt":"Name a colour."}' \
    '{"id":"hard","prompt":"Prove the theorem rigorously, step by step."}' >"$tmp/two.jsonl"

# The answers come back.
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --json "$tmp/two.jsonl" >"$tmp/out.json"
check "--json exits 0" 0 "$?"
check "--json carries each answer's content" True "$(j "$tmp/out.json" 'all(r["content"] for r in d["requests"])')"
check "the easy one stays free" "google/gemma-4-31b-it:free False" "$(j "$tmp/out.json" '[(r["final_model"], r["escalated"]) for r in d["requests"] if r["id"]=="easy"][0][0] + " " + str([r["escalated"] for r in d["requests"] if r["id"]=="easy"][0])')"
check "money is a decimal string" True "$(j "$tmp/out.json" 'isinstance(d["totals"]["cost"], str) and all(isinstance(r["cost"], str) for r in d["requests"])')"

"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --jsonl \
    --output "$tmp/lines.jsonl" "$tmp/two.jsonl" >"$tmp/stdout" 2>"$tmp/stderr"
check "--jsonl --output exits 0" 0 "$?"
check "one JSON line per prompt, in the file" 2 "$(wc -l <"$tmp/lines.jsonl" | tr -d ' ')"
check "each line an answer" True "$(python3 -c "import json,sys; print(all(json.loads(l)['content'] for l in open(sys.argv[1])))" "$tmp/lines.jsonl")"
check "nothing on stdout with --output" "" "$(cat "$tmp/stdout")"
contains "the summary goes to stderr" "$(cat "$tmp/stderr")" '"requests":2'

# A failure says why, with the provider's own message.
printf '%s\n' '{"id":"boom","prompt":"Hi [sim fault=402]"}' >"$tmp/boom.jsonl"
echo '{"tiers":["anthropic/claude-fable-5"]}' >"$tmp/paid.json"
"$frugal" batch --base-url "$url" --policy "$tmp/paid.json" --budget 0.05 "$tmp/boom.jsonl" >"$tmp/table" 2>&1
check "a failed prompt exits 1" 1 "$?"
contains "the table names the failure and the provider's message" "$(cat "$tmp/table")" "boom: anthropic/claude-fable-5"
contains "with the server's words" "$(cat "$tmp/table")" "Insufficient credits"
"$frugal" batch --base-url "$url" --policy "$tmp/paid.json" --budget 0.05 --json "$tmp/boom.jsonl" >"$tmp/boom.json" 2>/dev/null
contains "--json carries the same reason" "$(j "$tmp/boom.json" 'd["requests"][0]["error"]')" "Insufficient credits"

# Usage errors before anything is sent.
before=$(sim_total "$url")
echo '{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fabel-5"}' >"$tmp/typo.json"
"$frugal" batch --base-url "$url" --policy "$tmp/typo.json" --budget 1 "$tmp/two.jsonl" >/dev/null 2>"$tmp/err"
check "an unknown model id is a usage error" 2 "$?"
contains "naming it" "$(cat "$tmp/err")" '"anthropic/claude-fabel-5" is not in the models catalog'
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" "$tmp/two.jsonl" >/dev/null 2>"$tmp/err"
check "paid tiers without --budget are a usage error" 2 "$?"
contains "naming --budget" "$(cat "$tmp/err")" "--budget"
check "and nothing was sent" "$before" "$(sim_total "$url")"

# --resume: a rerun sends nothing twice, and prints the stored answers.
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --ledger "$tmp/l.db" \
    --jsonl "$tmp/two.jsonl" >"$tmp/first.jsonl" 2>/dev/null
bill1=$(sim_total "$url")
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --ledger "$tmp/l.db" \
    --resume --jsonl "$tmp/two.jsonl" >"$tmp/second.jsonl" 2>/dev/null
check "--resume exits 0" 0 "$?"
check "--resume sends no request twice (the bill does not move)" "$bill1" "$(sim_total "$url")"
check "and prints the stored answers" "$(sort "$tmp/first.jsonl")" "$(sort "$tmp/second.jsonl")"
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --resume \
    "$tmp/two.jsonl" >/dev/null 2>"$tmp/err"
check "--resume without --ledger is a usage error" 2 "$?"
# An id answers for its own question only: a changed prompt under an old id is asked again.
printf '%s\n' '{"id":"easy","prompt":"Name a different colour."}' >"$tmp/changed.jsonl"
bill2=$(sim_total "$url")
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --ledger "$tmp/l.db" \
    --resume --json "$tmp/changed.jsonl" >"$tmp/changed.json" 2>/dev/null
check "a changed prompt under a stored id is not given the old answer" 0 "$(j "$tmp/changed.json" 'd["totals"]["resumed"]')"
check "it is asked again" 1 "$(j "$tmp/changed.json" 'd["totals"]["requests"]')"
printf '%s\n' '{"id":"x","prompt":"One."}' '{"id":"x","prompt":"Two."}' >"$tmp/dup.jsonl"
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 "$tmp/dup.jsonl" >/dev/null 2>"$tmp/err"
check "a repeated id is a bad line" 1 "$?"
contains "named with the line it repeats" "$(cat "$tmp/err")" 'id "x" repeats line 1'
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --json \
    --output /dev/full "$tmp/two.jsonl" >/dev/null 2>"$tmp/err"
check "an output that cannot be written fails" 1 "$?"
contains "saying so" "$(cat "$tmp/err")" "writing /dev/full failed"
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --ledger "$tmp/n.db" \
    --no-log-content "$tmp/two.jsonl" >/dev/null 2>&1
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --ledger "$tmp/n.db" \
    --no-log-content --resume --json "$tmp/two.jsonl" >"$tmp/nolog.json" 2>/dev/null
check "--no-log-content keeps no answers to resume from" 0 "$(j "$tmp/nolog.json" 'd["totals"]["resumed"]')"

# A server that limits nothing is not held to OpenRouter's 20 a minute: 60 easy prompts all
# go free, at once (the wait would otherwise leave most of them rate_limited or minutes late).
for i in $(seq 60); do echo "{\"id\":\"n$i\",\"prompt\":\"Name a colour, $i.\"}"; done >"$tmp/sixty.jsonl"
start=$(date +%s)
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.05 --concurrency 4 \
    --json "$tmp/sixty.jsonl" >"$tmp/sixty.json" 2>/dev/null
check "a server with no limit: 60 free prompts exit 0" 0 "$?"
check "all 60 served free" 60 "$(j "$tmp/sixty.json" 'sum(1 for r in d["requests"] if (r["final_model"] or "").endswith(":free"))')"
took=$(($(date +%s) - start))
[ "$took" -lt 20 ] && ok=yes || ok="no (${took} s)"
check "without waiting for a minute window" yes "$ok"

# The free quota, smaller on the server than the client's guess, is waited for: every easy
# prompt is served free, none paid. The window is 2 s here, so the wait is short.
qurl=$(start_sim quota '{"free_requests_per_minute": 2, "free_window_ms": 2000}')
for i in 1 2 3 4 5 6; do echo "{\"id\":\"e$i\",\"prompt\":\"Name a colour, $i.\"}"; done >"$tmp/six.jsonl"
"$frugal" batch --base-url "$qurl" --policy "$tmp/policy.json" --budget 0.05 --concurrency 6 \
    --json "$tmp/six.jsonl" >"$tmp/quota.json" 2>"$tmp/quota.err"
check "a smaller server quota: the batch exits 0" 0 "$?"
check "every easy prompt stays free (it waited)" 6 "$(j "$tmp/quota.json" 'sum(1 for r in d["requests"] if r["final_model"].endswith(":free") and not r["escalated"])')"
check "none went to the flagship" 0 "$(j "$tmp/quota.json" 'sum(1 for r in d["requests"] for a in r["attempts"] if not a["model"].endswith(":free"))')"
# The same batch with the opt-in escalates instead.
qurl2=$(start_sim quota2 '{"free_requests_per_minute": 2, "free_window_ms": 60000}')
cat >"$tmp/escalate.json" <<'P'
{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5",
 "free_tier":{"when_empty":"escalate"}}
P
"$frugal" batch --base-url "$qurl2" --policy "$tmp/escalate.json" --budget 0.05 --concurrency 1 \
    --json "$tmp/six.jsonl" >"$tmp/esc.json" 2>/dev/null
check "with when_empty escalate, the rest escalate" 4 "$(j "$tmp/esc.json" 'sum(1 for r in d["requests"] if r["escalated"] and r["reason"]=="rate_limited")')"

# SIGINT: nothing more is sent, what completed is written, exit 130.
surl=$(start_sim slow '{"free_requests_per_minute": 100000}' --demo-latency)
for i in $(seq 40); do echo "{\"id\":\"s$i\",\"prompt\":\"Name a colour, $i.\"}"; done >"$tmp/forty.jsonl"
"$frugal" batch --base-url "$surl" --policy "$tmp/policy.json" --budget 0.05 --concurrency 2 \
    --jsonl --ledger "$tmp/int.db" "$tmp/forty.jsonl" >"$tmp/int.jsonl" 2>"$tmp/int.err" &
bpid=$!
sleep 2.5
kill -INT "$bpid"
wait "$bpid"
check "SIGINT exits 130" 130 "$?"
done_lines=$(wc -l <"$tmp/int.jsonl" | tr -d ' ')
[ "$done_lines" -gt 0 ] && [ "$done_lines" -lt 40 ] && ok=yes || ok="no ($done_lines)"
check "what completed is written, not the rest" yes "$ok"
check "each written line is a whole answer" True "$(python3 -c "import json,sys; print(all(json.loads(l)['content'] for l in open(sys.argv[1])))" "$tmp/int.jsonl")"
contains "and stderr says so" "$(cat "$tmp/int.err")" "interrupted"
check "no reservation is left open" 0 "$("$frugal" report --ledger "$tmp/int.db" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["open_reservations"]["count"])')"

# The progress bar needs stderr to be a terminal, not stdout.
if command -v script >/dev/null; then
    script -qec "'$frugal' batch --base-url '$url' --policy '$tmp/policy.json' --budget 0.05 --json '$tmp/two.jsonl' >'$tmp/tty.json'" "$tmp/tty.log" >/dev/null 2>&1
    contains "the progress bar is drawn on a terminal's stderr" "$(cat "$tmp/tty.log")" "ETA"
    check "while stdout, a file, gets the JSON" 2 "$(j "$tmp/tty.json" 'len(d["requests"])')"
fi
finish
