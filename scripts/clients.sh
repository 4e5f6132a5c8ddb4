#!/usr/bin/env bash
# The seed's three-client exchange run by third-party clients: the Python
# `websockets` library, `python -m websockets` typed as a user would, and the
# Node `ws` package, alone and mixed. Installs them in target/clients.
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/clients
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ] || ! "$work/venv/bin/python" -c 'import websockets, prometheus_client' 2>/dev/null; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet "websockets==15.0.1" "prometheus_client==0.21.1"
fi
if [ ! -d "$work/node_modules/ws" ]; then
    echo '{"private": true}' >"$work/package.json"
    npm install --prefix "$work" --silent --no-audit --no-fund ws@8.18.0 >/dev/null
fi
# Node resolves `ws` from beside the script; the install itself stays under target/.
ln -sfn "$PWD/$work/node_modules" scripts/clients/node_modules

source scripts/lib.sh
start_relay
timeout 300 "$work/venv/bin/python" scripts/clients/seed_table.py "$addr" "$work/venv/bin/python" "$work"

# /metrics after a known exchange, read by the Prometheus client library's parser.
kill "$relay"
wait "$relay" 2>/dev/null || true
start_relay --metrics-listen 127.0.0.1:0
for _ in $(seq 100); do
    metrics=$(sed -n 's/^metrics on //p' "$work/relay.out")
    [ -n "$metrics" ] && break
    sleep 0.05
done
timeout 60 "$work/venv/bin/python" scripts/clients/metrics_check.py "$addr" "$metrics"
