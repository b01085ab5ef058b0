#!/usr/bin/env bash
# One cap for a fleet: four `frugal batch` processes at concurrency 32, most prompts escalating,
# share one cap through Redis. The simulator's bill never exceeds the cap, the four ledgers
# add up to the bill to the unit, and Redis holds the same spend. Skipped (77) without
# redis-server.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
command -v redis-server >/dev/null || { echo "no redis-server: skipped"; exit 77; }
tmp=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
redis=$!
cat >"$tmp/sim.json" <<'J'
{"free_requests_per_minute": 100000, "free_requests_per_day": 1000000}
J
"$frugal" sim --port 0 --config "$tmp/sim.json" >"$tmp/sim" 2>&1 &
sim=$!
trap 'kill $sim $redis 2>/dev/null; wait $sim $redis 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do grep -q listening "$tmp/sim" && break; sleep 0.05; done
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$tmp/sim")
port=$(echo "$url" | sed 's|.*:\([0-9]*\)/api/v1|\1|')
export OPENROUTER_API_KEY=sk-or-v1-fleet-test-secret-0123456789
unset OPENROUTER_BASE_URL HTTPS_PROXY https_proxy

bill() {
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /__sim/bill HTTP/1.0\r\n\r\n' >&3
    cat <&3 | sed -n 's/.*"total":{[^}]*"cost_usd":"\([0-9.]*\)".*/\1/p'
    exec 3<&-
}

cat >"$tmp/policy.json" <<'P'
{"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5",
 "escalate_on":["length","empty","error","refusal"],"max_tokens":256,
 "free_tier":{"per_minute":100000,"per_day":1000000}}
P
cap=0.03
for p in 1 2 3 4; do
    for i in $(seq 40); do
        if [ $((i % 5)) -eq 0 ]; then
            echo "{\"id\":\"p$p-$i\",\"prompt\":\"Name a colour, number $p-$i.\"}"
        else
            echo "{\"id\":\"p$p-$i\",\"prompt\":\"Prove the theorem rigorously, step by step, part $p-$i.\"}"
        fi
    done >"$tmp/prompts$p.jsonl"
done
pids=()
for p in 1 2 3 4; do
    "$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget "$cap" \
        --budget-store "redis://127.0.0.1:$rport/0" --ledger "$tmp/ledger$p.db" \
        --concurrency 32 --json "$tmp/prompts$p.jsonl" >"$tmp/out$p.json" 2>"$tmp/err$p" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
check "the four batches exit 0" 0 "$status"
[ "$status" -eq 0 ] || cat "$tmp"/err*

billed=$(bill)
read -r within ledgers denied escalated <<<"$(python3 - "$billed" "$cap" "$tmp" "$frugal" <<'PY'
import decimal, json, subprocess, sys
D = decimal.Decimal
billed, cap, tmp, frugal = D(sys.argv[1]), D(sys.argv[2]), sys.argv[3], sys.argv[4]
total, denied, escalated = D(0), 0, 0
for p in range(1, 5):
    r = json.loads(subprocess.run([frugal, "report", "--ledger", f"{tmp}/ledger{p}.db", "--json"],
                                  capture_output=True, text=True, check=True).stdout)
    total += D(r["total_cost"])
    out = json.load(open(f"{tmp}/out{p}.json"))
    denied += sum(1 for x in out["requests"] if x["budget_denied"])
    escalated += sum(1 for x in out["requests"] if x["escalated"] and not x["budget_denied"])
print(billed <= cap, total.normalize() == billed.normalize(), denied, escalated)
PY
)"
check "the simulator's bill stays within the fleet's cap" True "$within"
check "the four ledgers add up to the bill" True "$ledgers"
[ "${denied:-0}" -gt 0 ] && check "the shared cap denies escalations" yes yes || check "the shared cap denies escalations" "some" "${denied:-0}"
[ "${escalated:-0}" -gt 0 ] && check "escalations ran until the cap" yes yes || check "escalations ran until the cap" "some" "${escalated:-0}"
# Redis holds the fleet's spend: the global budget's committed amount is the bill.
redis_total=$(redis-cli -p "$rport" --raw HGET frugal:committed 0:global)
check "Redis holds the bill as the fleet's spend" \
    "$(python3 -c "import decimal; print((decimal.Decimal('$billed') * 10**12).to_integral_value())")" \
    "${redis_total:-missing}"
check "no reservation is left open" 0 "$(redis-cli -p "$rport" ZCARD frugal:leases)"

# Redis down: escalations are refused with a clear error (fail closed); free calls go on.
kill "$redis"
wait "$redis" 2>/dev/null
"$frugal" batch --base-url "$url" --policy "$tmp/policy.json" --budget "$cap" \
    --budget-store "redis://127.0.0.1:$rport/0" --json "$tmp/prompts1.jsonl" >"$tmp/down.json" 2>"$tmp/down.err"
check "with Redis down the batch reports failures" 1 "$?"
read -r free_ok hard_refused <<<"$(python3 - "$tmp/down.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["requests"]
easy = [x for x in d if int(x["id"].split("-")[1]) % 5 == 0]
hard = [x for x in d if int(x["id"].split("-")[1]) % 5 != 0]
print(all(x["error"] is None and x["final_model"].endswith(":free") for x in easy),
      all(x["error"] and "budget store" in x["error"] for x in hard))
PY
)"
check "free calls go on while Redis is down" True "$free_ok"
check "every escalation is refused, naming the budget store" True "$hard_refused"
finish
