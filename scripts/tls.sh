#!/usr/bin/env bash
# What native TLS costs against TLS ended by nginx in front of the relay, and
# against plain ws://. The comparison's game load (64 rooms × 8 clients ×
# 30 Hz × 200 B, as scripts/ab.sh runs it: 2 s warm-up, 6 s measured) in
# three setups, taking turns for ROUNDS rounds (default 3):
#
#   native  wss:// to `ws-relay --tls-listen` (rustls in the relay's loop)
#   nginx   wss:// to nginx (deploy/nginx.conf, substituted as scripts/deploy.sh
#           does it: listen address, certificate paths, relay port), which
#           forwards ws:// to the plain relay
#   plain   ws:// to the relay, the reference
#
# The server side gets core 0 (`taskset -c 0`): the relay (`--threads 1`), and
# for nginx also its master and its one worker (`worker_processes 1`); the
# load tool gets core 1. Both TLS setups use one throwaway certificate
# (openssl, RSA 2048) and the load tool's rustls client, so they negotiate
# the same protocol and cipher suite (printed). Server CPU is the relay's plus
# nginx's master's and worker's, read from /proc over the measured run. The
# table gives the median of the rounds, and the ratios native/nginx.
#
# Then a check, not a measurement: the certificate reloaded under load. The
# relay serves a smaller game load (32 rooms × 8 clients × 30 Hz × 200 B, 1 s
# warm-up, RELOAD_SECONDS measured, default 4) and connect/close churn, both
# over native TLS, while the script swaps its certificate and key files
# between two certificates (RSA 2048 and ECDSA P-256; the load tool trusts
# both) and sends SIGHUP every ~200 ms; once the key file is garbage and once
# the key is the other certificate's. After every SIGHUP the relay's log must
# say it reloaded, or for the two bad ones that it keeps the certificate it
# has and why, and a new connection (openssl s_client, verifying) must be
# served the certificate of the files, or for the bad ones the previous one.
# It fails unless the load lost nothing, the churn never failed a handshake,
# the relay is alive at the end, and a fresh connection after the last reload
# gets the certificate now in the file.
#
#   bash scripts/tls.sh               # about 2 minutes
#   ROUNDS=5 bash scripts/tls.sh
#   RELOAD_ONLY=1 bash scripts/tls.sh # the reload check alone (or ROUNDS=0), 10 s
#
# Installs nginx and openssl with apt if they are missing (nginx only for the
# measured rounds). Results: target/tls/results.jsonl, and the table in
# target/tls/table.md (left as they are when the rounds are skipped); the
# reload check's load result in target/tls/reload.json.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
if [ -n "${RELOAD_ONLY:-}" ] && [ "$RELOAD_ONLY" != 0 ]; then
    rounds=0
fi
reload_seconds=${RELOAD_SECONDS:-4}
out=target/tls
mkdir -p "$out"
if [ "$rounds" -gt 0 ]; then
    : >"$out/results.jsonl"
fi

missing=()
if [ "$rounds" -gt 0 ] && ! command -v nginx >/dev/null; then
    missing+=(nginx)
fi
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --quiet --features load --bins

name=tls.sh
# shellcheck source=scripts/proxy.sh
source scripts/proxy.sh
scratch
trap 'exit 130' INT TERM

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

