// TypeScript declarations for ws-relay.js, the browser side of ws-relay.
// The relay serves both: `/ws-relay.js` and `/ws-relay.d.ts`.
//
// SPDX-License-Identifier: MIT

/**
 * A handler for one message type: `relay.onreport = (source, data) => ...`
 * is called for every `<source> report <data>` the relay delivers.
 */
export type MessageHandler = (this: WebSocketRelay, source: string, data: string) => void;

/** Options of the WebSocketRelay constructor. */
export interface WebSocketRelayOptions {
  /**
   * Reconnect when the connection is lost. Default `true`. With `false`,
   * the first loss is final, as with the original Spacewar helper.
   */
  reconnect?: boolean;
  /** Backoff base in milliseconds: the first retry waits up to this long. Default 500. */
  baseDelay?: number;
  /** Backoff cap in milliseconds: no retry waits longer. Default 15000. */
  maxDelay?: number;
  /**
   * The token for a relay that checks them (`--token-secret-file`): a string,
   * or a function, sync or async, called before every connect and reconnect
   * (a backend mints a fresh one). It is offered as the WebSocket subprotocol
   * `ws-relay.token.<token>` beside `ws-relay`, so it appears in no URL and no
   * access log. When the relay closes with 4401 (token missing, malformed,
   * expired or badly signed), the function is asked once more and the
   * connection retried at once; a second 4401 in a row, or a 4403 (a valid
   * token not for this room), stops: `ready` rejects, `closed` is true and
   * `ondisconnect` gets the code. A function that throws or rejects counts as
   * a failed connection and is retried with the backoff.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * Keep this player's seat across a network blip. Default `false`. The
   * instance makes a random session key and offers it on every connect
   * (`ws-relay.session.<key>`); when the connection drops without a close,
   * the relay keeps the seat for its resume window (10 s by default) and
   * queues what the room sends. The instance reconnects at once, and if the
   * seat is still there the relay says so: the same id, every message sent
   * meanwhile, and `onresume(id)` instead of the `onquit`/`onreconnect`/
   * `onself`/`onjoin` sequence of a fresh join; `ready` stays resolved and
   * the peers stay listed throughout. If the seat is gone, the page sees
   * that sequence, as without `resume`.
   */
  resume?: boolean;
}

/**
 * The WebSocket URL of the relay room for the page at `pageUrl`:
 * `/ws-relay<path><query>` on the page's host, `wss:` for an `https:` (or
 * `wss:`) URL and `ws:` otherwise. The fragment is dropped.
 *
 * `relayUrl('https://example.com/spacewar?game=2')` is
 * `'wss://example.com/ws-relay/spacewar?game=2'`.
 */
export function relayUrl(pageUrl: string | URL): string;

/**
 * A client of ws-relay: one player in one room.
 *
 * Messages from id `"0"` come from the game's backend through the relay's
 * server API (`POST /api/publish`): no client can have that id or forge it.
 * They reach the handlers like any other (`onstart('0', data)`).
 *
 * Ids are strings, exactly as on the wire (`"1"`, `"2"`, ...), as the original
 * helper passed them: compare them with `===`, and use `Number(id)` to order
 * them numerically.
 *
 * **Handlers.** For every text message `<source> <msgtype> <data>` the relay
 * delivers, the instance calls `this['on' + msgtype](source, data)` when that
 * is a function (`onself`, `onjoin`, `onquit`, or any type the game defines,
 * such as `onreport`), and otherwise `onrecv(source, msgtype, data)` when
 * that is defined. `msgtype` is the text up to the first space, `data`
 * everything after that space, verbatim (`''` when there is none). Handlers
 * may be assigned to the instance or defined as methods of a subclass; they
 * are called with `this` set to the instance. An exception a handler throws is
 * reported as uncaught (`reportError`) and does not disturb the connection.
 *
 * Message types `recv`, `binary`, `reconnect` and `disconnect` name this
 * module's own events: a peer's message of such a type goes to `onrecv` only,
 * so no player can fake them.
 *
 * **Reconnection.** When the connection is lost for any reason but close()
 * or a close code 1008 (the relay refused what this client sent: a malformed
 * message or flooding, which a retry would repeat), the instance reconnects
 * after a random delay between 0 and min(`maxDelay`, `baseDelay` x 2^n), n
 * counting the failed attempts since the last `self` (exponential backoff with
 * full jitter). An attempt the relay refuses over HTTP (503 room full, 403
 * origin) looks to a browser like any failed connection and is retried the
 * same way. A reconnected client is a new client: the relay gives it a new
 * id, and the peers hear it quit and join again. In order, the page sees:
 *
 * 1. when the connection is lost: `onquit(peer, '')` for every peer still
 *    listed, then `ondisconnect(code, reason, willReconnect)`;
 * 2. when the new connection is in: `onreconnect(newId, oldId)`, then
 *    `onself(newId, '')`, then `onjoin(peer, '')` for every peer present.
 *
 * So a game written for the original helper, which knows nothing of
 * reconnection, drops its peers and starts afresh with a new id. With the
 * `resume` option a blip costs nothing: see {@link WebSocketRelayOptions.resume}. The new id is
 * a different client, but may be the same number when the relay itself
 * restarted (rooms then number from 1 again).
 */
