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
