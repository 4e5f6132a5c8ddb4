#!/usr/bin/env bash
# Does a change cost latency? Runs the comparison's game load (64 rooms × 8
# clients × 30 Hz × 200 B) against two relay binaries in turn, ROUNDS times
# each (default 7), relay pinned to core 0 and load tool to core 1, and prints
# the median of each figure for both. Taking turns spreads a shared machine's
# noise over both binaries alike; medians of several rounds keep one bad
# window from deciding.
#
#   bash scripts/ab.sh OLD_BINARY NEW_BINARY
#
# For example, against the commit before a change:
#   git worktree add /tmp/before HEAD~1 && (cd /tmp/before && cargo build --release --bin ws-relay)
#   bash scripts/ab.sh /tmp/before/target/release/ws-relay target/release/ws-relay
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { sed -n '2,14p' "$0"; exit 2; }
cargo build --release --quiet --features load --bin ws-relay-load
out=target/ab
mkdir -p "$out"
: >"$out/results.jsonl"
port=18927
for round in $(seq "${ROUNDS:-7}"); do
    for side in a b; do
        bin=$1
        [ "$side" = b ] && bin=$2
        # One shard on one core (an environment variable, which older binaries ignore).
        WS_RELAY_THREADS=1 taskset -c 0 "$bin" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        taskset -c 1 target/release/ws-relay-load --json --addr "127.0.0.1:$port" --relay-pid "$pid" \
            --rooms 64 --clients 8 --rate 30 --size 200 --warmup 2 --duration 6 |
            sed "s/^{/{\"side\":\"$side\",/" >>"$out/results.jsonl"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        port=$((port + 1))
        echo "round $round: $side done" >&2
    done
done
python3 - "$out/results.jsonl" "$1" "$2" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| binary | rounds | p50 ms | p99 ms | p99.9 ms | relay µs CPU/delivery | delivered |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for side, name in (("a", sys.argv[2]), ("b", sys.argv[3])):
    rs = [r for r in rows if r["side"] == side]
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"| {name} | {len(rs)} | {med('p50_ms'):.3f} | {med('p99_ms'):.2f} | {med('p999_ms'):.2f} "
          f"| {med('relay_us_per_delivery'):.2f} | {100 * (1 - med('loss')):.2f}% |")
PY
