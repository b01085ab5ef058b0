#!/usr/bin/env bash
# Money at every edge, as a user meets it from the command line against a `frugal sim` that
# lies: a paid model is never priced as its :free twin, a bill past the cap or an anomalous
# reported cost is said on stderr with exit status 3 (by batch, chat and report), a process
# killed mid-request leaves a reservation that --reconcile settles to the proven bill, bad
# numbers on the command line are usage errors, the key never shows, and CSV cells cannot run
# as formulas. Each check names the defect of issue 14 it guards.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'kill $sim $batch_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
batch_pid=
cat >"$tmp/sim.json" <<'J'
{"free_requests_per_minute": 100000, "free_requests_per_day": 100000}
J
"$frugal" sim --port 0 --config "$tmp/sim.json" >"$tmp/sim" 2>&1 &
sim=$!
url=$(sim_url "$tmp/sim")
use_key sk-or-v1-money-test-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab

flagship=anthropic/claude-fable-5
echo "{\"tiers\":[\"$flagship\"]}" >"$tmp/flagship.json"
echo '{"tiers":["google/gemma-4-31b-it"]}' >"$tmp/paid-twin.json"
echo '{"tiers":["google/gemma-4-31b-it:free"]}' >"$tmp/free.json"
model_cost() { # url model
    sim_bill "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['models'].get(sys.argv[1],{}).get('cost_usd','0'))" "$2"
}

# Defect 1: the paid twin under a cap of a millionth of a dollar is refused, not free.
for i in 1 2 3 4 5; do echo "{\"prompt\":\"Say hello, number $i.\"}"; done >"$tmp/five.jsonl"
"$frugal" batch --base-url "$url" --policy "$tmp/paid-twin.json" --budget 0.000001 --json \
    "$tmp/five.jsonl" >"$tmp/out" 2>"$tmp/err"
status=$?
check "defect 1: the paid twin is not billed under a \$0.000001 cap" 0 "$(model_cost "$url" google/gemma-4-31b-it)"
check "defect 1: and the batch says its prompts failed" 1 "$status"

# Defect 6: a bill past the cap is loud.
echo '{"prompt":"Answer [sim overbill=0.05]"}' >"$tmp/over.jsonl"
"$frugal" batch --base-url "$url" --policy "$tmp/flagship.json" --budget 0.01 --ledger "$tmp/over.db" \
    "$tmp/over.jsonl" >"$tmp/out" 2>"$tmp/err"
check "defect 6: a bill past the cap exits 3" 3 "$?"
check "defect 6: with one line on stderr" 1 "$(wc -l <"$tmp/err" | tr -d ' ')"
contains "defect 6: naming the model" "$(cat "$tmp/err")" "$flagship billed \$0.05"
contains "defect 6: and the cap" "$(cat "$tmp/err")" "against its \$0.01 cap"
"$frugal" report --ledger "$tmp/over.db" >"$tmp/out" 2>"$tmp/err"
check "defect 6: report on that ledger exits 3" 3 "$?"
contains "defect 6: and says so on stderr" "$(cat "$tmp/err")" "the bill passed a cap"
contains "defect 6: and lists the anomaly" "$(cat "$tmp/out")" "ANOMALIES: 1 records"
"$frugal" report --ledger "$tmp/over.db" --json >"$tmp/out" 2>/dev/null
check "defect 6: report --json carries the anomaly" 1 "$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['anomalies']))" "$tmp/out")"

# Defects 3 and 4: a negative or unreadable reported cost never lowers the books, and is loud.
for lie in negative string huge; do
    echo "{\"prompt\":\"Answer [sim cost=$lie]\"}" >"$tmp/lie.jsonl"
    "$frugal" batch --base-url "$url" --policy "$tmp/flagship.json" --budget 1 --json \
        "$tmp/lie.jsonl" >"$tmp/out" 2>"$tmp/err"
    check "defects 3, 4: usage.cost $lie exits 3" 3 "$?"
    contains "defects 3, 4: usage.cost $lie is named" "$(cat "$tmp/err")" "usage.cost was"
    ok=$(python3 - "$tmp/out" <<'PY'
import json, sys, decimal
d = json.load(open(sys.argv[1]))
a = d["requests"][0]["attempts"][0]
print(decimal.Decimal(a["cost"]) > 0 and a["anomaly"] is not None)
PY
)
    check "defects 3, 4: usage.cost $lie is booked above zero and flagged" True "$ok"
done
"$frugal" chat --base-url "$url" --model "$flagship" "Answer [sim cost=negative]" >"$tmp/out" 2>"$tmp/err"
check "defect 6: chat exits 3 on a negative cost" 3 "$?"
contains "defect 6: chat names it" "$(cat "$tmp/err")" "usage.cost was negative"
"$frugal" chat --base-url "$url" --model google/gemma-4-31b-it:free --budget 0.01 \
    "Answer [sim overbill=0.02]" >"$tmp/out" 2>"$tmp/err"
