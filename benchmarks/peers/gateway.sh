# Sourced by run.sh after the clients' comparison (PEERS_GATEWAY=0 leaves it out): the gateway of
# issue 18. frugal serve and Portkey's open-source gateway (@portkey-ai/gateway from npm), each
# alone on CPU 1, pass the same request through to the same nginx; the load (wrk, frugal-rate)
# shares CPU 0 with nginx. Measured: the gateway's CPU per request (all it adds), the latency it
# adds at a fixed 5,000 requests a second (frugal-rate, open loop, against the direct call), and
# its memory per open stream (streams held open by the simulator).
# Uses from run.sh: here, build, work, npm_dir, reps, whole, run.

gw=$work/gateway
mkdir -p "$gw"
portkey_version=1.15.2
portkey=$npm_dir/node_modules/@portkey-ai/gateway/build/start-server.js
if ! grep -qs "\"version\": \"$portkey_version\"" "$npm_dir/node_modules/@portkey-ai/gateway/package.json"; then
    (cd "$npm_dir" && npm install --no-audit --no-fund --silent "@portkey-ai/gateway@$portkey_version") ||
        echo "bench-peers: @portkey-ai/gateway could not be installed: the gateway is compared with the direct call alone" >&2
fi
gkey=gw-bench-key-0123456789abcdef
pids=()
cleanup_gateway() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true; cleanup_gateway' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file
    for _ in $(seq 200); do grep -q listening "$1" 2>/dev/null && break; sleep 0.05; done
    sed -n 's/^listening on //p' "$1"
}
start_gateway() { # name upstream-url: sets gw_url and gw_pid
    # Every stream in flight holds a connection to the upstream (HTTP/1.1): the pool is sized
    # for the streams held open below.
    printf '{"upstream": {"base_url": "%s", "pool_size": 2000}, "keys": {"%s": {"tenant": "bench", "budget": {"usd": "1000000"}}}, "limits": {"max_connections": 20000}}\n' \
        "$2" "$gkey" >"$gw/$1.json"
    taskset -c 1 env OPENROUTER_API_KEY=sk-or-v1-bench "$build/bin/frugal" serve --config "$gw/$1.json" --port 0 \
        >"$gw/$1.out" 2>"$gw/$1.err" &
    gw_pid=$!
    pids+=("$gw_pid")
    gw_url=$(wait_line "$gw/$1.out")
}

start_gateway whole "$whole"
whole_url=$gw_url
whole_pid=$gw_pid
pk_pid=
if [ -f "$portkey" ]; then
    pk_port=$(free_port)
    NODE_ENV=production taskset -c 1 node "$portkey" --port="$pk_port" --headless >"$gw/portkey.log" 2>&1 &
    pk_pid=$!
    pids+=("$pk_pid")
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $pk_port))" 2>/dev/null && break
        sleep 0.1
    done
    pk_url=http://127.0.0.1:$pk_port/v1
fi

# For latency the upstream is a second nginx on CPU 1 beside the gateway: the direct call and the
# call through the gateway then cross between the CPUs the same number of times (twice). This VM
# charges a wake-up on an idle CPU hundreds of microseconds at the 99th percentile, which would
# otherwise be counted as the gateway's.
near_port=$(free_port)
sed "s|listen 127.0.0.1:[0-9]*|listen 127.0.0.1:$near_port|; s|pid .*;|pid $gw/nginx-near.pid;|" \
    "$work/nginx.conf" >"$gw/nginx-near.conf"
taskset -c 1 nginx -c "$gw/nginx-near.conf" -e "$gw/nginx-near.log"
for _ in $(seq 50); do [ -f "$gw/nginx-near.pid" ] && break; sleep 0.1; done
pids+=("$(cat "$gw/nginx-near.pid")")
near=http://127.0.0.1:$near_port/whole/api/v1
start_gateway near "$near"
near_url=$gw_url

body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$here/post.lua")
sed "s/sk-or-v1-bench/$gkey/" "$here/post.lua" >"$gw/gateway.lua"
{
    cat "$here/post.lua"
    echo 'wrk.headers["x-portkey-provider"] = "openai"'
    echo "wrk.headers[\"x-portkey-custom-host\"] = \"$whole\""
} >"$gw/portkey.lua"
rate=$build/bin/frugal-rate
# Waits until process $1 has used no CPU for half a second: a gateway still working through a
# backlog (Portkey, after wrk stops) would slow whatever runs next on its CPU.
settle() {
    local before after
    for _ in $(seq 120); do
        before=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
        sleep 0.5
        after=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
        [ "$before" = "$after" ] && return
    done
}
for rep in $(seq "$reps"); do
    echo "gateway, repetition $rep of $reps"
    run gateway_cpu python3 "$here/gateway.py" cpu "$whole_pid" "$whole_url/chat/completions" 4 64 "$gw/gateway.lua"
    settle "$whole_pid"
    # The floor under both p99s: time the machine takes from a thread spinning on each CPU
    # while both are busy (on this VM, milliseconds at a time; with one CPU busy, almost none).
    run machine_stalls "$build/bin/frugal-stall-probe" --cpus 0,1 --seconds 4
    run direct_rate taskset -c 0 "$rate" --url "$near/chat/completions" --rate 5000 --seconds 8 \
        --header "Authorization: Bearer sk-or-v1-bench" --body "$body"
    run gateway_rate taskset -c 0 "$rate" --url "$near_url/chat/completions" --rate 5000 --seconds 8 \
        --header "Authorization: Bearer $gkey" --body "$body"
    if [ -n "$pk_pid" ]; then
        run portkey_cpu python3 "$here/gateway.py" cpu "$pk_pid" "$pk_url/chat/completions" 4 64 "$gw/portkey.lua"
        settle "$pk_pid"
        # A gateway that cannot pass 5,000 requests a second closed loop would only queue them:
        # its latency at that rate is not measured (the table says so).
        pk_rps=$(python3 -c "import json; r=[json.loads(l) for l in open('$work/runs.jsonl') if '\"portkey_cpu\"' in l]; print(int(r[-1]['req_per_s']) if r else 0)")
        if [ "$pk_rps" -ge 6000 ]; then
            run portkey_rate taskset -c 0 "$rate" --url "$pk_url/chat/completions" --rate 5000 --seconds 8 \
                --header "Authorization: Bearer sk-or-v1-bench" --header "x-portkey-provider: openai" \
                --header "x-portkey-custom-host: $near" --body "$body"
            settle "$pk_pid"
        fi
    fi
done

# Open streams: the simulator stalls each one after its second token, so it stays open through
# the gateway while the gateway's resident set is read.
taskset -c 0 "$build/bin/frugal" sim --port 0 >"$gw/sim.out" 2>&1 &
pids+=("$!")
sim_url=$(wait_line "$gw/sim.out")
start_gateway held "$sim_url"
hold_body='{"model":"google/gemma-4-31b-it","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"[sim fault=stall after=2 ms=60000] hold"}]}'
run gateway_hold taskset -c 0 python3 "$here/gateway.py" hold "$gw_pid" "$gw_url/chat/completions" 1000 \
    "$hold_body" "Authorization: Bearer $gkey"
if [ -n "$pk_pid" ]; then
    run portkey_hold taskset -c 0 python3 "$here/gateway.py" hold "$pk_pid" "$pk_url/chat/completions" 1000 \
        "$hold_body" "Authorization: Bearer sk-or-v1-bench" "x-portkey-provider: openai" \
        "x-portkey-custom-host: $sim_url"
fi
cleanup_gateway
