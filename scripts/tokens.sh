#!/usr/bin/env bash
# What checking a token costs per upgrade, end to end: the load tool's churn
# (connect, wait for `self`, close, 16 at a time, beside 4 watchers) against
# one relay shard without tokens and then with --token-secret-file, taking
# turns ROUNDS times (default 5); relay pinned to core 0, tool to core 1.
# Prints the median cycles/s and relay CPU per cycle of each.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin ws-relay
cargo build --release --quiet --features load --bin ws-relay-load
out=target/tokens
mkdir -p "$out"
: >"$out/results.jsonl"
printf 'a secret for the token benchmark\n' >"$out/secret"
port=19927
for round in $(seq "${ROUNDS:-5}"); do
    for side in off on; do
        flags=() load=()
        if [ "$side" = on ]; then
            flags=(--token-secret-file "$out/secret")
            load=(--token-secret-file "$out/secret")
        fi
        taskset -c 0 target/release/ws-relay --threads 1 --listen "127.0.0.1:$port" "${flags[@]}" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        taskset -c 1 target/release/ws-relay-load --json --mode churn --addr "127.0.0.1:$port" --relay-pid "$pid" \
            --duration "${DURATION:-5}" "${load[@]}" | sed "s/^{/{\"side\":\"$side\",/" >>"$out/results.jsonl"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        port=$((port + 1))
        echo "round $round: tokens $side done" >&2
    done
done
python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| tokens | rounds | upgrades/s | relay µs CPU per upgrade |")
print("| --- | --- | --- | --- |")
for side in ("off", "on"):
    rs = [r for r in rows if r["side"] == side]
    rate = statistics.median(r["cycles_per_s"] for r in rs)
    cpu = statistics.median(1e6 * r["relay_cpu_s"] / r["cycles"] for r in rs)
    print(f"| {side} | {len(rs)} | {rate:.0f} | {cpu:.1f} |")
PY
