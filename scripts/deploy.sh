#!/usr/bin/env bash
# Tests the deployment files in deploy/ as shipped: the relay behind nginx
# (deploy/nginx.conf) and behind Caddy (deploy/Caddyfile), each terminating TLS
# with a throwaway self-signed certificate on a free loopback port, runs the
# seed's three-client exchange through wss://localhost:PORT/ws-relay/spacewar
# and checks from the relay's log that it saw the full request target as the
# room. Then checks the systemd unit (deploy/ws-relay.service) with
# `systemd-analyze verify` and `security`, and checks every system call and
# socket family the relay used behind nginx (traced with strace) against the
# unit's SystemCallFilter= and RestrictAddressFamilies=.
#
# Run from anywhere, as root or with sudo, on Debian: installs nginx, caddy,
# openssl, curl, strace and systemd with apt (WS_RELAY_DEPLOY_NO_APT=1 skips
# that), and builds the relay (WS_RELAY_BIN=path uses a built one instead). Everything else lives in a temporary folder removed on exit. On a
# machine whose package scripts start services, installing nginx and caddy
# starts the system's own instances (port 80); this test does not use them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

sudo=
[ "$(id -u)" = 0 ] || sudo=sudo

if [ "${WS_RELAY_DEPLOY_NO_APT:-}" != 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    pkgs=(nginx openssl curl strace systemd python3 python3-venv)
    if apt-cache show caddy >/dev/null 2>&1; then pkgs+=(caddy); fi
    $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

name=deploy.sh
# shellcheck source=scripts/proxy.sh
source scripts/proxy.sh
scratch

# Waits until something answers HTTPS on port $1 (any status will do).
wait_https() {
    for _ in $(seq 100); do
        curl -ks -o /dev/null --max-time 1 "https://localhost:$1/" && return 0
        sleep 0.1
    done
    return 1
}

if [ -n "${WS_RELAY_BIN:-}" ]; then
    relay_bin=$(realpath "$WS_RELAY_BIN")   # a relay built elsewhere
else
    echo "== building the relay"
    cargo build --release --quiet --bin ws-relay
    relay_bin=$repo/target/release/ws-relay
fi

echo "== self-signed certificate, websockets 15.0.1"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "websockets==15.0.1"

ping_interval=1
# Starts the relay (under strace when $1 is "trace"), logging at debug to
# $tmp/relay-$2.log; sets $relay_port, $relay_pid and $relay_job (the process to
# wait for: strace, or the relay).
start_relay() {
    local name=$2 wrap=()
    [ "$1" = trace ] && wrap=(strace -f -qq -o "$tmp/relay-$name.strace")
    RUST_LOG=debug "${wrap[@]}" "$relay_bin" --listen 127.0.0.1:0 --pid-file "$tmp/relay-$name.pid" \
        --ping-interval "${ping_interval}s" --ping-timeout 2s \
        >"$tmp/relay-$name.out" 2>"$tmp/relay-$name.log" &
    relay_job=$!
    pids+=("$relay_job")
    for _ in $(seq 200); do
        grep -q '^listening on ' "$tmp/relay-$name.out" 2>/dev/null && break
        sleep 0.05
    done
    relay_port=$(sed -n 's/^listening on .*://p' "$tmp/relay-$name.out")
    [ -n "$relay_port" ] || fail "the relay did not start"
    relay_pid=$relay_job
    if [ "$1" = trace ]; then
        relay_pid=$(pgrep -P "$relay_job")
        pids=("$relay_pid" "${pids[@]}")
    fi
}

# The checks common to both proxies, on proxy port $1 and relay log $2.
check_through_proxy() {
    local port=$1 log=$2 head
    head=$(curl -ks -D - -o /dev/null --max-time 5 "https://localhost:$port/ws-relay/")
    grep -q '^HTTP/[0-9.]* 426' <<<"$head" || fail "plain GET /ws-relay/ through the proxy: $(head -n1 <<<"$head")"
    grep -qi '^Sec-WebSocket-Version: 13' <<<"$head" || fail "the 426 lacks Sec-WebSocket-Version: 13"
    echo "  ok: plain GET https://localhost:$port/ws-relay/ gets the relay's 426 with Sec-WebSocket-Version: 13"

    timeout 120 "$tmp/venv/bin/python" scripts/deploy/exchange.py \
        "wss://localhost:$port" "127.0.0.1:$relay_port" "$relay_pid" "$ping_interval" ||
        fail "the exchange through the proxy"
    local rc=0
    wait "$relay_job" || rc=$?
    [ "$rc" = 0 ] || fail "the relay exited with $rc after SIGTERM"

    local rooms
    # "#slot.generation joined room=\"ROOM\" id=N"
    rooms=$(sed -n -e 's/.* joined room="\(.*\)" id=[0-9]*$/\1/p' "$log" |
        sort -u | tr '\n' ' ')
    [ "$rooms" = "/ws-relay/spacewar /ws-relay/spacewar?game=2 " ] ||
        fail "the relay's rooms were '$rooms', not '/ws-relay/spacewar /ws-relay/spacewar?game=2'"
    local joins
    joins=$(grep -c ' joined ' "$log")
    [ "$joins" = 5 ] || fail "the relay logged $joins joins, not 5"
    echo "  ok: the relay's log names exactly the rooms /ws-relay/spacewar and /ws-relay/spacewar?game=2 (5 joins)"
}

summary=()

# Runs proxy NAME (the command after OUT, its output to OUT) on PORT, checks
# the relay through it against the relay log LOG, and stops it.
check_proxy() {
    local name=$1 port=$2 log=$3 out=$4
    shift 4
    "$@" >"$out" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_https "$port" || fail "$name did not start"
    check_through_proxy "$port" "$log"
    kill "$pid"
    wait "$pid" || true
    summary+=("$name: passed")
}

echo "== nginx $(nginx -v 2>&1 | sed 's|.*/||'): deploy/nginx.conf"
start_relay trace nginx
# A takeover first, as `systemctl reload` does it, so the trace checked
# against the unit's sandbox below covers it, and nginx talks to the new process.
"$relay_bin" --takeover "$relay_pid" 2>>"$tmp/relay-nginx.log" || fail "the takeover before the nginx run"
relay_pid=$(cat "$tmp/relay-nginx.pid")
pids=("$relay_pid" "${pids[@]}")
echo "  ok: ws-relay --takeover: pid $relay_pid serves now"
port=$(free_port)
mkdir -p "$tmp/nginx"
cp deploy/nginx.conf "$tmp/nginx/ws-relay.conf"
subst "$tmp/nginx/ws-relay.conf" '^\( *\)listen 443 ssl;' "\1listen 127.0.0.1:$port ssl;"
subst "$tmp/nginx/ws-relay.conf" '^ *listen \[::\]:443 ssl;' ''
subst "$tmp/nginx/ws-relay.conf" '/etc/letsencrypt/live/yourserver.example.com/fullchain.pem' "$tmp/cert.pem"
subst "$tmp/nginx/ws-relay.conf" '/etc/letsencrypt/live/yourserver.example.com/privkey.pem' "$tmp/key.pem"
subst "$tmp/nginx/ws-relay.conf" 'proxy_pass http://127.0.0.1:7927;' "proxy_pass http://127.0.0.1:$relay_port;"
cat >"$tmp/nginx/nginx.conf" <<EOF
# Test-only outer configuration: the shipped file, included at the http level.
daemon off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log info;
events { worker_connections 256; }
http {
    access_log $tmp/nginx/access.log;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    include $tmp/nginx/ws-relay.conf;
}
EOF
nginx -t -q -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" || fail "nginx -t"
check_proxy nginx "$port" "$tmp/relay-nginx.log" "$tmp/nginx/stderr.log" \
    nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf"

echo "== systemd unit: deploy/ws-relay.service"
cp "$relay_bin" "$tmp/ws-relay"
sed "s|^\(Exec[A-Za-z]*\)=/usr/local/bin/ws-relay|\1=$tmp/ws-relay|" deploy/ws-relay.service >"$tmp/ws-relay.service"
grep -q "^ExecStart=$tmp/ws-relay\$" "$tmp/ws-relay.service" || fail "deploy/ws-relay.service: no ExecStart=/usr/local/bin/ws-relay"
grep -q "^ExecReload=$tmp/ws-relay --takeover \$MAINPID\$" "$tmp/ws-relay.service" ||
    fail "deploy/ws-relay.service: no ExecReload=/usr/local/bin/ws-relay --takeover \$MAINPID"
systemd-analyze verify --man=no "$tmp/ws-relay.service" || fail "systemd-analyze verify"
echo "  ok: systemd-analyze verify"
exposure=$(systemd-analyze security --offline=yes --threshold=20 "$tmp/ws-relay.service" 2>&1 |
    sed -n 's/.*Overall exposure level for ws-relay.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "systemd-analyze security: exposure $exposure, over 2.0"
echo "  ok: systemd-analyze security --offline: exposure $exposure (at most 2.0)"
python3 scripts/deploy/syscalls.py "$tmp/relay-nginx.strace" deploy/ws-relay.service ||
    fail "the relay, as traced behind nginx, would break in the unit's sandbox"
echo "  ok: every system call and socket family the relay used behind nginx passes the unit's filters"
summary+=("systemd unit: verified, exposure $exposure, sandbox filters pass")

if command -v caddy >/dev/null; then
    echo "== caddy $(caddy version | cut -d' ' -f1): deploy/Caddyfile"
    start_relay plain caddy
    port=$(free_port)
    mkdir -p "$tmp/caddy"
    cp deploy/Caddyfile "$tmp/caddy/Caddyfile.site"
    subst "$tmp/caddy/Caddyfile.site" '^yourserver.example.com {' \
        "https://localhost:$port {\n\tbind 127.0.0.1\n\ttls $tmp/cert.pem $tmp/key.pem"
    subst "$tmp/caddy/Caddyfile.site" 'reverse_proxy /ws-relay/\* localhost:7927' \
        "reverse_proxy /ws-relay/* localhost:$relay_port"
    cat >"$tmp/caddy/Caddyfile" <<EOF
# Test-only global options: no admin endpoint, no port 80 listener, state in $tmp.
{
	admin off
	auto_https disable_redirects
	http_port $(free_port)
	storage file_system $tmp/caddy/data
}
import $tmp/caddy/Caddyfile.site
EOF
    check_proxy caddy "$port" "$tmp/relay-caddy.log" "$tmp/caddy/caddy.log" \
        env HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy/config" XDG_DATA_HOME="$tmp/caddy/data" \
        caddy run --config "$tmp/caddy/Caddyfile" --adapter caddyfile
else
    echo "== caddy: not installable here, deploy/Caddyfile untested"
    summary+=("caddy: NOT TESTED (no caddy package)")
fi

echo "== summary"
printf '  %s\n' "${summary[@]}"
