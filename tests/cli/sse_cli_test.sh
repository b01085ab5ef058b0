#!/usr/bin/env bash
# `frugal sse` as a user runs it: output format, --count, limits, exit status and stderr.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

out=$(printf 'event: add\nid: 7\ndata: a "quoted"\ndata: b\\c\n\ndata: x\n\n' | "$frugal" sse)
check "events become JSON lines" \
    '{"event":"add","data":"a \"quoted\"\nb\\c","id":"7"}
{"event":"message","data":"x","id":"7"}' "$out"

out=$(printf 'data: a\n\nretry: 2500\ndata: b\n\n' | "$frugal" sse)
check "retry appears once the stream has set it" \
    '{"event":"message","data":"a","id":""}
{"event":"message","data":"b","id":"","retry":2500}' "$out"

out=$(printf '\xef\xbb\xbfdata: \xff\xe2\x82\n\n' | "$frugal" sse)
check "invalid UTF-8 is replaced, BOM removed" \
    "$(printf '{"event":"message","data":"\xef\xbf\xbd\xef\xbf\xbd","id":""}')" "$out"

out=$(printf ': OPENROUTER PROCESSING\n\ndata: {"a":1}\n\ndata: [DONE]\n\n' | "$frugal" sse --count)
check "--count counts events and bytes" '{"events":2,"bytes":54}' "$out"

out=$(printf 'data: a\n\ndata: unfinished' | "$frugal" sse --count)
check "an unfinished event is not counted" '{"events":1,"bytes":25}' "$out"

err=$(head -c 100000 /dev/zero | tr '\0' 'x' | "$frugal" sse --max-line 1000 2>&1 >/dev/null)
status=$?
check "a line over --max-line exits non-zero" 1 "$status"
check "with one clear line on stderr" \
    "frugal sse: stream rejected at byte 0: a line longer than 1000 bytes (--max-line) [frugal:1]" \
    "$err"

err=$( (printf 'data: ok\n\n'; for _ in $(seq 100); do printf 'data: 0123456789\n'; done) |
    "$frugal" sse --max-event 500 2>&1 >/dev/null)
status=$?
check "an event over --max-event exits non-zero" 1 "$status"
check "naming the event limit" \
    "frugal sse: stream rejected at byte 775: an event larger than 500 bytes (--max-event) [frugal:2]" \
    "$err"

"$frugal" sse --max-line nonsense </dev/null >/dev/null 2>&1
check "a bad option is a usage error" 2 "$?"

out=$(printf 'data: a\n\n' | "$frugal" sse --max-line 7)
check "a line of exactly --max-line is accepted" '{"event":"message","data":"a","id":""}' "$out"

finish
