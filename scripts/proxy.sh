# shellcheck shell=bash disable=SC2154
# Sourced by the scripts that run proxies in front of the relay (deploy.sh,
# tls.sh, multinode.sh): a scratch folder with a cleanup on exit, and the
# helpers they share. Set $name (the script's name, for messages) first.

# Sets $tmp, a scratch folder that a proxy's workers (nginx's run as nobody)
# can reach their temp folders through; on exit every process in $pids is
# stopped and the folder removed.
scratch() {
    tmp=$(mktemp -d "/tmp/ws-relay-$name.XXXXXX")
    chmod 755 "$tmp"
    pids=()
    trap cleanup EXIT
}

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}

# Says why, with the last lines of every log in $tmp, and exits 1.
fail() {
    echo "$name: FAIL: $*" >&2
    for f in "$tmp"/*.log "$tmp"/*/*.log; do
        [ -s "$f" ] && { echo "--- $f (last lines)" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Replaces the one line matching $2 in file $1 by $3 (sed's replacement syntax),
# failing if the shipped file no longer has exactly one such line.
subst() {
    local n
    n=$(grep -c -- "$2" "$1" || true)
    [ "$n" = 1 ] || fail "$1: expected one line matching '$2', found $n"
    sed -i "s|$2|$3|" "$1"
}
