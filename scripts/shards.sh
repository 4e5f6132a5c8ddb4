#!/usr/bin/env bash
# What shards cost and bring: the same relay binary with each `--threads` in
# THREADS (default "1 2"), taking turns in each of ROUNDS rounds (default 3), on
#  - the game load (64 rooms × 8 clients × 30 Hz × 200 B): relay CPU per
#    delivery at a fixed load, which must stay within 10% of one shard's (two
#    shards share nothing per message);
#  - the ramp (16 rooms × 16 clients × 200 B): the highest rate with loss
#    ≤ 1% and p99 ≤ 50 ms;
#  - connect: 2,000 clients one at a time to 64 rooms on an idle relay, the
#    time from connecting to the 101 response (about half of them are handed
#    from the shard that accepted them to the one that serves their room).
# Nothing is pinned: on a 2-core machine the load tool needs a core too, so
# the ramp of two shards measures what one core and a half can do.
# Prints the medians; every run is in target/shards/results.jsonl.
#
#   bash scripts/shards.sh
#   ROUNDS=5 THREADS="1 8 16" bash scripts/shards.sh   # on a bigger machine
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/shards
mkdir -p "$out"
: >"$out/results.jsonl"
cargo build --release --quiet --features load --bins
load="target/release/ws-relay-load --json"
port=19927

run() {
    local threads=$1 name=$2
    shift 2
    local flags="--threads $threads"
    [ "$name" = ramp ] && flags="$flags --flood-messages 1000000 --flood-burst 1000000 --flood-bytes 1000000000"
    # shellcheck disable=SC2086
    target/release/ws-relay --listen "127.0.0.1:$port" $flags >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    echo "== round $round: --threads $threads: $name" >&2
    $load --addr "127.0.0.1:$port" --relay-pid "$pid" "$@" |
        sed "s/^{/{\"threads\":$threads,\"scenario\":\"$name\",\"round\":$round,/" >>"$out/results.jsonl"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    port=$((port + 1))
}

for round in $(seq "${ROUNDS:-3}"); do
    for threads in ${THREADS:-1 2}; do
        run "$threads" game --rooms 64 --clients 8 --rate 30 --size 200 --warmup 3 --duration 10
    done
    for threads in ${THREADS:-1 2}; do
        run "$threads" ramp --mode ramp --rooms 16 --clients 16 --size 200 --rate 40 --ramp-factor 1.5 --warmup 1 --duration 5
    done
    for threads in ${THREADS:-1 2}; do
        run "$threads" connect --mode connect --connections 2000 --rooms 64
    done
done

python3 - "$out/results.jsonl" ${THREADS:-1 2} <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads = [int(t) for t in sys.argv[2:]]
def med(t, scenario, key, mode=None):
    vals = [r[key] for r in rows if r["threads"] == t and r["scenario"] == scenario
            and (mode is None or r.get("mode") == mode) and r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
print("| measure | " + " | ".join(f"--threads {t}" for t in threads) + " | " +
      " | ".join(f"{t} against {threads[0]}" for t in threads[1:]) + " |")
print("|" + " --- |" * (2 * len(threads)))
def line(name, scenario, key, fmt, mode=None, diff=False):
    vals = [med(t, scenario, key, mode) for t in threads]
    rel = [f"+{v - vals[0]:.0f} µs" if diff else f"{v / vals[0]:.2f}×" for v in vals[1:]]
    print(f"| {name} | " + " | ".join(fmt.format(v) for v in vals) + " | " + " | ".join(rel) + " |")
line("game: relay CPU per delivery", "game", "relay_us_per_delivery", "{:.2f} µs")
line("game: p50 latency", "game", "p50_ms", "{:.3f} ms")
line("game: p99 latency", "game", "p99_ms", "{:.2f} ms")
line("ramp: highest rate held", "ramp", "deliveries_per_s", "{:,.0f} deliveries/s", "ramp-best")
line("ramp: load tool CPU at that rate", "ramp", "tool_cpu_s", "{:.1f} s", "ramp-best")
line("connect to 101, p50", "connect", "p50_us", "{:.0f} µs", diff=True)
line("connect to 101, p99", "connect", "p99_us", "{:.0f} µs", diff=True)
PY
