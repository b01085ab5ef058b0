# Sourced by the CLI tests: named checks that print ok/FAIL and count failures.
failures=0

check() { # name expected actual
    if [ "$2" != "$3" ]; then
        printf 'FAIL %s\n  expected: %s\n  actual:   %s\n' "$1" "$2" "$3"
        failures=$((failures + 1))
    else
        printf 'ok   %s\n' "$1"
    fi
}

contains() { # name haystack needle
    case "$2" in
    *"$3"*) printf 'ok   %s\n' "$1" ;;
    *)
        printf 'FAIL %s\n  %s\n  lacks: %s\n' "$1" "$2" "$3"
        failures=$((failures + 1))
        ;;
    esac
}

finish() {
    if [ "$failures" -ne 0 ]; then
        echo "$failures check(s) failed"
        exit 1
    fi
}
