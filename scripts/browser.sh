#!/usr/bin/env bash
# Browser test: the demo page (web/index.html) and the browser helper
# (web/ws-relay.js) as the relay serves them, driven in headless Chromium by
# tests/browser/demo.test.mjs; and a strict type check of web/ws-relay.d.ts.
# Installs Chromium from Debian if it is missing, and playwright-core and
# TypeScript (versions pinned in tests/browser/package-lock.json) in a scratch
# folder. Saves a screenshot to target/browser/demo.png and prints it in base64.
# The relay also listens for TLS with a certificate made with openssl for the
# run (installed with apt if missing): the demo is loaded over https:// too and
# plays over wss://. Chromium accepts that certificate's key and no other
# untrusted one (--ignore-certificate-errors-spki-list); Node trusts the
# certificate itself (NODE_EXTRA_CA_CERTS).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

work=$(mktemp -d)
cleanup() {
    kill "${relay:-}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cp tests/browser/package.json tests/browser/package-lock.json tests/browser/demo.test.mjs "$work/"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error)

echo "--- type check of web/ws-relay.d.ts (tsc --strict)"
mkdir "$work/types"
cp web/ws-relay.d.ts web/ws-relay.js "$work/types/"
cat >"$work/types/check.ts" <<'EOF'
// Uses every declared member, the way a game would.
import WebSocketRelay, { WebSocketRelay as Named, relayUrl, type MessageHandler, type WebSocketRelayOptions } from './ws-relay.js';

const options: WebSocketRelayOptions = { reconnect: true, baseDelay: 500, maxDelay: 15000 };
const tokens: WebSocketRelayOptions[] = [{ token: 'jwt' }, { token: () => 'jwt' }, { token: async () => 'jwt' }, { resume: true }];
const relay: Named = new WebSocketRelay(new URL('https://example.com/game?x=1'), options);
const other = new WebSocketRelay('http://example.com/');
const bare = new WebSocketRelay();
const wsUrl: string = relayUrl('https://example.com/game') + relayUrl(new URL('http://example.com/')) + relay.url;
const id: string | null = relay.id;
const ready: Promise<string> = relay.ready;
const peers: string[] = relay.peers;
const flags: boolean = relay.connected && relay.closed;
const ws: WebSocket | null = relay.ws;
const sent: boolean = relay.send('report {}') && relay.send('hello', '2') && relay.send('hi', 3);
const sentBinary: boolean = relay.sendBinary(new Uint8Array([1, 2])) && relay.sendBinary(new ArrayBuffer(4), '1');
relay.onself = (me: string, data: string) => { console.log(me, data); };
relay.onjoin = function (peer, data) { this.send('hello ' + data, peer); };
relay.onquit = (peer) => { console.log(peer); };
relay.onrecv = (source, msgtype, data) => { console.log(source, msgtype, data); };
relay.onbinary = (source, data) => { const b: number = data[0]; console.log(source, b); };
relay.onreconnect = (newId, oldId) => { console.log(newId, oldId); };
relay.ondisconnect = (code, reason, willReconnect) => { const n: number = code; console.log(n, reason, willReconnect); };
relay.onresume = (id) => { const s: string = id; console.log(s); };
const onreport: MessageHandler = function (source, data) { this.send('ack ' + data, source); };
relay.onreport = onreport;
class Game extends WebSocketRelay {
  onself(id: string): void { console.log(id); }
  onpos(source: string, data: string): void { console.log(source, data); }
}
const game = new Game('https://example.com/');
// @ts-expect-error: ids are strings, as on the wire
const bad: number | null = relay.id;
// @ts-expect-error: read-only
relay.id = '3';
// @ts-expect-error: send takes text; binary goes through sendBinary
relay.send(new Uint8Array(1));
// @ts-expect-error: onbinary gets bytes
relay.onbinary = (source: string, data: string) => { console.log(source, data); };
async function main(): Promise<string> { other.close(); game.close(); bare.close(); return await ready; }
void main; void tokens; void wsUrl; void id; void peers; void flags; void ws; void sent; void sentBinary; void bad;
EOF
"$work/node_modules/.bin/tsc" --noEmit --strict --target es2022 --module es2022 \
    --moduleResolution bundler --lib es2022,dom "$work/types/check.ts"
echo "ok   web/ws-relay.d.ts type-checks"

echo "--- browser test"
make_certificate "$work/tls"
# What --ignore-certificate-errors-spki-list takes: base64 of SHA-256 of the public key.
spki=$(openssl x509 -in "$work/tls/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | base64)
start_tls_relay "$work/tls"
trap cleanup EXIT # start_relay set its own trap, which stops only the relay
mkdir -p target/browser
RELAY_URL="http://$addr" RELAY_TLS_URL="https://$tls" TLS_SPKI="$spki" NODE_EXTRA_CA_CERTS="$work/tls/cert.pem" \
    WS_RELAY_BIN="$PWD/target/release/ws-relay" OUT_DIR="$PWD/target/browser" \
    node "$work/demo.test.mjs"
