// ws-relay.js: the browser side of ws-relay, a WebSocket relay for multiplayer
// browser games. One ES module, no dependencies, no build step: the relay
// serves it at /ws-relay.js and its TypeScript declarations at /ws-relay.d.ts.
//
// It keeps the API of the helper written for the browser game Spacewar, so a
// game written for that one works unchanged:
//
//   import WebSocketRelay from '/ws-relay.js'
//   const relay = new WebSocketRelay(location.href)  // room: the page's path and query
//   relay.onself = (id) => { ... }                   // my id
//   relay.onjoin = (id) => { ... }                   // a peer arrived
//   relay.onquit = (id) => { ... }                   // a peer left
//   relay.onreport = (id, json) => { ... }           // any message type the game defines
//   relay.send(`report ${JSON.stringify(state)}`)    // to everyone else in the room
//   relay.send('offer ...', peerId)                  // to one peer
//
// and adds binary messages, a `ready` promise, `close()`, reconnection with
// exponential backoff, tokens for relays that check them (`token`), and
// resumable sessions that keep a player's id across a network blip (`resume`).
// ws-relay.d.ts documents every member.
//
// SPDX-License-Identifier: MIT

const OPEN = 1
const CONNECTING = 0

// Handlers this module calls for its own events: a peer's message of one of
// these types is never dispatched to `on<type>` (it would let any player fake
// them), only to `onrecv` when the page defines it.
const LOCAL_EVENTS = new Set(['recv', 'binary', 'reconnect', 'disconnect', 'resume'])

// Message types only the relay may send; it closes a client (1008) that sends them.
const RELAY_TYPES = new Set(['self', 'join', 'quit', 'resume'])