# Starts the relay on core 0 with the flags given; sets $relay_pid, $plain_addr
# and $tls_addr (empty without TLS).
start_relay() {
    # Gone before the relay starts: the shell opens the new one in the
    # background, and the wait below must not read the last relay's address.
    rm -f "$tmp/relay.out"
    taskset -c 0 target/release/ws-relay --threads 1 --listen 127.0.0.1:0 "$@" \
        >"$tmp/relay.out" 2>"$tmp/relay.log" &
    relay_pid=$!
    pids+=("$relay_pid")
    local want='^listening on '
    [ $# -gt 0 ] && want='^tls on '
    for _ in $(seq 200); do
        grep -q "$want" "$tmp/relay.out" 2>/dev/null && break
        sleep 0.05
    done
    plain_addr=$(sed -n 's/^listening on //p' "$tmp/relay.out")
    tls_addr=$(sed -n 's/^tls on //p' "$tmp/relay.out")
    [ -n "$plain_addr" ] || fail "the relay did not start: $(cat "$tmp/relay.out" "$tmp/relay.log")"
}

stop() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# Starts nginx on core 0 in front of the relay at $plain_addr; sets
# $nginx_pid (the master), $worker_pid and $nginx_port.
start_nginx() {
    nginx_port=$(free_port)
    rm -rf "$tmp/nginx"
    mkdir -p "$tmp/nginx"
    cp deploy/nginx.conf "$tmp/nginx/ws-relay.conf"
    subst "$tmp/nginx/ws-relay.conf" '^\( *\)listen 443 ssl;' "\1listen 127.0.0.1:$nginx_port ssl;"
    subst "$tmp/nginx/ws-relay.conf" '^ *listen \[::\]:443 ssl;' ''
    subst "$tmp/nginx/ws-relay.conf" '/etc/letsencrypt/live/yourserver.example.com/fullchain.pem' "$tmp/cert.pem"
    subst "$tmp/nginx/ws-relay.conf" '/etc/letsencrypt/live/yourserver.example.com/privkey.pem' "$tmp/key.pem"
    subst "$tmp/nginx/ws-relay.conf" 'proxy_pass http://127.0.0.1:7927;' "proxy_pass http://$plain_addr;"
    # The outer configuration: one worker, connections for 512 players (two each,
    # as the shipped file's comment says), the rest as in scripts/deploy.sh.
    cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    # Debian's /etc/nginx/nginx.conf sets these at this level (with TLSv1 and
    # TLSv1.1 too, which OpenSSL 3 refuses anyway); without ssl_protocols,
    # nginx before 1.23.4 offers no TLS 1.3, and the comparison would be
    # TLS 1.2 against the relay's 1.3.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
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
    taskset -c 0 nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" \
        >"$tmp/nginx.log" 2>&1 &
    nginx_pid=$!
    pids+=("$nginx_pid")
    worker_pid=
    for _ in $(seq 200); do
        worker_pid=$(pgrep -P "$nginx_pid" | head -n1 || true)
        [ -n "$worker_pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && return 0
        sleep 0.05
    done
    fail "nginx did not start"
}

load=(taskset -c 1 target/release/ws-relay-load --json --rooms 64 --clients 8 --rate 30 --size 200 --warmup 2 --duration 6)

# Runs the load for setup $1 with the extra flags after it.
measure() {
    local setup=$1
    shift
    if ! "${load[@]}" "$@" >"$tmp/run.json" 2>"$tmp/run.err"; then
        fail "$setup, round $round: the load tool failed: $(tail -n 3 "$tmp/run.err")"
    fi
    local tls
    tls=$(sed -n 's/^TLS: //p' "$tmp/run.err" | head -n1)
    sed "s|^{|{\"setup\":\"$setup\",\"round\":$round,\"tls\":\"$tls\",|" "$tmp/run.json" >"$tmp/row.json"
    cat "$tmp/row.json" >>"$out/results.jsonl"
    python3 - "$tmp/row.json" "$setup" >&2 <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
tls = f" over {r['tls']}" if r["tls"] else ""
print(f"  {sys.argv[2]}{tls}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.2f} ms, "
      f"{r['server_us_per_delivery']:.2f} µs server CPU/delivery, {r['deliveries_per_s']} deliveries/s, "
      f"loss {100 * r['loss']:.3f}%, tool CPU {r['tool_cpu_percent']:.0f}%")
# A comparison of setups that do not all deliver everything compares nothing.
if r["loss"] != 0 or r["delivered"] != r["expected"]:
    sys.exit(f"tls.sh: {sys.argv[2]} delivered {r['delivered']} of {r['expected']}")
PY
}

# ---- the measured rounds ------------------------------------------------------

if [ "$rounds" -gt 0 ]; then
    started=$(date -u '+%Y-%m-%d %H:%M UTC')
    echo "== $(nginx -v 2>&1 | sed 's|.*/|nginx |'), $(openssl version | cut -d' ' -f1-2); load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    for round in $(seq "$rounds"); do
        echo "== round $round of $rounds" >&2

        start_relay --tls-listen 127.0.0.1:0 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"
        [ -n "$tls_addr" ] || fail "the relay printed no 'tls on' line"
        measure native --tls --tls-ca "$tmp/cert.pem" --addr "$tls_addr" --relay-pid "$relay_pid"
        stop "$relay_pid"

        start_relay
        start_nginx
        measure nginx --tls --tls-ca "$tmp/cert.pem" --addr "127.0.0.1:$nginx_port" \
            --relay-pid "$relay_pid" --proxy-pid "$nginx_pid" --proxy-pid "$worker_pid"
        stop "$nginx_pid" "$relay_pid"

        start_relay
        measure plain --addr "$plain_addr" --relay-pid "$relay_pid"
        stop "$relay_pid"
    done
    echo "== load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" >&2

    python3 - "$out/results.jsonl" "$started" "$rounds" <<'PY' | tee "$out/table.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
started, rounds = sys.argv[2], sys.argv[3]
def runs(setup):
    return [r for r in rows if r["setup"] == setup]
def med(setup, key):
    vals = [r[key] for r in runs(setup) if r.get(key) is not None]
    return statistics.median(vals) if vals else None
names = {
    "native": "native TLS (`--tls-listen`)",
    "nginx": "TLS ended by nginx (`deploy/nginx.conf`)",
    "plain": "plain ws://, no TLS",
}
print(f"{started}, {rounds} rounds, medians; 64 rooms × 8 clients × 30 Hz × 200 B; "
      "server side on core 0, load tool on core 1")
print()
print("| setup | server µs CPU/delivery | of which the relay | of which nginx | p50 ms | p99 ms | deliveries/s | delivered |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for s in ("native", "nginx", "plain"):
    proxy = med(s, "proxy_cpu_s")
    nginx_us = "—"
    if proxy is not None:
        nginx_us = f"{med(s, 'server_us_per_delivery') - med(s, 'relay_us_per_delivery'):.2f}"
    print(f"| {names[s]} | {med(s, 'server_us_per_delivery'):.2f} | {med(s, 'relay_us_per_delivery'):.2f} "
          f"| {nginx_us} | {med(s, 'p50_ms'):.3f} | {med(s, 'p99_ms'):.2f} "
          f"| {med(s, 'deliveries_per_s'):,.0f} | {100 * (1 - med(s, 'loss')):.2f}% |")
print()
def ratio(key):
    return med("native", key) / med("nginx", key)
per_round = [
    r["server_us_per_delivery"] / n["server_us_per_delivery"]
    for r in runs("native") for n in runs("nginx") if r["round"] == n["round"]
]
cpu, p50, p99 = ratio("server_us_per_delivery"), ratio("p50_ms"), ratio("p99_ms")
print(f"native/nginx: server CPU per delivery {cpu:.2f}× (rounds: {', '.join(f'{x:.2f}' for x in per_round)}), "
      f"p50 {p50:.2f}×, p99 {p99:.2f}×; native/plain: server CPU "
      f"{med('native', 'server_us_per_delivery') / med('plain', 'server_us_per_delivery'):.2f}×, "
      f"p50 {med('native', 'p50_ms') / med('plain', 'p50_ms'):.2f}×.")
suites = {s: sorted({r["tls"] for r in runs(s)}) for s in ("native", "nginx")}
if suites["native"] == suites["nginx"]:
    print(f"Both TLS setups negotiated {', '.join(suites['native'])}.")
else:
    print(f"WARNING: the TLS setups negotiated different parameters: native {suites['native']}, nginx {suites['nginx']}.")
print(f"Target (native at most 0.6× nginx's CPU, lower p50): CPU {'met' if cpu <= 0.6 else 'NOT met'}, "
      f"p50 {'met' if p50 < 1 else 'NOT met'}.")
PY
fi

# ---- the certificate reloaded under load --------------------------------------

# The SHA-256 fingerprint of the certificate in the PEM file named, or on stdin.
fingerprint() {
    openssl x509 -noout -fingerprint -sha256 "$@" | sed 's/.*=//'
}

# The fingerprint of the certificate a new connection to $tls_addr is served,
# verified (name included) against the certificates in $1; empty if the
# handshake or the verification fails.
served() {
    { timeout 10 openssl s_client -connect "$tls_addr" -servername localhost -verify_hostname localhost \
        -CAfile "$1" -verify_return_error </dev/null 2>/dev/null || true; } | { fingerprint 2>/dev/null || true; }
}

# How many lines of the relay's log contain $1.
logged() {
    grep -cF -- "$1" "$tmp/relay.log" || true
}

# Sends SIGHUP to the relay and waits for one more log line containing $1.
hup() {
    local before
    before=$(logged "$1")
    kill -HUP "$relay_pid"
    for _ in $(seq 300); do
        [ "$(logged "$1")" -gt "$before" ] && return 0
        sleep 0.01
    done
    fail "reload $reload: no new '$1' in the relay's log 3 s after SIGHUP"
}

# Puts $1 in place of the live file $2 in one rename, as a certificate
# renewal should, so the relay never reads half a file.
put() {
    cp "$1" "$2.new"
    mv -f "$2.new" "$2"
}

echo "== certificate reload under load: SIGHUP every ~200 ms for ${reload_seconds} s of game load and churn" >&2
dir=$tmp/reload
mkdir -p "$dir/live"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$dir/a.key" -out "$dir/a.pem" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -days 1 \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$dir/b.key" -out "$dir/b.pem" 2>/dev/null
cat "$dir/a.pem" "$dir/b.pem" >"$dir/ca.pem"
declare -A fp=([a]=$(fingerprint -in "$dir/a.pem") [b]=$(fingerprint -in "$dir/b.pem"))
if [ -z "${fp[a]}" ] || [ "${fp[a]}" = "${fp[b]}" ]; then
    fail "the two certificates have fingerprints '${fp[a]}' and '${fp[b]}'"
fi
# Text shaped like a key, with bytes that are none.
{
    echo '-----BEGIN PRIVATE KEY-----'
    head -c 900 /dev/urandom | base64
    echo '-----END PRIVATE KEY-----'
} >"$dir/garbage.key"
live_cert=$dir/live/cert.pem
live_key=$dir/live/key.pem
put "$dir/a.pem" "$live_cert"
put "$dir/a.key" "$live_key"
reload=0
start_relay --tls-listen 127.0.0.1:0 --tls-cert "$live_cert" --tls-key "$live_key"
[ -n "$tls_addr" ] || fail "the relay printed no 'tls on' line"
got=$(served "$dir/ca.pem")
[ "$got" = "${fp[a]}" ] || fail "at start the relay served '$got', not certificate a (${fp[a]})"

# Churn from the start: handshakes in flight across the reloads; and the game
# load, whose 256 clients connect while the first reloads happen and then
# keep their sessions through all the others.
taskset -c 1 target/release/ws-relay-load --mode churn --tls --tls-ca "$dir/ca.pem" --addr "$tls_addr" \
    --prefix /ws-relay/churn- --watchers 2 --concurrency 2 --duration "$((reload_seconds + 2))" --json \
    >"$dir/churn.json" 2>"$tmp/churn.log" &
churn_pid=$!
pids+=("$churn_pid")
taskset -c 1 target/release/ws-relay-load --tls --tls-ca "$dir/ca.pem" --addr "$tls_addr" --json \
    --rooms 32 --clients 8 --rate 30 --size 200 --warmup 1 --duration "$reload_seconds" --relay-pid "$relay_pid" \
    >"$out/reload.json" 2>"$tmp/load.log" &
load_pid=$!
pids+=("$load_pid")

current=a
good=0
bad=0
while kill -0 "$load_pid" 2>/dev/null; do
    reload=$((reload + 1))
    [ "$reload" -le 300 ] || fail "the load tool still runs after 300 reloads"
    next=b
    [ "$current" = b ] && next=a
    case $reload in
        5)
            # A garbage key: the relay keeps what it has and says why.
            put "$dir/$next.pem" "$live_cert"
            put "$dir/garbage.key" "$live_key"
            hup 'SIGHUP: keeping the current TLS certificate'
            why=$(grep -F 'SIGHUP: keeping the current TLS certificate' "$tmp/relay.log" | tail -n1)
            case $why in
                *"$live_key"*) ;;
                *) fail "the refusal of the garbage key does not name the key file: $why" ;;
            esac
            echo "  reload $reload, a garbage key: ${why#*SIGHUP: }" >&2
            bad=$((bad + 1))
            ;;
        9)
            # A key that is not the certificate's: kept as well.
            put "$dir/$next.pem" "$live_cert"
            put "$dir/$current.key" "$live_key"
            hup 'SIGHUP: keeping the current TLS certificate'
            why=$(grep -F 'SIGHUP: keeping the current TLS certificate' "$tmp/relay.log" | tail -n1)
            echo "  reload $reload, certificate $next with the key of $current: ${why#*SIGHUP: }" >&2
            bad=$((bad + 1))
            ;;
        *)
            put "$dir/$next.pem" "$live_cert"
            put "$dir/$next.key" "$live_key"
            hup 'SIGHUP: TLS certificate reloaded from'
            current=$next
            good=$((good + 1))
            ;;
    esac
    got=$(served "$dir/ca.pem")
    [ "$got" = "${fp[$current]}" ] ||
        fail "after reload $reload a new connection was served '$got', not certificate $current (${fp[$current]})"
    kill -0 "$relay_pid" 2>/dev/null || fail "the relay died at reload $reload"
    sleep 0.15
