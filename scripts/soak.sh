#!/usr/bin/env bash
# Soak: well-behaved clients in rooms of 8 sending reports at 20 Hz, with
# misbehaving clients mixed in (silent, flooding, garbage, resetting mid-frame,
# trickling the handshake) that reconnect whenever the relay cuts them off.
# Fails unless every well-behaved client got every report addressed to it, in
# order, the relay's RSS stayed within 64 MiB of its start and, run again, came
# back to where the first round left it, and its descriptors came back to
# baseline.
#
#   bash scripts/soak.sh          # CI form: 200 + 10 clients, 10 s
#   LONG=1 bash scripts/soak.sh   # 2,000 + 20 clients (1%), 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/soak
mkdir -p "$work"
cargo build --release --quiet --features load --bin ws-relay-load
source scripts/lib.sh
if [ -n "${LONG:-}" ]; then
    start_relay --max-pending 16777216
    rooms=250 bad=20 seconds=60
else
    # A short handshake timeout so the tricklers are cut off within the run.
    start_relay --handshake-timeout 2s --max-pending 16777216
    rooms=25 bad=10 seconds=10
fi
# Twice against the same relay: the allocator keeps freed pages, so the first
# round sets the high-water mark and the second must come back to it, not grow.
for round in 1 2; do
    target/release/ws-relay-load --addr "$addr" --mode soak --rooms "$rooms" --clients 8 --rate 20 \
        --misbehaving "$bad" --duration "$seconds" --max-rss-growth-mib 64 --relay-pid "$relay" | tee "$work/round$round.txt"
done
end1=$(sed -n 's/.*relay RSS [0-9]* -> max [0-9]* -> \([0-9]*\) KiB.*/\1/p' "$work/round1.txt")
end2=$(sed -n 's/.*relay RSS [0-9]* -> max [0-9]* -> \([0-9]*\) KiB.*/\1/p' "$work/round2.txt")
if [ "$end2" -gt $((end1 + end1 / 10 + 1024)) ]; then
    echo "soak: relay RSS kept growing: $end1 KiB after round 1, $end2 KiB after round 2"
    exit 1
fi
echo "soak: relay RSS after round 1: $end1 KiB, after round 2: $end2 KiB (no growth)"
kill -TERM "$relay"
wait "$relay" || true
# The relay's own account of why connections ended.
grep -o 'totals: .*' "$work/relay.log" | tail -1
