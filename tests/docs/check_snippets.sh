#!/usr/bin/env bash
# Every C++ block in docs/*.md that is followed by a "(from [examples/NAME](...))" line must
# appear in that example, line for line (indentation aside), so documented code is code that
# compiles in CI.
set -u
root=$1
status=0
for doc in "$root"/docs/*.md; do
    awk -v root="$root" -v doc="$doc" '
        function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
        function check(file,    n, m, lines, i, j, ok, line) {
            m = 0
            while ((getline line < file) > 0) lines[++m] = trim(line)
            close(file)
            if (m == 0) { printf "%s: %s is missing or empty\n", doc, file; bad = 1; return }
            for (i = 1; i + nblock - 1 <= m; i++) {
                ok = 1
                for (j = 1; j <= nblock; j++) if (lines[i + j - 1] != block[j]) { ok = 0; break }
                if (ok) { checked++; return }
            }
            printf "%s: the block ending at line %d is not in %s\n", doc, endline, file
            bad = 1
        }
        /^```cpp/ { inblock = 1; nblock = 0; next }
        inblock && /^```/ { inblock = 0; endline = NR; pending = 1; next }
        inblock { block[++nblock] = trim($0); next }
        pending && /^\(from \[examples\// {
            match($0, /examples\/[^]]+/)
            check(root "/" substr($0, RSTART, RLENGTH))
        }
        { pending = 0 }
        END { printf "%s: %d snippet(s) match their example\n", doc, checked; exit bad }
    ' "$doc" || status=1
done
exit $status
