#!/usr/bin/env bash
# Tests deploy/haproxy.cfg as shipped: several relay nodes behind HAProxy, every
# room whole on one node. Starts four relays on free loopback ports
# (--proxy-protocol, RUST_LOG=debug, each with its own log and
# --metrics-listen; the fourth is not in the file) and two HAProxy balancers,
# lb1 and lb2, in master-worker mode (-W, as Debian's unit runs it with -Ws),
# each from the shipped file with only addresses, ports and paths substituted:
# the frontend's bind, the stats socket, the peers' and the relays' addresses,
# and the log target (stdout, into a file here). Then scripts/multinode/check.py
# checks, through the balancers, with the Python `websockets` client:
#   a. 50 rooms of 4 players: each room whole on one node (the nodes' logs and
#      /metrics), ids 1..4, every player hears its room-mates;
#   b. the seed's three-client exchange;
#   c. every player's own address and port in its node's log (PROXY protocol);
#   d. a fourth node added on both balancers through the runtime API (add
#      server, enable health, enable server; no reload): a fifth player of
#      every old room reaches its room, through either balancer; 50 new rooms
#      are whole, some of them on the new node; both balancers' tables agree;
#   e. one node SIGKILLed: its players are cut off, the others are not; once
#      the balancers mark it down, its rooms form again, whole, on survivors;
#   f. reloads and the stick table (reported, never a failure): lb1 reloaded
#      the master-worker way (SIGUSR2) after relay4's line was added to its
#      file; standalone HAProxies reloaded with -sf: with a local peer, 6 s and
#      1 s after their start, and without one (-L not given, hostname not a
#      peer); lb2 started again from nothing (learns from lb1). The players
#      held by lb1's old worker must stay connected.
#
# Run from anywhere, as root or with sudo, on Debian: installs haproxy and
# python3-venv with apt when missing (WS_RELAY_MULTINODE_NO_APT=1 skips that),
# websockets 15.0.1 in a venv under target/multinode/, and builds the relay
# (WS_RELAY_BIN=path uses a built one instead). Every process it starts and its
# temporary folder are removed on exit (WS_RELAY_MULTINODE_KEEP=1 keeps the
# folder, with every log). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

sudo=
[ "$(id -u)" = 0 ] || sudo=sudo

if [ "${WS_RELAY_MULTINODE_NO_APT:-}" != 1 ]; then
    missing=()
    command -v haproxy >/dev/null || missing+=(haproxy)
    python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

venv=target/multinode/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
    mkdir -p target/multinode
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "websockets==15.0.1"
fi

if [ -n "${WS_RELAY_BIN:-}" ]; then
    relay_bin=$(realpath "$WS_RELAY_BIN")
else
    echo "== building the relay"
    cargo build --release --quiet --bin ws-relay
    relay_bin=$repo/target/release/ws-relay
fi