check "defect 2: a free model that bills under chat --budget exits 3" 3 "$?"
contains "defect 2: and is named" "$(cat "$tmp/err")" "the free model google/gemma-4-31b-it:free billed \$0.02"

# Defect 8: a process killed mid-request leaves its reservation with the generation id, and
# --reconcile settles it to the proven bill.
echo '{"prompt":"Take your time [sim keepalive=1 fault=slow-first-token ms=2500]"}' >"$tmp/slow.jsonl"
before=$(model_cost "$url" "$flagship")
"$frugal" batch --base-url "$url" --policy "$tmp/flagship.json" --budget 1 --ledger "$tmp/crash.db" \
    "$tmp/slow.jsonl" >/dev/null 2>&1 &
batch_pid=$!
# Killed once its reservation holds the generation id (the response head names it; the first
# token comes 2.5 s later), not after a fixed second, which a sanitized build under load can
# take just to start.
for _ in $(seq 200); do
    held=$(python3 - "$tmp/crash.db" 2>/dev/null <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=0.2)
print(db.execute("SELECT count(*) FROM reservations WHERE generation_id != ''").fetchone()[0])
PY
)
    [ "$held" = 1 ] && break
    sleep 0.05
done
kill -9 "$batch_pid"
wait "$batch_pid" 2>/dev/null
batch_pid=
"$frugal" report --ledger "$tmp/crash.db" --json >"$tmp/out" 2>/dev/null
check "defect 8: the killed run left one open reservation" 1 "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['open_reservations']['count'])" "$tmp/out")"
"$frugal" report --ledger "$tmp/crash.db" --reconcile --reconcile-wait 10 --json >"$tmp/out" 2>"$tmp/err"
check "defect 8: --reconcile settles it" 1 "$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['reconciliation']['settled_open']))" "$tmp/out")"
proven=$(python3 -c "import json,sys,decimal; print(decimal.Decimal(json.load(open(sys.argv[1]))['reconciliation']['settled_open'][0]['provider']).normalize())" "$tmp/out")
check "defect 8: to what the simulator billed" "$(python3 -c "import decimal,sys; print((decimal.Decimal(sys.argv[1]) - decimal.Decimal(sys.argv[2])).normalize())" "$(model_cost "$url" "$flagship")" "$before")" "$proven"

# Defect 9: bad numbers are usage errors; the key never shows; CSV cells cannot run.
"$frugal" batch --base-url "$url" --policy "$tmp/flagship.json" --budget "" "$tmp/five.jsonl" >/dev/null 2>"$tmp/err"
check "defect 9: --budget \"\" is a usage error" 2 "$?"
"$frugal" batch --base-url "$url" --policy "$tmp/flagship.json" --budget " " "$tmp/five.jsonl" >/dev/null 2>"$tmp/err"
check "defect 9: a blank --budget is a usage error" 2 "$?"
for t in nan 1e300 inf -1 0; do
    "$frugal" chat --base-url "$url" --model "$flagship" --timeout "$t" "Hi" >/dev/null 2>"$tmp/err"
    check "defect 9: --timeout $t is a usage error" 2 "$?"
