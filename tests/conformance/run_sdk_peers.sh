#!/usr/bin/env bash
# The official openai Node SDK and @openrouter/sdk against `frugal sim`: whole and streamed
# chats must complete, and the usage and cost they parse must equal the simulator's bill.
# Exit 77 (skipped) where node or the npm registry is unavailable.
set -u
frugal=$1
npm_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
packages="openai@6.49.0 @openrouter/sdk@1.3.19"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "SKIP: node and npm are needed to run the SDKs"
    exit 77
fi
if [ ! -f "$npm_dir/node_modules/openai/package.json" ] ||
    [ ! -f "$npm_dir/node_modules/@openrouter/sdk/package.json" ]; then
    mkdir -p "$npm_dir"
    [ -f "$npm_dir/package.json" ] || echo '{"private": true}' >"$npm_dir/package.json"
    # shellcheck disable=SC2086
    if ! (cd "$npm_dir" && timeout 300 npm install --no-audit --no-fund --silent $packages >/dev/null 2>&1); then
        echo "SKIP: could not install $packages from the npm registry"
        exit 77
    fi
fi

log=$(mktemp)
"$frugal" sim --port 0 >"$log" 2>&1 &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null; wait $sim_pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$log")
    [ -n "$url" ] && break
    sleep 0.05
done
if [ -z "$url" ]; then
    echo "frugal sim did not start:"; cat "$log"; exit 1
fi
NODE_PATH="$npm_dir/node_modules" node "$here/sdk_peers.mjs" "$url" "$npm_dir/node_modules"
