#!/usr/bin/env bash
# The seed's three-client exchange run by third-party clients: the Python
# `websockets` library, `python -m websockets` typed as a user would, and the
# Node `ws` package, alone and mixed; then examples/backend.py against a relay
# that checks tokens; then the exchange again over wss:// to the relay's TLS
# port, with a certificate made with openssl for the run, which each client
# verifies, wss:// and ws:// clients mixed in one room. Installs them in
# target/clients (and openssl with apt if it is missing).
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

# examples/backend.py as the README walks through it: tokens and the server API.
kill "$relay"
wait "$relay" 2>/dev/null || true
printf 'a secret only the backend and the relay know\n' >"$work/secret"
printf 'an API key\n' >"$work/api-key"
start_relay --token-secret-file "$work/secret" --admin-listen 127.0.0.1:0 --api-key-file "$work/api-key"
for _ in $(seq 100); do
    admin=$(sed -n 's/^metrics on //p' "$work/relay.out")
    [ -n "$admin" ] && break
    sleep 0.05
done
timeout 120 "$work/venv/bin/python" scripts/clients/backend_check.py "$addr" "$admin" "$work/secret" "$work/api-key"

# The same exchange over wss://, to the relay's own TLS port, with a
# certificate made for this run: every client verifies it against that file
# (none is told to skip verification), each also refuses it without the file,
# and wss:// and ws:// clients share a room.
kill "$relay"
wait "$relay" 2>/dev/null || true
rm -rf "$work/tls"
make_certificate "$work/tls"
start_tls_relay "$work/tls"
timeout 300 "$work/venv/bin/python" scripts/clients/seed_table.py "$addr" "$work/venv/bin/python" "$work" \
    "$tls" "$work/tls/cert.pem"
