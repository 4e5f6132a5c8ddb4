#!/usr/bin/env bash
# What permessage-deflate costs and saves on the game load's JSON reports
# (64 rooms × 8 clients × 30 Hz × 200 B by default): the load tool's deflate
# mode against one relay shard started with --deflate, first with clients
# that do not offer compression, then with clients that offer it as browsers
# do. Relay on core 0, tool on core 1, ROUNDS rounds (default 3), each with a
# fresh relay. Prints the medians: relay CPU per delivery, bytes on the wire
# per delivery and per report sent, p50/p99, and the on/off ratios.
# Results: target/deflate/results.jsonl and target/deflate/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --features load --bins
out=target/deflate
mkdir -p "$out"
: >"$out/results.jsonl"
size=${SIZE:-200}
for round in $(seq "${ROUNDS:-3}"); do
    rm -f "$out/relay.out"
    taskset -c 0 target/release/ws-relay --threads 1 --listen 127.0.0.1:0 --deflate >"$out/relay.out" 2>"$out/relay.log" &
    pid=$!
    addr=
    for _ in $(seq 200); do
        addr=$(sed -n 's/^listening on //p' "$out/relay.out" 2>/dev/null)
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "deflate.sh: the relay did not start" >&2; cat "$out/relay.log" >&2; exit 1; }
    taskset -c 1 target/release/ws-relay-load --json --mode deflate --addr "$addr" --relay-pid "$pid" \
        --rooms 64 --clients 8 --rate 30 --size "$size" --warmup 2 --duration 6 |
        sed "s/^{/{\"round\":$round,/" >>"$out/results.jsonl"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "round $round done" >&2
done
python3 - "$out/results.jsonl" "$size" <<'PY' | tee "$out/table.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(mode, key):
    return statistics.median(r[key] for r in rows if r["mode"] == mode)
print(f"64 rooms × 8 clients × 30 Hz × {sys.argv[2]} B JSON reports, {len(rows) // 3} rounds, medians")
print()
print("| permessage-deflate | relay µs CPU/delivery | wire bytes/delivery | wire bytes/report sent | p50 ms | p99 ms | delivered |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for mode, name in (("deflate-off", "off"), ("deflate-on", "on")):
    loss = med(mode, "loss")
    print(f"| {name} | {med(mode, 'relay_us_per_delivery'):.2f} | {med(mode, 'wire_bytes_per_delivery'):.1f} "
          f"| {med(mode, 'wire_bytes_per_send'):.1f} | {med(mode, 'p50_ms'):.3f} | {med(mode, 'p99_ms'):.2f} "
          f"| {100 * (1 - loss):.2f}% |")
for mode in ("deflate-off", "deflate-on"):
    if max(r["loss"] for r in rows if r["mode"] == mode) > 0:
        sys.exit(f"deflate.sh: {mode} lost messages")
print()
print(f"on/off: relay CPU per delivery {med('deflate-ratio', 'relay_cpu_per_delivery'):.2f}×, "
      f"bytes on the wire per delivery {med('deflate-ratio', 'bytes_per_delivery'):.2f}×")
PY
