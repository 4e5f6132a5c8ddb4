#!/usr/bin/env bash
# Takeover under load: the relay runs from a copy in a scratch folder, and the
# load tool (`--mode takeover`) replaces that file and sends SIGUSR2, step by
# step, while 200 well-behaved clients (25 rooms × 8, 30 Hz, 200 B) and a
# reader lagging 8 MiB behind a stream of 60 KB messages keep going: a fresh
# relay three times, which must take over, then a program that exits at once,
# one that hangs and a relay that cannot take the state (it may open too few
# descriptors), which the relay must survive, the last after it had frozen
# and handed its state over. The tool fails on any close, join, quit, new id,
# or lost, repeated or reordered message. Then, from outside: the last
# process runs the file put at the scratch path, every earlier one and every
# failed successor is gone, the log and /metrics count three takeovers, and
# the last process holds a descriptor per connection beside its baseline, and
# only its baseline once the clients have left.
#
#   bash scripts/takeover.sh          # CI form, about 35 s
#   GAP=1 bash scripts/takeover.sh    # then 2,000 clients (250 rooms × 8, each
#                                     # room's reports in a burst, GAP_RATE Hz,
#                                     # default 30), three takeovers: each step's
#                                     # longest delivery gap, for the README
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin ws-relay
cargo build --release --quiet --features load --bin ws-relay-load
work=$(mktemp -d "${TMPDIR:-/tmp}/ws-relay-takeover.XXXXXX")

# Whether $1 runs: an exited relay stays a zombie until reaped, and the
# parent of one that took over is init, which need not reap it.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$(cut -d' ' -f1 <<<"${stat##*) }")" != Z ]
}

# Whether $1 is a process of case folder $2: one of its relays (the refusing
# one runs from bin/), or the program of a `hangs` step; so that a reused pid
# is never signalled.
ours() {
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == "$2/ws-relay "* || $cmd == "$2/bin/good "* ]] ||
        { [ "$cmd" = "sleep 60 " ] && grep -qx "$1" "$2/hangs.pids" 2>/dev/null; }
}

# Every process case folder $1 may have left: the first relay, each one a
# takeover started, the hanging program.
started() {
    cat "$1/first" "$1/hangs.pids" 2>/dev/null || true
    sed -n 's/.*takeover: started .* as pid \([0-9]*\)$/\1/p' "$1/relay.log" 2>/dev/null || true
}

# Stops those of case folder $1 still running: TERM, then KILL after 5 s.
stop() {
    local pid left=()
    for pid in $(started "$1"); do
        alive "$pid" && ours "$pid" "$1" && kill -TERM "$pid" 2>/dev/null && left+=("$pid")
    done
    for _ in $(seq 50); do
        for pid in "${left[@]}"; do alive "$pid" && sleep 0.1 && continue 2; done
        return 0
    done
    for pid in "${left[@]}"; do alive "$pid" && ours "$pid" "$1" && kill -KILL "$pid" 2>/dev/null; done
    return 0
}

