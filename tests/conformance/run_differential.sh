#!/usr/bin/env bash
# Runs differential.mjs: frugal's parser against eventsource-parser (npm), the parser most Node
# SSE clients use, on thousands of generated streams. Exit 77 (skipped) without node or npm.
set -u
frugal=$1
npm_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
version=3.1.1

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "SKIP: node and npm are needed to run eventsource-parser"
    exit 77
fi
module="$npm_dir/node_modules/eventsource-parser/dist/index.js"
if ! grep -qs "\"version\": \"$version\"" "$npm_dir/node_modules/eventsource-parser/package.json"; then
    mkdir -p "$npm_dir"
    [ -f "$npm_dir/package.json" ] || echo '{"private": true}' >"$npm_dir/package.json"
    if ! (cd "$npm_dir" && timeout 300 npm install --no-audit --no-fund --silent \
        "eventsource-parser@$version" >/dev/null 2>&1); then
        echo "SKIP: could not install eventsource-parser@$version from the npm registry"
        exit 77
    fi
fi
exec node "$here/differential.mjs" "$frugal" "$module" "${SSE_DIFF_STREAMS:-3000}"
