#!/usr/bin/env bash
# `frugal report` on a ledger written by `frugal batch` against `frugal sim`: the four formats
# agree with each other and with the simulator's bill; --since filters; --reconcile finds a
# planted difference, corrects a record left estimated and settles an orphaned reservation
# that a lookup proves.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null; rm -rf "$tmp"' EXIT
"$frugal" sim --port 0 >"$tmp/sim" 2>&1 &
sim=$!
url=$(sim_url "$tmp/sim")
use_key sk-or-v1-report-test-secret-0123456789

norm() { python3 -c "import decimal,sys; print(decimal.Decimal(sys.argv[1]).normalize())" "$1"; }

cat >"$tmp/policy.json" <<'P'
{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5",
 "escalate_on":["length","empty","error","refusal"],"max_tokens":256}
P
{
    for i in 1 2 3 4 5 6; do echo "{\"id\":\"e$i\",\"prompt\":\"Name a colour, number $i.\"}"; done
    for i in 1 2 3 4 5 6 7 8; do echo "{\"id\":\"h$i\",\"prompt\":\"Prove the theorem rigorously, step by step, part $i.\"}"; done
} >"$tmp/prompts.jsonl"
ledger=$tmp/ledger.db
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget 0.003 --ledger "$ledger" \
    --concurrency 4 --json "$tmp/prompts.jsonl" >"$tmp/batch.json" 2>"$tmp/batch.err"
check "the batch exits 0" 0 "$?"
billed=$(norm "$(sim_total "$url")")

# JSON: totals, models, escalation and caps agree with the batch's own view and the bill.
"$frugal" report --ledger "$ledger" --json >"$tmp/report.json"
check "report --json exits 0" 0 "$?"
read -r total requests esc_ok denied_ok models_ok cap_spent flag_ok <<<"$(python3 - "$tmp/report.json" "$tmp/batch.json" <<'PY'
import json, sys, decimal
D = decimal.Decimal
r = json.load(open(sys.argv[1]))
b = json.load(open(sys.argv[2]))
esc = sum(1 for x in b["requests"] if x["escalated"])
den = sum(1 for x in b["requests"] if x["budget_denied"])
by_model = sum(D(m["cost"]) for m in r["by_model"])
free = [m for m in r["by_model"] if m["model"].endswith(":free")]
f = r["flagship_only"]
flag_ok = f is not None and f["model"] == "anthropic/claude-fable-5" and \
    D(f["cost"]) > D(r["total_cost"]) and D(f["saving"]) == D(f["cost"]) - D(r["total_cost"]) and \
    D(f["spent"]) == D(r["total_cost"]) and f["requests"] == r["requests"]  # every request the policy's
print(D(r["total_cost"]).normalize(), r["requests"],
      r["escalation"]["escalated"] == esc and esc > 0,
      r["escalation"]["denied_by_budget"] == den and den > 0,
      by_model == D(r["total_cost"]) and len(free) == 1 and D(free[0]["cost"]) == 0 and free[0]["free"],
      D(r["caps"][0]["spent"]).normalize() if r["caps"] else "none",
      flag_ok)
PY
)"
check "the report's total is the simulator's bill" "$billed" "$total"
check "one request per prompt" 14 "$requests"
check "escalations are counted as the batch saw them" True "$esc_ok"
check "denied escalations are counted as the batch saw them" True "$denied_ok"
check "per-model costs add up to the total, the free model at \$0" True "$models_ok"
check "the global cap's spend is the bill" "$billed" "$cap_spent"
check "the flagship-only cost is above the actual and the saving is their difference" True "$flag_ok"

# The flagship-only figure, recomputed from the ledger file itself: each request's flagship
# bill where the flagship ran, else its answer's tokens at the flagship's catalog prices
# (tokens × price, not the price alone).
flag_exact=$(python3 - "$ledger" "$tmp/report.json" "$url" <<'PY'
import decimal, json, sqlite3, sys, urllib.request
D = decimal.Decimal
PICO = D(10) ** -12
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select request_id, model_asked, prompt_tokens, completion_tokens, cost, outcome from ledger").fetchall()
models = json.load(urllib.request.urlopen(sys.argv[3] + "/models"))["data"]
p = next(m["pricing"] for m in models if m["id"] == "anthropic/claude-fable-5")
by_req = {}
for r in rows:
    by_req.setdefault(r[0], []).append(r)
total = D(0)
for recs in by_req.values():
    ran = [r for r in recs if r[1] == "anthropic/claude-fable-5" and r[5] not in ("not_sent", "denied")]
    if ran:
        total += sum(D(r[4]) * PICO for r in ran)
        continue
    ok = [r for r in recs if r[5] == "ok"]
    if ok:
        a = ok[-1]
        total += D(p["prompt"]) * a[2] + D(p["completion"]) * a[3] + D(p.get("request", "0"))
rep = D(json.load(open(sys.argv[2]))["flagship_only"]["cost"])
print(rep == total or f"report {rep} vs ledger {total}")
PY
)
check "the flagship-only cost is the ledger's, priced token by token" True "$flag_exact"