done
"$frugal" chat --base-url "$url" --model "$flagship" "Hi [sim fault=echo-key]" >/dev/null 2>"$tmp/err"
check "defect 9: an error that echoes the key fails" 1 "$?"
contains "defect 9: with the server's message" "$(cat "$tmp/err")" "Invalid request header"
secret=${OPENROUTER_API_KEY#sk-or-v1-}
if grep -qi -e "${secret:0:16}" -e "${secret: -16}" "$tmp/err"; then leaked=yes; else leaked=no; fi
check "defect 9: and no part of the key" no "$leaked"
b64=$(printf 'Bearer %s' "$OPENROUTER_API_KEY" | base64 -w0)
if grep -q "${b64:12:24}" "$tmp/err"; then leaked=yes; else leaked=no; fi
check "defect 9: not even in base64" no "$leaked"

# The CLI under random hostile catalogs and lies: whenever the bill passed the cap or a report
# was anomalous, the batch says so on stderr and exits 3; the ledger is never below the bill.
random_runs() {
    python3 - "$frugal" "$tmp" "${FRUGAL_CLI_EDGE_RUNS:-12}" <<'PY'
import decimal, json, os, random, subprocess, sys, time
D = decimal.Decimal
frugal, tmp, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
fails = 0
alarms = 0
for seed in range(runs):
    rng = random.Random(seed)
    models = []
    for i in range(rng.randint(1, 3)):
        m = {"id": f"v{i}/m", "prompt_price": rng.choice(["0", "0.000001", "0.000003"]),
             "completion_price": rng.choice(["0.000002", "0.000015"]),
             "request_price": rng.choice(["0", "0", "0.002"]), "capability": rng.randint(3, 10),
             "max_completion_tokens": 512}
        if rng.random() < 0.2:
            m["pricing_extra"] = {"internal_reasoning": "0.0001"}
        if rng.random() < 0.5:
            models.append(dict(m, id=m["id"] + ":free", prompt_price="0", completion_price="0",
                               request_price="0", capability=3))
        models.append(m)
    cfg = {"models": models, "free_requests_per_minute": 100000, "free_requests_per_day": 100000}
    open(f"{tmp}/r.json", "w").write(json.dumps(cfg))
    tiers = [rng.choice(models)["id"], rng.choice(models)["id"]]
    open(f"{tmp}/rp.json", "w").write(json.dumps({"tiers": list(dict.fromkeys(tiers))}))
    with open(f"{tmp}/rq.jsonl", "w") as f:
        for i in range(rng.randint(3, 8)):
            lie = rng.choice(["", "", "", "cost=negative", "cost=string", "cost=missing", "overbill=0.03"])
            f.write(json.dumps({"prompt": f"Q{i} [sim difficulty={rng.randint(1,10)} {lie}]"}) + "\n")
    cap = rng.choice(["0.0001", "0.001", "0.01", "0.05"])
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(f"{tmp}/r.db{suffix}"):
            os.remove(f"{tmp}/r.db{suffix}")
    sim = subprocess.Popen([frugal, "sim", "--port", "0", "--config", f"{tmp}/r.json"],
                           stdout=subprocess.PIPE, text=True)
    url = sim.stdout.readline().split()[-1]
    b = subprocess.run([frugal, "batch", "--base-url", url, "--policy", f"{tmp}/rp.json",
                        "--budget", cap, "--ledger", f"{tmp}/r.db", "--json", f"{tmp}/rq.jsonl"],
                       capture_output=True, text=True)
    port = url.split(":")[2].split("/")[0]
    import urllib.request
    bill = D(json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/__sim/bill").read())["total"]["cost_usd"])
    sim.terminate(); sim.wait()
    out = json.loads(b.stdout)
    anomalies = sum(1 for r in out["requests"] for a in r["attempts"] if a["anomaly"])
    unprovable = sum(D("0.03") for r in out["requests"] for a in r["attempts"]
                     if a["cost_estimated"] and "overbill" in open(f"{tmp}/rq.jsonl").read())
    rep = subprocess.run([frugal, "report", "--ledger", f"{tmp}/r.db", "--json"], capture_output=True, text=True)
    ledger = D(json.loads(rep.stdout)["total_cost"])
    def bad(what):
        global fails
        fails += 1
        print(f"FAIL random run {seed}: {what} (exit {b.returncode}, bill {bill}, cap {cap}, ledger {ledger}): {b.stderr.strip()}")
    alarms += b.returncode == 3
    if bill > D(cap) and (b.returncode != 3 or "passed a cap" not in b.stderr):
        bad("the bill passed the cap without the alarm")
    if anomalies and b.returncode != 3:
        bad("an anomaly without exit status 3")
    if b.returncode == 3 and len(b.stderr.strip().splitlines()) != 1:
        bad("more than one line on stderr")
    if ledger + unprovable < bill:
        bad("the ledger is below the bill")
    if (bill > D(cap) or anomalies) and rep.returncode != 3:
        bad(f"report exits {rep.returncode}, not 3")
print(f"note: {runs} random runs, {alarms} raised the alarm" if fails == 0 else f"{fails} failures")
sys.exit(1 if fails or alarms == 0 else 0)
PY
}
out=$(random_runs)
check "defect 6: random hostile runs raise the alarm whenever they must" 0 "$?"
[ -n "$out" ] && echo "$out"

cat >"$tmp/evil.json" <<'J'
{"models": [{"id": "=cmd|' /C calc'!A0", "prompt_price": "0", "completion_price": "0"}]}
J
"$frugal" sim --port 0 --config "$tmp/evil.json" >"$tmp/sim2" 2>&1 &
sim2=$!
url2=$(sim_url "$tmp/sim2")
echo '{"tiers":["=cmd|'"'"' /C calc'"'"'!A0"]}' >"$tmp/evil-policy.json"
"$frugal" batch --base-url "$url2" --policy "$tmp/evil-policy.json" --ledger "$tmp/evil.db" \
    "$tmp/five.jsonl" >/dev/null 2>&1
"$frugal" report --ledger "$tmp/evil.db" --csv >"$tmp/out" 2>/dev/null
kill $sim2 2>/dev/null
wait $sim2 2>/dev/null
if grep -q "^model,=" "$tmp/out"; then formula=yes; else formula=no; fi
check "defect 9: a model name is never a formula in CSV" no "$formula"
contains "defect 9: it is written as text" "$(cat "$tmp/out")" "model,'=cmd"
finish
