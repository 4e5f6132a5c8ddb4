#!/usr/bin/env bash
# Side-by-side benchmark: ws-relay against the reference relays in
# ../shared/peers (tokio + tokio-tungstenite, Node + ws), in one run, on the
# same loads. Each relay runs pinned to core 0 (`taskset -c 0`), the load tool
# to core 1. Results: target/compare/results.jsonl and a Markdown table on
# stdout (and in target/compare/table.md).
#
# Each scenario runs ROUNDS times (default 3), the relays taking turns within
# a round so that a noisy neighbour on a shared machine hits all of them alike;
# the table gives the median of the rounds.
#
#   bash scripts/compare.sh            # the README's table (about 10 minutes)
#   QUICK=1 bash scripts/compare.sh    # one short round, for a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${PEERS:-../shared/peers}
out=target/compare
mkdir -p "$out"
: >"$out/results.jsonl"

cargo build --release --quiet --features load --bins
(cd "$peers/tokio-tungstenite" && cargo build --release -q)
(cd "$peers/node-ws" && { [ -d node_modules/ws ] || npm install --silent --no-audit --no-fund >/dev/null; })

if [ -n "${QUICK:-}" ]; then dur=3; warm=1; idle=2000; rounds=1; else dur=10; warm=3; idle=10000; rounds=${ROUNDS:-3}; fi
load="taskset -c 1 target/release/ws-relay-load --json"
port=17927

start() {
    case $1 in
        # One shard on its one core, like the references (scripts/shards.sh compares shard counts).
        ws-relay) WS_RELAY_THREADS=1 taskset -c 0 target/release/ws-relay --listen "127.0.0.1:$port" $relay_flags >/dev/null 2>&1 & ;;
        tokio-tungstenite) taskset -c 0 "$peers/tokio-tungstenite/run.sh" "$port" >/dev/null 2>&1 & ;;
        node-ws) taskset -c 0 "$peers/node-ws/run.sh" "$port" >/dev/null 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare: $1 did not start" >&2
    return 1
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    port=$((port + 1))
}

scenario() {
    local relay=$1 name=$2
    shift 2
    # The ramp measures capacity: lift ws-relay's flood control (1,000 messages/s
    # per client by default), which the references do not have.
    relay_flags=""
    [ "$name" = ramp ] && relay_flags="--flood-messages 1000000 --flood-burst 1000000 --flood-bytes 1000000000"
    start "$relay"
    echo "== round $round: $relay: $name" >&2
    if $load --addr "127.0.0.1:$port" --relay-pid "$pid" "$@" >"$out/run.json" 2>"$out/run.err"; then
        sed "s/^{/{\"relay\":\"$relay\",\"scenario\":\"$name\",\"round\":$round,/" "$out/run.json" >>"$out/results.jsonl"
    else
        echo "{\"relay\":\"$relay\",\"scenario\":\"$name\",\"round\":$round,\"error\":\"$(tail -1 "$out/run.err" | tr -d '"')\"}" >>"$out/results.jsonl"
    fi
    stop
}

relays="ws-relay tokio-tungstenite node-ws"
for round in $(seq "$rounds"); do
    for relay in $relays; do
        scenario "$relay" game --rooms 64 --clients 8 --rate 30 --size 200 --warmup "$warm" --duration "$dur"
    done
    for relay in $relays; do
        scenario "$relay" bigroom --rooms 1 --clients 200 --rate 5 --size 100 --warmup "$warm" --duration "$dur"
    done
    for relay in $relays; do
        scenario "$relay" ramp --mode ramp --rooms 16 --clients 16 --size 200 --rate 40 --ramp-factor 1.5 \
            --warmup 1 --duration "$((dur / 2 > 2 ? dur / 2 : 2))"
    done
    for relay in $relays; do
        scenario "$relay" idle --mode idle --connections "$idle" --clients 8 --duration 2
    done
    for relay in $relays; do
        scenario "$relay" churn --mode churn --watchers 4 --concurrency 16 --duration "$dur"
    done
done

python3 scripts/compare_table.py "$out/results.jsonl" | tee "$out/table.md"