// A session key: 16 random bytes in base64url, 22 characters, as the relay
// wants (22 to 64, no padding: browsers refuse `=` in a subprotocol).
function sessionKey () {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

const TARGET = /^(\*|[0-9]+)$/

/** The WebSocket URL of the relay for the page at `pageUrl`. */
export function relayUrl (pageUrl) {
  const page = new URL(String(pageUrl))
  const url = new URL(`/ws-relay${page.pathname}${page.search}`, page)
  if (page.protocol === 'https:' || page.protocol === 'wss:') {
    url.protocol = 'wss:'
  } else {
    url.protocol = 'ws:'
  }
  url.hash = ''
  return url.href
}

function checkTarget (target) {
  const t = String(target)
  if (!TARGET.test(t)) {
    throw new TypeError(`ws-relay: target must be '*' or a peer id, not ${JSON.stringify(t)}`)
  }
  return t
}

export class WebSocketRelay {
  #url
  #options
  #ws = null
  #id = null
  #lastId = null
  #peers = new Set()
  #attempt = 0
  #timer = null
  #closed = false
  #userClosed = false
  #ready
  #resolveReady
  #rejectReady
  #readySettled = false
  // A 4401 since the last `self`: the next one means the token source cannot help.
  #tokenRefused = false
  // With `resume`: this client's session key, for its whole life.
  #session = null
  // The connection was lost with the session's seat kept: the peers are
  // kept too, until the relay says `resume` (nothing happened) or `self`
  // (a fresh join: they are reported gone first).
  #resuming = false

  /**
   * Connects to the relay room for `pageUrl`: `/ws-relay<path><query>` on its
   * host, `wss:` for an https page and `ws:` for an http one.
   */
  constructor (pageUrl = globalThis.location?.href, options = {}) {
    if (pageUrl === undefined) throw new TypeError('ws-relay: no page URL')
    this.#url = relayUrl(pageUrl)
    this.#options = {
      reconnect: options.reconnect ?? true,
      baseDelay: options.baseDelay ?? 500,
      maxDelay: options.maxDelay ?? 15000,
      token: options.token,
      resume: options.resume ?? false
    }
    if (this.#options.resume) this.#session = sessionKey()
    this.#newReady()
    this.#connect()
  }

  /** The relay's WebSocket URL. */
  get url () { return this.#url }

  /** My id in the room (a string, as on the wire), or null while not in it. */
  get id () { return this.#id }

  /** Resolves with my id once the relay has sent `self` (see the d.ts for reconnects). */
  get ready () { return this.#ready }

  /** The ids of the peers in the room, in the order they joined. */
  get peers () { return [...this.#peers] }

  /** True from my `self` until the connection is lost or closed. */
  get connected () { return this.#id !== null }

  /** True once close() was called or the relay refused this client for good. */
  get closed () { return this.#closed }

  /** The current WebSocket, or null between attempts and after close(). */
  get ws () { return this.#ws }

  /**
   * Sends the text `${target} ${message}`: to every other client with '*'
   * (the default), or to one by id. Returns false, sending nothing, while not
   * connected; true when the message was handed to the socket.
   */
  send (message, target = '*') {
    const t = checkTarget(target)
    const m = String(message)
    const type = m.trimStart().split(/[ \t\n\v\f\r]/, 1)[0]
    if (type === '') throw new TypeError('ws-relay: empty message')
    if (RELAY_TYPES.has(type)) throw new TypeError(`ws-relay: '${type}' messages come from the relay only`)
    const ws = this.#ws
    if (!ws || ws.readyState !== OPEN) return false
    ws.send(`${t} ${m}`)
    return true
  }

  /**
   * Sends a binary message: the ASCII `${target} ` and then `bytes`. Peers
   * get `onbinary(myId, bytes)`. Same return value as send().
   */
  sendBinary (bytes, target = '*') {
    const t = checkTarget(target)
    let data
    if (bytes instanceof ArrayBuffer) {
      data = new Uint8Array(bytes)
    } else if (ArrayBuffer.isView(bytes)) {
      data = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    } else {
      throw new TypeError('ws-relay: sendBinary takes an ArrayBuffer or a typed array')
    }
    // The relay passes every byte after the target's one space on as it is.
    const ws = this.#ws
    if (!ws || ws.readyState !== OPEN) return false
    const frame = new Uint8Array(t.length + 1 + data.length)
    for (let i = 0; i < t.length; i++) frame[i] = t.charCodeAt(i)
    frame[t.length] = 0x20
    frame.set(data, t.length + 1)
    ws.send(frame)
    return true
  }

  /**
   * Leaves the room and stops reconnecting. No handler is called after it,
   * and `ready` is a rejected promise from then on.
   */
  close () {
    if (this.#closed) return
    this.#closed = this.#userClosed = true
    clearTimeout(this.#timer)
    this.#timer = null
    const ws = this.#ws
    this.#ws = null
    this.#id = null
    this.#peers.clear()
    if (ws) {
      ws.onmessage = ws.onclose = null
      if (ws.readyState === OPEN || ws.readyState === CONNECTING) ws.close(1000)
    }
    if (this.#readySettled) this.#newReady()
    this.#failReady(new Error('ws-relay: closed'))
  }

  #newReady () {
    this.#readySettled = false
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve
      this.#rejectReady = reject
    })
    // Nobody has to await it: a rejection after close() is no error.
    this.#ready.catch(() => {})
  }

  #failReady (error) {
    if (!this.#readySettled) {
      this.#readySettled = true
      this.#rejectReady(error)
    }
  }

  async #connect () {
    this.#timer = null
    let protocols
    if (this.#session !== null) protocols = ['ws-relay', `ws-relay.session.${this.#session}`]
    const token = this.#options.token
    if (token !== undefined) {
      // A fresh one before every attempt: the relay closes an expired one with 4401.
      // It rides in the subprotocol list, where it shows in no URL and no access log.
      let value
      try {
        value = typeof token === 'function' ? await token() : token
      } catch (error) {
        if (this.#userClosed) return
        if (typeof globalThis.reportError === 'function') globalThis.reportError(error)
        this.#retry()
        return
      }
      if (this.#userClosed) return
      protocols = [...(protocols ?? ['ws-relay']), `ws-relay.token.${value}`]
    }
    const ws = new WebSocket(this.#url, protocols)
    ws.binaryType = 'arraybuffer'
    ws.onmessage = (event) => { if (ws === this.#ws) this.#receive(event.data) }
    ws.onclose = (event) => { if (ws === this.#ws) this.#lost(event.code, event.reason) }
    this.#ws = ws
  }

  #retry () {
    const cap = Math.min(this.#options.maxDelay, this.#options.baseDelay * 2 ** this.#attempt)
    this.#attempt++
    this.#timer = setTimeout(() => this.#connect(), Math.random() * cap)
  }

  #lost (code, reason) {
    this.#ws = null
    // 4401: the token was missing or no good; one fresh token may fix it, a
    // second 4401 in a row or a 4403 (not for this room) will not.
    const refreshToken = code === 4401 && !this.#tokenRefused && typeof this.#options.token === 'function'
    if (code === 4401) this.#tokenRefused = true
    const final = code === 1008 || code === 4403 || (code === 4401 && !refreshToken)
    const reconnect = this.#options.reconnect && !final
    if (!reconnect) this.#closed = true
    if (this.#id !== null) {
      this.#lastId = this.#id
      this.#id = null
      // A session's seat waits for it in the room: keep the peers and `ready`
      // until the relay says whether it kept the seat.
      this.#resuming = reconnect && this.#session !== null && code !== 1000 && code !== 1001
      if (!this.#resuming) this.#forgetPeers()
      this.#call('ondisconnect', code, reason, reconnect)
    } else if (code === 4401 || code === 4403) {
      // Kept out before ever joining: the page still hears why.
      this.#call('ondisconnect', code, reason, reconnect)
    }
    if (this.#userClosed) return // a handler called close()
    if (!reconnect) {
      this.#forgetPeers()
      this.#failReady(new Error(`ws-relay: closed by the relay (${code}${reason ? ' ' + reason : ''})`))
      return
    }
    if (refreshToken || (this.#resuming && this.#attempt === 0)) {
      // The seat waits only so long: the first try is at once.
      this.#attempt++
      this.#connect()
      return
    }
    this.#retry()
  }

  // The page no longer hears from these peers: tell it they left, so a game
  // that knows nothing of reconnection drops them. Those still in the room
  // join again after the reconnect.
  #forgetPeers () {
    this.#resuming = false
    if (this.#readySettled) this.#newReady()
    const peers = [...this.#peers]
    this.#peers.clear()
    for (const peer of peers) this.#dispatch(peer, 'quit', '')
  }

  #receive (data) {
    if (typeof data !== 'string') {
      const bytes = new Uint8Array(data)
      const space = bytes.indexOf(0x20)
      if (space < 0) return
      const source = String.fromCharCode(...bytes.subarray(0, space))
      this.#call('onbinary', source, bytes.subarray(space + 1))
      return
    }
    const space = data.indexOf(' ')
    if (space < 0) return
    const source = data.slice(0, space)
    const rest = data.slice(space + 1)
    const typeEnd = rest.indexOf(' ')
    const msgtype = typeEnd < 0 ? rest : rest.slice(0, typeEnd)
    const body = typeEnd < 0 ? '' : rest.slice(typeEnd + 1)
    if (msgtype === 'resume') {
      // The seat was kept: same id, same peers, and `ready` still holds.
      this.#resuming = false
      this.#id = source
      this.#attempt = 0
      this.#tokenRefused = false
      this.#call('onresume', source)
      return
    }
    if (msgtype === 'self') {
      if (this.#resuming) this.#forgetPeers()
      const oldId = this.#lastId
      this.#id = source
      this.#attempt = 0
      this.#tokenRefused = false
      if (!this.#readySettled) {
        this.#readySettled = true
        this.#resolveReady(source)
      }
      if (oldId !== null) this.#call('onreconnect', source, oldId)
    } else if (msgtype === 'join') {
      this.#peers.add(source)
    } else if (msgtype === 'quit') {
      this.#peers.delete(source)
    }
    this.#dispatch(source, msgtype, body)
  }

  #dispatch (source, msgtype, body) {
    const handler = LOCAL_EVENTS.has(msgtype) ? undefined : this[`on${msgtype}`]
    if (typeof handler === 'function') {
      this.#call(`on${msgtype}`, source, body)
    } else {
      this.#call('onrecv', source, msgtype, body)
    }
  }

  // Calls handler `name` if the page defined one. An exception it throws is
  // reported as uncaught, but does not break the connection's bookkeeping.
  #call (name, ...args) {
    if (this.#userClosed) return
    const handler = this[name]
    if (typeof handler !== 'function') return
    try {
      handler.apply(this, args)
    } catch (error) {
      if (typeof globalThis.reportError === 'function') {
        globalThis.reportError(error)
      } else {
        setTimeout(() => { throw error })
      }
    }
  }
}

export default WebSocketRelay
