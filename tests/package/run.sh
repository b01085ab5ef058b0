#!/usr/bin/env bash
# Installs the built frugal into a scratch prefix, then configures and builds a consumer
# project with find_package(frugal CONFIG) and runs it; also checks the pkg-config file.
set -eu
build=$1
src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src" -B "$tmp/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DCMAKE_BUILD_TYPE=Release -Wno-dev >/dev/null
cmake --build "$tmp/consumer" >/dev/null
out=$("$tmp/consumer/consumer")
[ "$out" = "0.0000000375 2" ] || { echo "consumer printed: $out"; exit 1; }
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --exists frugal ||
    { echo "pkg-config does not find frugal"; exit 1; }
echo "ok: the installed package builds a consumer, and pkg-config finds it"
