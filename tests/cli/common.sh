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

# The base URL of a `frugal sim` whose output goes to LOG, once it listens.
sim_url() { # log
    for _ in $(seq 100); do grep -q listening "$1" && break; sleep 0.05; done
    sed -n 's/^listening on //p' "$1"
}

# The simulator's own bill (GET /__sim/bill) as JSON, from its base URL.
sim_bill() { # url
    local port
    port=$(echo "$1" | sed 's|.*:\([0-9]*\)/api/v1|\1|')
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /__sim/bill HTTP/1.0\r\n\r\n' >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}

# The simulator's total, as a decimal string.
sim_total() { # url
    sim_bill "$1" | sed -n 's/.*"total":{[^}]*"cost_usd":"\([0-9.]*\)".*/\1/p'
}

# Sets the test's API key and clears what could send its requests anywhere but the simulator.
use_key() { # key
    export OPENROUTER_API_KEY=$1
    unset OPENROUTER_BASE_URL HTTPS_PROXY https_proxy
}
