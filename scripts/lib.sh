# Sourced by the scripts: starts the release relay with the given flags on a
# free port, sets $relay (its pid) and $addr, and stops it when the script exits.
# Needs $work (a scratch folder) to be set.
start_relay() {
    cargo build --release --quiet --bin ws-relay
    # Removed first: the shell truncates it in the background job, and the
    # wait below must not read a previous relay's address meanwhile.
    rm -f "$work/relay.out"
    target/release/ws-relay --listen 127.0.0.1:0 "$@" >"$work/relay.out" 2>"$work/relay.log" &
    relay=$!
    trap 'kill $relay 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        grep -q '^listening on ' "$work/relay.out" 2>/dev/null && break
        sleep 0.05
    done
    addr=$(sed -n 's/^listening on //p' "$work/relay.out")
    [ -n "$addr" ] || { echo "the relay did not start:"; cat "$work/relay.log"; exit 1; }
}

# make_certificate DIR: a throwaway self-signed certificate for localhost and
# 127.0.0.1 (RSA 2048, one day), DIR/cert.pem and DIR/key.pem. Installs
# openssl if it is missing.
make_certificate() {
    if ! command -v openssl >/dev/null; then
        local sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssl >/dev/null
    fi
    mkdir -p "$1"
    openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}

# start_tls_relay DIR FLAGS...: start_relay with a TLS port too, serving the
# certificate make_certificate put in DIR; also sets $tls, its address.
start_tls_relay() {
    local dir=$1
    shift
    start_relay "$@" --tls-listen 127.0.0.1:0 --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem"
    tls=
    for _ in $(seq 100); do
        tls=$(sed -n 's/^tls on //p' "$work/relay.out")
        [ -n "$tls" ] && break
        sleep 0.05
    done
    [ -n "$tls" ] || { echo "the relay printed no 'tls on' line:"; cat "$work/relay.out" "$work/relay.log"; exit 1; }
}
