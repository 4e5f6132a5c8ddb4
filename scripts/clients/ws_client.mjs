// A client on the Node `ws` package: prints `< msg` for every message
// received and sends every line read from stdin; closes on EOF.
import { createInterface } from "node:readline";
import WebSocket from "ws";

const ws = new WebSocket(process.argv[2]);
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