cleanup() {
    local status=$? case
    [ -z "${tool:-}" ] || kill "$tool" 2>/dev/null || true
    for case in "$work"/*/; do
        [ -d "$case" ] && stop "${case%/}"
    done
    if [ "$status" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "takeover: FAILED; the relay's log and the tool's output are in $work"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "takeover: $*"
    echo "--- $dir/relay.log, the end:"
    tail -20 "$dir/relay.log"
    exit 1
}

fd_count() {
    find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}

metrics() {
    exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
    printf 'GET /metrics HTTP/1.1\r\nHost: takeover\r\nConnection: close\r\n\r\n' >&3
    timeout 5 cat <&3 || true
    exec 3<&-
}

# run NAME ROOMS RATE PLAN [TOOL FLAGS]: a relay of its own, the tool against
# it, then the checks from outside.
run() {
    local name=$1 rooms=$2 rate=$3 plan=$4
    shift 4
    dir=$work/$name
    mkdir -p "$dir/bin"
    local binary=$dir/ws-relay
    cp target/release/ws-relay "$binary"
    cp target/release/ws-relay "$dir/bin/good"
    printf '#!/bin/sh\nexit 1\n' >"$dir/bin/exits"
    # exec: the relay's kill reaches the sleep itself, which is the relay's
    # to reap; its pid is kept to check that it did.
    printf '#!/bin/sh\necho $$ >>"%s/hangs.pids"\nexec sleep 60\n' "$dir" >"$dir/bin/hangs"
    # A relay that says hello, then cannot receive the connections' sockets.
    printf '#!/bin/sh\nulimit -n 30\nexec "%s/bin/good" "$@"\n' "$dir" >"$dir/bin/refuses"
    chmod +x "$dir/bin/exits" "$dir/bin/hangs" "$dir/bin/refuses"
    RUST_LOG=info "$binary" --listen 127.0.0.1:0 --pid-file "$dir/pid" --max-pending 16777216 \
        >"$dir/relay.out" 2>"$dir/relay.log" &
    local first=$!
    echo "$first" >"$dir/first"
    for _ in $(seq 100); do
        grep -q '^listening on ' "$dir/relay.out" 2>/dev/null && [ -s "$dir/pid" ] && break
        sleep 0.05
    done
    addr=$(sed -n '1s/^listening on //p' "$dir/relay.out")
    [ -n "$addr" ] || fail "the relay did not start"
    local fds0
    fds0=$(fd_count "$first")

    # In the background, so that a signal to this script is acted on at once.
    target/release/ws-relay-load --addr "$addr" --mode takeover --rooms "$rooms" --clients 8 --rate "$rate" \
        --size 200 --lag-mib 8 --takeover-plan "$plan" --binary "$binary" --binaries "$dir/bin" \
        --pid-file "$dir/pid" "$@" >"$dir/load.txt" 2>&1 &
    tool=$!
    tail -s 0.1 -n +1 -f --pid="$tool" "$dir/load.txt" &
    local shown=$! status=0
    wait "$tool" || status=$?
    tool=
    wait "$shown"
    [ "$status" -eq 0 ] || fail "the load tool failed"

    local final goods fails refusals took_over failed thawed pid held conns exe chain
    final=$(cat "$dir/pid")
    goods=$(tr ',' '\n' <<<"$plan" | grep -c '^good$' || true)
    fails=$(tr ',' '\n' <<<"$plan" | grep -vc '^good$' || true)
    refusals=$(tr ',' '\n' <<<"$plan" | grep -c '^refuses$' || true)
    alive "$final" || fail "pid $final from the pid file is not running"
    if [ "$final" = "$first" ] || alive "$first"; then
        fail "the first relay, pid $first, still serves"
    fi
    wait "$first" || fail "the first relay, pid $first, exited with $?"
    # The file at the scratch path when it took over; replaced since if a
    # failing step came after.
    exe=$(readlink "/proc/$final/exe")
    [ "$exe" = "$binary" ] || [ "$exe" = "$binary (deleted)" ] || fail "pid $final runs $exe, not $binary"
    cmp -s "/proc/$final/exe" "$dir/bin/good" || fail "pid $final does not run the relay put at $binary"
    for pid in $(started "$dir"); do
        [ "$pid" = "$final" ] || ! alive "$pid" || fail "pid $pid, an earlier relay or a failed successor, still runs"
    done
    # Failed successors are the relay's children, the hanging one's sleep
    # among them: it must have reaped them, not only killed them.
    for pid in $(sed -n 's/.*takeover failed, serving on: pid \([0-9]*\) .*/\1/p' "$dir/relay.log") \
        $(cat "$dir/hangs.pids" 2>/dev/null); do
        [ ! -e "/proc/$pid" ] || fail "pid $pid, a failed successor, is left ($(tr '\0' ' ' <"/proc/$pid/cmdline"))"
    done
    took_over=$(grep -c 'took over: this is takeover' "$dir/relay.log" || true)
    failed=$(grep -c 'takeover failed, serving on' "$dir/relay.log" || true)
    # Only a successor that said hello had the relay freeze and hand over.
    thawed=$(grep -c 'takeover failed, serving on: pid [0-9]* did not take the state' "$dir/relay.log" || true)
    if [ "$took_over" -ne "$goods" ] || [ "$failed" -ne "$fails" ] || [ "$thawed" -ne "$refusals" ]; then
        fail "the log shows $took_over takeovers and $failed failed ones ($thawed after the state was sent)," \
            "not $goods and $fails ($refusals)"
    fi
    metrics | grep -qx "ws_relay_takeovers_total $goods" || fail "/metrics does not count $goods takeovers"
    # With every client connected, as the tool counted them at the end, and
    # once they have left.
    read -r held conns < <(sed -n 's/.* holds \([0-9]*\) descriptors for \([0-9]*\) connections.*/\1 \2/p' "$dir/load.txt") ||
        fail "the tool did not count the relay's descriptors"
    [ "$held" -le $((conns + fds0 + 2)) ] || fail "pid $final held $held descriptors for $conns connections, idle $fds0"
    for _ in $(seq 100); do
        [ "$(fd_count "$final")" -le "$fds0" ] && break
        sleep 0.05
    done
    [ "$(fd_count "$final")" -le "$fds0" ] ||
        fail "pid $final holds $(fd_count "$final") descriptors with no client; the first relay held $fds0"
    chain=$(sed -n 's/.*takeover: pid \([0-9]*\) serves.*/\1/p' "$dir/relay.log" | paste -sd' ' | sed 's/ / -> /g')
    echo "takeover ($name): pids $first -> $chain; $goods takeovers, $fails failed successors outlived;" \
        "descriptors $held for $conns connections, $fds0 idle; pauses the relay logged:" \
        "$(sed -n 's/.*after a pause of \([^;]*\);.*/\1/p' "$dir/relay.log" | paste -sd' ')"
    stop "$dir"
}

run ci 25 30 good,good,good,exits,hangs,refuses
if [ -n "${GAP:-}" ]; then
    # 2,000 clients sending each report alone would need seven writes a report
    # from the relay and seven reads from the tool, more than two cores carry
    # beside each other; in bursts a room costs one of each per receiver.
    run gap 250 "${GAP_RATE:-30}" good,good,good --room-bursts
    echo "takeover (gap, 2,000 clients at ${GAP_RATE:-30} Hz): per step, the longest delivery gap and the highest latency" \
        "(in the 2 s before):" \
        "$(sed -n 's/.*gap was \([0-9.]*\) ms and the highest latency \([0-9.]*\) ms (\([0-9.]*\) and \([0-9.]*\) ms before it).*/\1 ms, \2 ms (\3, \4)/p' \
            "$work/gap/load.txt" | paste -sd';' | sed 's/;/; /g')"
fi
