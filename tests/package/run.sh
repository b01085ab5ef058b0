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
# pkg-config: the installed tree moved elsewhere still describes itself (a relocatable
# prefix), and a program built with exactly the flags it gives compiles, links and runs.
mv "$tmp/prefix" "$tmp/moved"
pcdir=$(dirname "$(find "$tmp/moved" -name frugal.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs frugal) ||
    { echo "pkg-config does not find frugal"; exit 1; }
case "$flags" in
*"$tmp/moved/"*) ;;
*) echo "pkg-config's flags do not follow the moved prefix: $flags"; exit 1 ;;
esac
# shellcheck disable=SC2086 # the flags are words
c++ "$src/main.cpp" $flags -o "$tmp/pc-consumer" || { echo "the pkg-config flags do not build: $flags"; exit 1; }
out=$("$tmp/pc-consumer")
[ "$out" = "0.0000000375 2" ] || { echo "the pkg-config consumer printed: $out"; exit 1; }
echo "ok: the installed package builds a consumer with CMake and with pkg-config's flags, moved"