done
if ! wait "$load_pid"; then
    fail "the game load failed during the reloads: $(tail -n 3 "$tmp/load.log")"
fi
if ! wait "$churn_pid"; then
    fail "the churn failed during the reloads: $(tail -n 3 "$tmp/churn.log")"
fi
if [ "$bad" != 2 ] || [ "$good" -lt 10 ]; then
    fail "only $good good reloads (and $bad bad) while the load ran"
fi

# The last reload, with the load gone: a fresh connection gets the file's certificate.
next=b
[ "$current" = b ] && next=a
put "$dir/$next.pem" "$live_cert"
put "$dir/$next.key" "$live_key"
hup 'SIGHUP: TLS certificate reloaded from'
got=$(served "$dir/ca.pem")
want=$(fingerprint -in "$live_cert")
[ "$got" = "$want" ] || fail "after the last reload a fresh connection was served '$got', not the file's certificate ($want)"
kill -0 "$relay_pid" 2>/dev/null || fail "the relay is gone after the reloads"
if grep -q 'panicked' "$tmp/relay.log"; then
    fail "the relay panicked"
fi

python3 - "$out/reload.json" "$dir/churn.json" "$tmp/churn.log" "$good" "$bad" <<'PY' || fail "the reload check failed"
import json, re, sys
load = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
churn = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
good, bad = sys.argv[4], sys.argv[5]
# The churn tool says on stderr which TLS version it negotiated, and why a handshake failed.
failures = [l for l in open(sys.argv[3]) if l.strip() and not re.match(r"TLS: TLSv1_[23] \S+, ALPN http/1\.1$", l.strip())]
print(f"  {good} reloads and {bad} refused while {load['clients']} wss:// clients sent: {load['delivered']} of "
      f"{load['expected']} delivered (loss {100 * load['loss']:.3f}%), p99 {load['p99_ms']:.2f} ms, "
      f"max {load['max_ms']:.1f} ms; {churn['cycles']} churn handshakes", file=sys.stderr)
ok = True
if load["loss"] != 0 or load["delivered"] != load["expected"] or load["expected"] == 0:
    print(f"FAIL: the game load lost {load['expected'] - load['delivered']} of {load['expected']} deliveries", file=sys.stderr)
    ok = False
if churn["cycles"] == 0 or failures:
    print(f"FAIL: {churn['cycles']} churn cycles; the churn tool said: {''.join(failures)}", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
PY
echo "ok   certificate reload under load: nothing lost, bad files refused, the last certificate served" >&2
