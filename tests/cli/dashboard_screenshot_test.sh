#!/usr/bin/env bash
# The demo's HTML dashboard rendered by headless Chromium: the screenshot must show the cost
# bars (paid and free colours), the spend line and the cap line. Skipped (77) without Chromium.
set -u
frugal=$1
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no Chromium: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset OPENROUTER_API_KEY OPENROUTER_BASE_URL HTTPS_PROXY https_proxy
"$frugal" demo --out "$tmp/demo" >/dev/null 2>&1
check "the demo exits 0" 0 "$?"
# No network: the page must render from the file alone.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$tmp/profile" --proxy-server=127.0.0.1:9 --window-size=900,1500 \
    --screenshot="$tmp/shot.png" "file://$tmp/demo/dashboard.html" >/dev/null 2>&1
check "Chromium renders the dashboard" 0 "$?"
counts=$(python3 - "$tmp/shot.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        bpp = {2: 3, 6: 4}[ctype]
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours = {"paid": (0x2f, 0x6f, 0xdf), "free": (0x1f, 0x9d, 0x55), "cap": (0xd6, 0x45, 0x45),
           "spend": (0x7a, 0x3f, 0xd1)}
found = dict.fromkeys(colours, 0)
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(w):
        px = line[x * bpp:x * bpp + 3]
        for k, col in colours.items():
            if all(abs(px[j] - col[j]) <= 6 for j in range(3)):
                found[k] += 1
    prev = line
print(found["paid"], found["free"], found["cap"], found["spend"])
PY
)
read -r paid free cap spend <<<"$counts"
echo "pixels: paid $paid, free $free, cap $cap, spend $spend"
[ "${paid:-0}" -gt 3000 ] && check "the paid model's bar is drawn" yes yes || check "the paid model's bar is drawn" "more than 3000 pixels" "${paid:-0}"
[ "${spend:-0}" -gt 500 ] && check "the spend line is drawn" yes yes || check "the spend line is drawn" "more than 500 pixels" "${spend:-0}"
[ "${free:-0}" -gt 40 ] && check "the free model's mark is drawn" yes yes || check "the free model's mark is drawn" "more than 40 pixels" "${free:-0}"
[ "${cap:-0}" -gt 200 ] && check "the cap line is drawn" yes yes || check "the cap line is drawn" "more than 200 pixels" "${cap:-0}"
finish