name=multinode.sh
# free_port and subst; the scratch folder, its cleanup and fail are this script's own.
# shellcheck source=scripts/proxy.sh
source scripts/proxy.sh
tmp=$(mktemp -d /tmp/ws-relay-multinode.XXXXXX)
chmod 755 "$tmp"   # HAProxy's workers run as the haproxy user
pids=()
checker=
cleanup() {
    local pid
    if [ -n "$checker" ]; then   # first, so it starts nothing more
        kill "$checker" 2>/dev/null || true
        wait "$checker" 2>/dev/null || true
    fi
    # check.py records the HAProxy processes it starts itself in $tmp/pids.
    [ -f "$tmp/pids" ] && while read -r pid; do pids+=("$pid"); done <"$tmp/pids"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${WS_RELAY_MULTINODE_KEEP:-}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    for f in "$tmp"/*.log; do
        [ -s "$f" ] && { echo "--- $f (last lines)" >&2; tail -n 15 "$f" >&2; }
    done
    echo "== summary: FAIL" >&2
    exit 1
}

# Starts relay node $1 (relay1..relay4); sets ${relay_port[$1]} and ${metrics[$1]}.
declare -A relay_port metrics relay_pid
start_relay() {
    local name=$1 i
    RUST_LOG=debug "$relay_bin" --listen 127.0.0.1:0 --proxy-protocol \
        --metrics-listen 127.0.0.1:0 >"$tmp/$name.out" 2>"$tmp/$name.log" &
    relay_pid[$name]=$!
    pids+=("$!")
    disown "$!"   # check.py SIGKILLs one: no job notice for it
    for i in $(seq 200); do
        grep -q '^metrics on ' "$tmp/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    relay_port[$name]=$(sed -n 's/^listening on .*://p' "$tmp/$name.out")
    metrics[$name]=$(sed -n 's/^metrics on //p' "$tmp/$name.out")
    [ -n "${relay_port[$name]}" ] && [ -n "${metrics[$name]}" ] || fail "$name did not start"
}

echo "== $(haproxy -v | head -n1), relay nodes and balancers on 127.0.0.1"
for n in relay1 relay2 relay3 relay4; do start_relay "$n"; done

declare -A front peer sock
for lb in lb1 lb2 sf1 sf2 sf3; do
    front[$lb]=$(free_port)
    peer[$lb]=$(free_port)
    sock[$lb]=$tmp/$lb.sock
done

# The shipped file for balancer $1, with peer addresses for lb1 and lb2 of $2 and $3.
make_cfg() {
    local lb=$1 cfg=$tmp/$1.cfg
    cp deploy/haproxy.cfg "$cfg"
    subst "$cfg" '^\( *\)bind :80$' "\1bind 127.0.0.1:${front[$lb]}"
    subst "$cfg" '^\( *\)log /dev/log local0$' "\1log stdout format raw local0"
    subst "$cfg" ' /run/haproxy/admin.sock ' " ${sock[$lb]} "
    subst "$cfg" '^\( *\)peer lb1 192.0.2.1:10000$' "\1peer lb1 127.0.0.1:$2"
    subst "$cfg" '^\( *\)peer lb2 192.0.2.2:10000$' "\1peer lb2 127.0.0.1:$3"
    subst "$cfg" '^\( *server relay1\) 192.0.2.11:7927 ' "\1 127.0.0.1:${relay_port[relay1]} "
    subst "$cfg" '^\( *server relay2\) 192.0.2.12:7927 ' "\1 127.0.0.1:${relay_port[relay2]} "
    subst "$cfg" '^\( *server relay3\) 192.0.2.13:7927 ' "\1 127.0.0.1:${relay_port[relay3]} "
    ! grep -v '^ *#' "$cfg" | grep -q '192\.0\.2\.' || fail "$cfg: an address was left unsubstituted"
}
make_cfg lb1 "${peer[lb1]}" "${peer[lb2]}"
make_cfg lb2 "${peer[lb1]}" "${peer[lb2]}"
# Standalone balancers for the -sf reloads: peers of their own, the second
# peer's port unused; the relay4 line added, as the README says to once a node
# was added through the socket.
for lb in sf1 sf2 sf3; do make_cfg "$lb" "${peer[$lb]}" "$(free_port)"; done
relay3_line=$(grep '^ *server relay3 ' "$tmp/lb1.cfg")
add_args=$(sed -e 's/^ *server relay3 [^ ]* id 3 //' <<<"$relay3_line")
[ "$add_args" != "$relay3_line" ] || fail "deploy/haproxy.cfg: 'server relay3 ADDR id 3 ...' not found"
for lb in sf1 sf2 sf3; do
    echo "    server relay4 127.0.0.1:${relay_port[relay4]} id 4 $add_args" >>"$tmp/$lb.cfg"
done

haproxy -c -q -L lb1 -f "$tmp/lb1.cfg" || fail "haproxy -c -f lb1.cfg"
haproxy -c -q -L lb2 -f "$tmp/lb2.cfg" || fail "haproxy -c -f lb2.cfg"
haproxy -c -q -L lb1 -f "$tmp/sf1.cfg" || fail "haproxy -c -f sf1.cfg (relay4 added)"
echo "  ok: haproxy -c accepts the shipped file (substituted)"

declare -A master
for lb in lb1 lb2; do
    haproxy -W -L "$lb" -f "$tmp/$lb.cfg" >"$tmp/$lb.log" 2>&1 &
    master[$lb]=$!
    pids+=("$!")
done

cat >"$tmp/env.json" <<EOF
{
  "tmp": "$tmp",
  "balancers": {
    "lb1": {"url": "ws://127.0.0.1:${front[lb1]}", "sock": "${sock[lb1]}", "master": ${master[lb1]}, "cfg": "$tmp/lb1.cfg", "log": "$tmp/lb1.log"},
    "lb2": {"url": "ws://127.0.0.1:${front[lb2]}", "sock": "${sock[lb2]}", "master": ${master[lb2]}, "cfg": "$tmp/lb2.cfg", "log": "$tmp/lb2.log"}
  },
  "standalone": {
    "sf1": {"url": "ws://127.0.0.1:${front[sf1]}", "sock": "${sock[sf1]}", "cfg": "$tmp/sf1.cfg", "log": "$tmp/sf1.log"},
    "sf2": {"url": "ws://127.0.0.1:${front[sf2]}", "sock": "${sock[sf2]}", "cfg": "$tmp/sf2.cfg", "log": "$tmp/sf2.log"},
    "sf3": {"url": "ws://127.0.0.1:${front[sf3]}", "sock": "${sock[sf3]}", "cfg": "$tmp/sf3.cfg", "log": "$tmp/sf3.log"}
  },
  "nodes": {
$(for n in relay1 relay2 relay3 relay4; do
    printf '    "%s": {"id": %s, "port": %s, "pid": %s, "log": "%s", "metrics": "%s"}%s\n' \
        "$n" "${n#relay}" "${relay_port[$n]}" "${relay_pid[$n]}" "$tmp/$n.log" "${metrics[$n]}" \
        "$([ "$n" = relay4 ] || echo ,)"
done)
  },
  "add_server": "add server relays/relay4 127.0.0.1:${relay_port[relay4]} id 4 $add_args"
}
EOF

start=$SECONDS
# In the background, so that a signal to this script reaches the trap at once.
timeout 120 "$venv/bin/python" scripts/multinode/check.py "$tmp/env.json" &
checker=$!
rc=0
wait "$checker" || rc=$?
checker=
[ "$rc" = 0 ] || fail "scripts/multinode/check.py (exit $rc)"
echo "== summary: PASS ($((SECONDS - start)) s of checks)"
echo "  what reloads did to the stick table (HAProxy $(haproxy -v | sed -n 's/^HAProxy version \([^ ]*\).*/\1/p')):"
sed 's/^/    /' "$tmp/reload-report.txt"