export class WebSocketRelay {
  /**
   * Connects to the relay room for `pageUrl` (default: `location.href`); see
   * {@link relayUrl}. Pass a URL built for the purpose to choose the room, e.g.
   * `new URL('/mygame?game=' + encodeURIComponent(name), location.href)`.
   */
  constructor(pageUrl?: string | URL, options?: WebSocketRelayOptions);

  /** The relay's WebSocket URL (`ws:` or `wss:`). */
  readonly url: string;

  /** My id in the room, or `null` before the first `self`, between connections and after close(). */
  readonly id: string | null;

  /**
   * Resolves with my id when the relay sends `self`. While connected it is
   * resolved with the current id; when a connection that had an id is lost,
   * it is replaced by a fresh pending promise that resolves on the next
   * `self`, so `await relay.ready` always waits for a live connection. After
   * close(), or a 1008 from the relay, it is a rejected promise (rejections
   * nobody awaits are not reported).
   */
  readonly ready: Promise<string>;

  /**
   * The ids of the other clients in the room, in the order they joined. The
   * relay sends a `join` for each client already present right after `self`,
   * so the list fills just after `ready` resolves: use `onjoin` to follow it.
   */
  readonly peers: string[];

  /** True from `self` until the connection is lost or closed. */
  readonly connected: boolean;

  /** True once close() was called or the relay closed this client with 1008, 4403 or a second 4401: no more reconnects. */
  readonly closed: boolean;

  /**
   * The current WebSocket (`binaryType` `'arraybuffer'`), or `null` while
   * waiting to reconnect and after close(). As `ws` in the original helper.
   */
  readonly ws: WebSocket | null;

  /**
   * Sends the text `${target} ${message}`: to every other client in the room
   * with `'*'` (the default), or to the client with that id (my own id too).
   * `message` is a message type and its data, e.g. `report {"x": 1}`.
   *
   * While not connected the message is dropped and `false` returned: nothing
   * is queued, as stale game state is worth nothing after a reconnect.
   * Returns `true` when it was handed to the socket.
   *
   * @throws TypeError when the relay would close the client for it: a target
   * that is neither `'*'` nor decimal digits, an empty message, or a message
   * of type `self`, `join`, `quit` or `resume`.
   */
  send(message: string, target?: string | number): boolean;

  /**
   * Sends a binary message: the ASCII `${target} ` followed by `bytes`. The
   * recipients' `onbinary(source, bytes)` receives the bytes exactly, whatever
   * they are: empty, starting with whitespace or with any word. Same targets
   * and return value as send().
   */
  sendBinary(bytes: ArrayBuffer | ArrayBufferView, target?: string | number): boolean;

  /**
   * Leaves the room for good: closes the socket (code 1000), cancels any
   * pending reconnect, and calls no handler afterwards. The peers hear `quit`.
   */
  close(): void;

  /** My id, on every connection (`data` is `''`). */
  onself?(id: string, data: string): void;
  /** A peer is in the room: sent for each present peer when I join, then for each newcomer. */
  onjoin?(id: string, data: string): void;
  /** A peer left the room (or I lost the connection: see the class docs). */
  onquit?(id: string, data: string): void;
  /** A text message with no `on<msgtype>` handler. */
  onrecv?(source: string, msgtype: string, data: string): void;
  /** A binary message: `data` is what the sender passed to sendBinary(). */
  onbinary?(source: string, data: Uint8Array): void;
  /** A new connection replaces a lost one; called before its `onself`. */
  onreconnect?(newId: string, oldId: string): void;
  /**
   * With `resume`: a new connection took back the seat of a lost one, with
   * the same `id`; the messages sent to it meanwhile follow.
   */
  onresume?(id: string): void;
  /**
   * The connection I had an id on is lost (not called after close()). `code`
   * is the WebSocket close code: 1006 when the connection simply broke, 1001
   * when the relay shuts down, 1011 when it timed the client out, 1008 (with
   * `willReconnect` false) when it refused what this client sent, 4000 when
   * the game's backend disconnected it. Also called, without a connection
   * ever having had an id, for 4401 and 4403: the token kept it out.
   */
  ondisconnect?(code: number, reason: string, willReconnect: boolean): void;

  /** Handlers for the game's own message types: `onreport`, `onoffer`, ... */
  [handler: `on${string}`]: ((...args: any[]) => void) | undefined;
}

export default WebSocketRelay;
