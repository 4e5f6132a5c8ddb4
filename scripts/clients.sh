#!/usr/bin/env bash
# The seed's three-client exchange run by third-party clients: the Python
# `websockets` library, `python -m websockets` typed as a user would, and the
# Node `ws` package, alone and mixed. Installs them in target/clients.
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/clients
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ] || ! "$work/venv/bin/python" -c 'import websockets' 2>/dev/null; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet "websockets==15.0.1"
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
