// A client on the Node `ws` package: prints `< msg` for every message
// received and sends every line read from stdin; closes on EOF.
//
//   node ws_client.mjs URL [CA]
//
// For a wss:// URL, CA is a PEM file of the certificates to trust (the relay's
// self-signed one, say), passed to TLS as `ca`: the certificate and the host
// name are verified against it (`rejectUnauthorized` stays at its default, true).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const [url, ca] = process.argv.slice(2);
const ws = new WebSocket(url, ca ? { ca: readFileSync(ca) } : {});
ws.on("message", (data) => console.log(`< ${data}`));
ws.on("open", () => {
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => ws.send(line));
  lines.on("close", () => ws.close(1000));
});
ws.on("close", () => process.exit(0));
ws.on("error", (e) => {
  console.error(`ws error: ${e.message}`);
  process.exit(1);
});
