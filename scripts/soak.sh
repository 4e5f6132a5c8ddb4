#!/usr/bin/env bash
# Soak: well-behaved clients in rooms of 8 sending reports at 20 Hz, with
# misbehaving clients mixed in (silent, flooding, garbage, resetting mid-frame,
# trickling the handshake) that reconnect whenever the relay cuts them off.
# Fails unless every well-behaved client got every report addressed to it, in
# order, and the relay's RSS stayed within 64 MiB of its start and its
# descriptors came back to baseline.
#
#   bash scripts/soak.sh          # CI form: 200 + 10 clients, 10 s
#   LONG=1 bash scripts/soak.sh   # 2,000 + 20 clients (1%), 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/soak
mkdir -p "$work"
cargo build --release --quiet --bin ws-relay-load
source scripts/lib.sh
if [ -n "${LONG:-}" ]; then
    start_relay
    rooms=250 bad=20 seconds=60
else
    # A short handshake timeout so the tricklers are cut off within the run.
    start_relay --handshake-timeout 2s
    rooms=25 bad=10 seconds=10
fi
target/release/ws-relay-load --addr "$addr" --mode soak --rooms "$rooms" --clients 8 --rate 20 \
    --misbehaving "$bad" --duration "$seconds" --max-rss-growth-mib 64 --relay-pid "$relay"
kill -TERM "$relay"
wait "$relay" || true
# The relay's own account of why connections ended.
grep -o 'totals: .*' "$work/relay.log" | tail -1