# Text, CSV and HTML carry the same figures.
text=$("$frugal" report --ledger "$ledger")
contains "the text names the flagship" "$text" "anthropic/claude-fable-5"
contains "the text has the total" "$text" "total: \$$billed"
contains "the text has the cap" "$text" "global"
contains "the text has the saving" "$text" "alone:"
"$frugal" report --ledger "$ledger" --csv >"$tmp/report.csv"
csv_total=$(python3 - "$tmp/report.csv" <<'PY'
import csv, sys, decimal
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
t = [r for r in rows if r["section"] == "total"][0]
m = sum(decimal.Decimal(r["cost_usd"]) for r in rows if r["section"] == "model")
print(decimal.Decimal(t["cost_usd"]).normalize() if m == decimal.Decimal(t["cost_usd"]) else "mismatch")
PY
)
check "the CSV's total is the bill and its models add up to it" "$billed" "$csv_total"
"$frugal" report --ledger "$ledger" --html "$tmp/report.html" 2>/dev/null
check "report --html exits 0" 0 "$?"
html=$(cat "$tmp/report.html")
contains "the HTML has inline SVG charts" "$html" '<svg role="img" aria-label="Cost per model"'
contains "the HTML has the spend over time" "$html" 'aria-label="Spend over time"'
contains "the HTML names the flagship" "$html" "anthropic/claude-fable-5"
case "$html" in *"<script"* | *"http://"[a-z]*"/"*".css"* | *"src=\"http"*) check "the HTML needs no script or network" none found ;; *) check "the HTML needs no script or network" none none ;; esac

# --since: a time after every record leaves none; a bad value is a usage error.
since=$("$frugal" report --ledger "$ledger" --since 2099-01-01 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
check "--since after the last record leaves no records" 0 "$since"
all=$("$frugal" report --ledger "$ledger" --since 1h --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
check "--since 1h keeps this run's records" 14 "$all"
"$frugal" report --ledger "$ledger" --since yesterday-ish >/dev/null 2>"$tmp/err"
check "a bad --since exits 2" 2 "$?"
contains "a bad --since says what it expects" "$(cat "$tmp/err")" "span back from now"

# --reconcile on the untouched ledger: every generation matches.
"$frugal" report --ledger "$ledger" --reconcile --json >"$tmp/rec.json"
check "a clean ledger reconciles with exit 0" 0 "$?"
clean=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["reconciliation"]; print(r["checked"] > 0 and r["checked"] == r["matched"] and not r["differences"])' "$tmp/rec.json")
check "every generation matches the provider" True "$clean"

# Plant three things: a record whose cost differs from the bill, a record left estimated at
# more than it cost, and a record lost to a crash that left only its open reservation.
read -r planted estimated orphan <<<"$(python3 - "$ledger" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
paid = db.execute("SELECT id, generation_id, cost, time_ms, request_id, model_asked, charges "
                  "FROM ledger WHERE cost > 0 ORDER BY id").fetchall()
a, b, c = paid[0], paid[1], paid[2]
db.execute("UPDATE ledger SET cost = cost + 1000000 WHERE id = ?", (a[0],))
db.execute("UPDATE ledger SET cost = cost + 5000000000, estimated = 1 WHERE id = ?", (b[0],))
db.execute("UPDATE spend SET committed = committed + 5000000000")
db.execute("DELETE FROM ledger WHERE id = ?", (c[0],))
db.execute("INSERT INTO reservations VALUES(?, ?, ?, ?, ?, ?, ?)",
           (999999, c[3], c[4], c[5], c[1], 7000000000, c[6]))
db.execute("UPDATE spend SET committed = committed - ?", (c[2],))
db.commit()
print(a[1], b[1], c[1])
PY
)"
"$frugal" report --ledger "$ledger" --reconcile >"$tmp/rec.txt" 2>&1
check "a planted difference makes --reconcile exit 1" 1 "$?"
rec=$(cat "$tmp/rec.txt")
contains "the planted difference is listed by its generation" "$rec" "DIFFERENT record"
contains "the listed difference is the planted one" "$(grep DIFFERENT "$tmp/rec.txt")" "$planted"
check "exactly one difference" 1 "$(grep -c DIFFERENT "$tmp/rec.txt")"
contains "the estimated record is corrected" "$(grep 'corrected' "$tmp/rec.txt")" "$estimated"
contains "the orphaned reservation is settled" "$(grep 'settled open reservation' "$tmp/rec.txt")" "$orphan"
after=$("$frugal" report --ledger "$ledger" --json | python3 -c '
import json, sys, decimal
r = json.load(sys.stdin)
print(r["open_reservations"]["count"], decimal.Decimal(r["caps"][0]["spent"]).normalize(),
      decimal.Decimal(r["total_cost"]).normalize())')
planted_total=$(python3 -c "import decimal; print((decimal.Decimal('$billed') + decimal.Decimal('0.000001')).normalize())")
# The planted difference was written into the ledger only; the spend was never wrong.
check "after reconciling: no open reservation, spend = bill, ledger = bill + the planted difference" \
    "0 $billed $planted_total" "$after"

# The key goes only where the user trusts: a ledger naming another URL needs --base-url.
python3 -c 'import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); d.execute("UPDATE notes SET value=? WHERE key=?", ("https://collector.invalid/api/v1", "base_url")); d.commit()' "$ledger"
"$frugal" report --ledger "$ledger" --reconcile >/dev/null 2>"$tmp/err"
check "a ledger naming an untrusted URL is not reconciled" 1 "$?"
contains "it says to pass --base-url" "$(cat "$tmp/err")" "pass --base-url to send your key there"
# Without the key that made the generations, nothing can be verified: an error, not a pass.
OPENROUTER_API_KEY= "$frugal" report --ledger "$ledger" --reconcile --base-url "$url" >/dev/null 2>"$tmp/err"
check "reconciling without a key fails" 1 "$?"
contains "it says no generation could be looked up" "$(cat "$tmp/err")" "no generation could be looked up"

"$frugal" report --ledger "$tmp/nothing.db" >/dev/null 2>"$tmp/err"
check "a missing ledger is a usage error" 2 "$?"
if grep -q "$OPENROUTER_API_KEY" "$tmp"/*.txt "$tmp"/*.json "$tmp"/*.csv "$tmp"/*.html "$tmp/err" 2>/dev/null; then
    check "the key never appears in any output" absent present
else
    check "the key never appears in any output" absent absent
fi
finish
