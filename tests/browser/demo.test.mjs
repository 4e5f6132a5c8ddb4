// Drives the demo page (web/index.html) and the browser helper (web/ws-relay.js)
// in headless Chromium, as served by a running relay. Run by scripts/browser.sh,
// which starts the relay and installs playwright-core next to a copy of this file.
//
// Environment:
//   RELAY_URL     http://HOST:PORT of the relay under test (required)
//   RELAY_TLS_URL https://HOST:PORT, the same relay's TLS port (required)
//   TLS_SPKI      base64 SHA-256 of that certificate's public key (required):
//                 Chromium accepts that one key (--ignore-certificate-errors-spki-list)
//                 and no other untrusted certificate. Node's own fetch trusts the
//                 certificate through NODE_EXTRA_CA_CERTS.
//   WS_RELAY_BIN  the relay binary, to start a private relay this test may restart (required)
//   OUT_DIR       where to save demo.png (default target/browser)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//
// Prints one line per check and closes with "N passed, N failed"; exits 1 on any failure.

import { spawn } from 'node:child_process'
import { createServer, connect } from 'node:net'
import { createHmac } from 'node:crypto'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const base = process.env.RELAY_URL
const tlsBase = process.env.RELAY_TLS_URL
const tlsSpki = process.env.TLS_SPKI
const relayBin = process.env.WS_RELAY_BIN
if (!base || !tlsBase || !tlsSpki || !relayBin) {
  console.error('set RELAY_URL, RELAY_TLS_URL, TLS_SPKI and WS_RELAY_BIN (scripts/browser.sh does)')
  process.exit(2)
}
const outDir = process.env.OUT_DIR || 'target/browser'
const T = 10_000 // ms: the longest any one wait may take

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
function assert (cond, message) {
  if (!cond) throw new Error(message)
}

// ---- checks -----------------------------------------------------------------

let passed = 0
let failed = 0
async function check (name, fn, timeout = 30_000) {
  const started = Date.now()
  let timer
  try {
    await Promise.race([
      fn(),
      new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`not done after ${timeout / 1000} s`)), timeout) })
    ])
    passed++
    console.log(`ok   ${name} (${Date.now() - started} ms)`)
  } catch (e) {
    failed++
    console.log(`FAIL ${name}: ${e.message.split('\n').slice(0, 6).join('\n     ')}`)
  } finally {
    clearTimeout(timer)
  }
}

// What a demo page shows, for assertions and failure messages.
const pageState = (page) => page.evaluate(() => ({
  me: document.getElementById('me').textContent,
  status: document.getElementById('status').textContent,
  rtt: document.getElementById('rtt').dataset.ms ?? null,
  x: Number(document.getElementById('self-pos').dataset.x),
  y: Number(document.getElementById('self-pos').dataset.y),
  peers: [...document.querySelectorAll('#peers li')].map((li) => ({
    id: li.dataset.id,
    x: li.dataset.x === undefined ? null : Number(li.dataset.x),
    y: li.dataset.y === undefined ? null : Number(li.dataset.y)
  }))
}))

// Polls `cond(state)` on a demo page until it holds; fails with `what` and the last state.
async function waitState (page, what, cond, timeout = T) {
  const deadline = Date.now() + timeout
  let state
  for (;;) {
    state = await pageState(page)
    if (cond(state)) return state
    if (Date.now() > deadline) break
    await sleep(50)
  }
  throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}; page ${page.url()} shows ${JSON.stringify(state)}`)
}

// ---- a private relay, which the reconnection check stops and restarts --------

function startRelay (listen, extra = ['--max-room-clients', '2']) {
  return new Promise((resolve, reject) => {
    const child = spawn(relayBin, ['--listen', listen, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => reject(new Error(`private relay did not start: ${err}`)), T)
    child.stderr.on('data', (d) => { err += d })
    child.stdout.on('data', (d) => {
      out += d
      const m = /^listening on (\S+)$/m.exec(out)
      const admin = /^metrics on (\S+)$/m.exec(out)
      if (m && (admin || !extra.includes('--admin-listen'))) {
        clearTimeout(timer)
        resolve({ child, addr: m[1], admin: admin && admin[1] })
      }
    })
    child.on('error', reject)
  })
}

function stopRelay (child, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once('exit', () => resolve())
    child.kill(signal)
  })
}

// ---- tokens, as a game's backend mints them (HS256) --------------------------

const b64url = (s) => Buffer.from(s).toString('base64url')
function mintToken (secret, claims) {
  const signed = `${b64url('{"alg":"HS256","typ":"JWT"}')}.${b64url(JSON.stringify(claims))}`
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`
}

// ---- the run ----------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // The relay's throwaway certificate, and only it, is accepted as if trusted.
    `--ignore-certificate-errors-spki-list=${tlsSpki}`]
})
const pageErrors = []
async function newPage (url, { consoleErrors = true, origin = base } = {}) {
  // A context each: no shared storage, cookies or focus between players.
  const context = await browser.newContext({ viewport: { width: 960, height: 600 }, deviceScaleFactor: 1 })
  const page = await context.newPage()
  // The WebSocket URLs the page opens.
  page.sockets = []
  page.on('websocket', (ws) => page.sockets.push(ws.url()))
  page.on('pageerror', (e) => pageErrors.push(`${url}: ${e.message}`))
  page.on('console', (m) => {
    // Chromium asks for /favicon.ico whatever the page says; that answer is not the page's business.
    if (consoleErrors && m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) {
      pageErrors.push(`${url}: console: ${m.text()}`)
    }
  })
  const response = await page.goto(origin + url)
  assert(response && response.ok(), `GET ${url} answered ${response && response.status()}`)
  return page
}

let private_ = null
try {
  let page1, page2, page3, id1, id2

  await check('the relay serves the demo, the helper and its types', async () => {
    for (const [path, type] of [['/', 'text/html'], ['/index.html', 'text/html'], ['/ws-relay.js', 'text/javascript'], ['/ws-relay.d.ts', '']]) {
      const res = await fetch(base + path)
      const body = await res.text()
      assert(res.status === 200, `GET ${path}: status ${res.status}`)
      assert(res.headers.get('content-type').startsWith(type), `GET ${path}: content-type ${res.headers.get('content-type')}`)
      assert(body.length > 500, `GET ${path}: only ${body.length} bytes`)
    }
  })

  await check('two players at / and /index.html with ?game=a see each other', async () => {
    page1 = await newPage('/?game=a')
    page2 = await newPage('/index.html?game=a')
    const s1 = await waitState(page1, 'an id on page 1', (s) => /^\d+$/.test(s.me))
    const s2 = await waitState(page2, 'an id on page 2', (s) => /^\d+$/.test(s.me))
    id1 = s1.me
    id2 = s2.me
    assert(id1 !== id2, `both pages got id ${id1}`)
    await waitState(page1, `page 1 (id ${id1}) to list exactly player ${id2} with a position`,
      (s) => s.peers.length === 1 && s.peers[0].id === id2 && s.peers[0].x !== null)
    await waitState(page2, `page 2 (id ${id2}) to list exactly player ${id1} with a position`,
      (s) => s.peers.length === 1 && s.peers[0].id === id1 && s.peers[0].x !== null)
    await waitState(page1, 'the status to say connected', (s) => s.status === 'connected')
  })

  await check('a player holding ArrowRight moves right on the other page', async () => {
    assert(id1 && id2, 'skipped: the two players did not meet')
    const before = (await pageState(page1)).peers.find((p) => p.id === id2)
    const own = await pageState(page2)
    assert(Math.abs(before.x - own.x) < 0.11, `page 1 shows player ${id2} at x=${before.x}, it is at x=${own.x}`)
    await page2.keyboard.down('ArrowRight')
    await sleep(600)
    await page2.keyboard.up('ArrowRight')
    const moved = await waitState(page2, 'page 2 to move right', (s) => s.x >= own.x + 20)
    await waitState(page1, `page 1 to show player ${id2} at page 2's new x=${moved.x}`, (s) => {
      const p = s.peers.find((p) => p.id === id2)
      return p && p.x >= before.x + 20 && Math.abs(p.x - moved.x) < 0.11 && Math.abs(p.y - moved.y) < 0.11
    }, 3000)
    // Player 1 moves down, so the screenshot shows two players who moved.
    const own1 = await pageState(page1)
    await page1.keyboard.down('ArrowDown')
    await sleep(400)
    await page1.keyboard.up('ArrowDown')
    const moved1 = await waitState(page1, 'page 1 to move down', (s) => s.y >= Math.min(own1.y + 20, 580))
    await waitState(page2, `page 2 to show player ${id1} at y=${moved1.y}`, (s) => {
      const p = s.peers.find((p) => p.id === id1)
      return p && Math.abs(p.y - moved1.y) < 0.11
    }, 3000)
  })

  await check('the round-trip time shows a number', async () => {
    assert(page1, 'skipped: no page 1')
    const s = await waitState(page1, 'an RTT in #rtt', (s) => s.rtt !== null)
    const text = await page1.textContent('#rtt')
    assert(Number.isFinite(Number(s.rtt)) && Number(s.rtt) >= 0 && Number(s.rtt) < 1000, `#rtt data-ms is ${s.rtt}`)
    assert(/^\d+(\.\d)? ms$/.test(text), `#rtt reads ${JSON.stringify(text)}`)
  })

  await check('a player in ?game=b sees neither, and neither sees it', async () => {
    assert(id1 && id2, 'skipped: the two players did not meet')
    page3 = await newPage('/?game=b')
    await waitState(page3, 'an id on page 3', (s) => /^\d+$/.test(s.me))
    await sleep(1000) // time for any wrong join or pos to arrive
    const [s1, s2, s3] = [await pageState(page1), await pageState(page2), await pageState(page3)]
    assert(s3.peers.length === 0, `page 3 (room b) lists ${JSON.stringify(s3.peers)}`)
    assert(s1.peers.length === 1 && s1.peers[0].id === id2, `page 1 lists ${JSON.stringify(s1.peers)}`)
    assert(s2.peers.length === 1 && s2.peers[0].id === id1, `page 2 lists ${JSON.stringify(s2.peers)}`)
  })

  await check('screenshot of page 1 with both players saved to demo.png', async () => {
    assert(page1, 'skipped: no page 1')
    await sleep(300) // the other player's dot eases into place
    mkdirSync(outDir, { recursive: true })
    const file = join(outDir, 'demo.png')
    const png = await page1.screenshot({ path: file })
    writeFileSync(file, png)
    console.log('----- BEGIN demo.png base64 -----')
    console.log(png.toString('base64').replace(/.{1,76}/g, '$&\n').trimEnd())
    console.log('----- END demo.png base64 -----')
  })

  await check('the TLS port serves the demo and the helper over https://, the same bytes as over http://', async () => {
    assert(tlsBase.startsWith('https://'), `RELAY_TLS_URL is ${tlsBase}`)
    for (const [path, type] of [['/', 'text/html'], ['/ws-relay.js', 'text/javascript']]) {
      // Node verifies the certificate (NODE_EXTRA_CA_CERTS) as for any https:// server.
      const [secure, plain] = [await fetch(tlsBase + path), await fetch(base + path)]
      assert(secure.status === 200, `GET ${tlsBase}${path}: status ${secure.status}`)
      assert(secure.headers.get('content-type').startsWith(type), `GET ${tlsBase}${path}: content-type ${secure.headers.get('content-type')}`)
      assert(await secure.text() === await plain.text(), `GET ${path}: https:// and http:// bodies differ`)
    }
  })

  await check('two players on https:// pages meet over wss://, with a player on an http:// page in their room', async () => {
    const wssRoom = tlsBase.replace(/^https:/, 'wss:') + '/ws-relay/demo?game=tls'
    const t1 = await newPage('/?game=tls', { origin: tlsBase })
    const t2 = await newPage('/index.html?game=tls', { origin: tlsBase })
    for (const [name, page] of [['https page 1', t1], ['https page 2', t2]]) {
      const where = await page.evaluate(() => [location.protocol, window.isSecureContext])
      assert(JSON.stringify(where) === '["https:",true]', `${name}: protocol and secure context ${JSON.stringify(where)}`)
    }
    const a = (await waitState(t1, 'an id on https page 1', (s) => /^\d+$/.test(s.me))).me
    const b = (await waitState(t2, 'an id on https page 2', (s) => /^\d+$/.test(s.me))).me
    assert(a !== b, `both https pages got id ${a}`)
    for (const [name, page] of [['https page 1', t1], ['https page 2', t2]]) {
      assert(JSON.stringify(page.sockets) === JSON.stringify([wssRoom]), `${name} opened ${JSON.stringify(page.sockets)}, not [${wssRoom}]`)
    }
    await waitState(t1, `https page 1 to list exactly player ${b} with a position`,
      (s) => s.peers.length === 1 && s.peers[0].id === b && s.peers[0].x !== null)
    await waitState(t2, `https page 2 to list exactly player ${a} with a position`,
      (s) => s.peers.length === 1 && s.peers[0].id === a && s.peers[0].x !== null)
    // The same room through the plain port: the room is the request target, whatever the port.
    const h = await newPage('/?game=tls')
    const c = (await waitState(h, 'an id on the http page', (s) => /^\d+$/.test(s.me))).me
    assert(h.sockets.length === 1 && h.sockets[0].startsWith('ws://'), `the http page opened ${JSON.stringify(h.sockets)}`)
    const both = (s) => [a, b].every((id) => s.peers.some((p) => p.id === id && p.x !== null))
    await waitState(h, `the http page to list players ${a} and ${b}`, (s) => s.peers.length === 2 && both(s))
    for (const [name, page] of [['https page 1', t1], ['https page 2', t2]]) {
      await waitState(page, `${name} to list the http player ${c}`, (s) => s.peers.some((p) => p.id === c && p.x !== null))
    }
    // Moves cross both ways: https page 1 moves right, the http page moves down.
    const seen = async (from, id, pages, what) => {
      const own = await pageState(from)
      for (const [name, page] of pages) {
        await waitState(page, `${name} to show player ${id} ${what} at x=${own.x} y=${own.y}`, (s) => {
          const p = s.peers.find((p) => p.id === id)
          return p && Math.abs(p.x - own.x) < 0.11 && Math.abs(p.y - own.y) < 0.11
        }, 3000)
      }
    }
    const start1 = await pageState(t1)
    await t1.keyboard.down('ArrowRight')
    await sleep(400)
    await t1.keyboard.up('ArrowRight')
    await waitState(t1, 'https page 1 to move right', (s) => s.x >= start1.x + 20)
    await seen(t1, a, [['https page 2', t2], ['the http page', h]], 'moved right')
    const startH = await pageState(h)
    await h.keyboard.down('ArrowDown')
    await sleep(400)
    await h.keyboard.up('ArrowDown')
    await waitState(h, 'the http page to move down', (s) => s.y >= startH.y + 20)
    await seen(h, c, [['https page 1', t1], ['https page 2', t2]], 'moved down')
    await h.context().close()
    for (const [name, page] of [['https page 1', t1], ['https page 2', t2]]) {
      await waitState(page, `${name} to see the http player leave`, (s) => s.peers.length === 1)
    }
    await t2.context().close()
    await waitState(t1, 'https page 1 to see https page 2 leave', (s) => s.peers.length === 0)
    await t1.context().close()
  })

  // The helper on its own, in a page of the relay's origin that runs nothing else.
  // Its console shows the refused connections the checks provoke, so only exceptions count.
  const api = await newPage('/healthz', { consoleErrors: false })
  await api.evaluate(async () => {
    const mod = await import('/ws-relay.js')
    window.WebSocketRelay = mod.default
    window.mod = mod
    window.until = async (what, cond, ms = 5000) => {
      const deadline = Date.now() + ms
      while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
    window.eq = (a, b, what) => {
      if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${what}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`)
    }
    window.skip = () => { throw new Error('skipped: the clients of the first API check are missing') }
    // `relay.ready`, or an error after `ms`.
    window.readyOf = (c, ms = 5000) => Promise.race([c.ready, new Promise((resolve, reject) =>
      setTimeout(() => reject(new Error(`no self from ${c.url} after ${ms} ms`)), ms))])
    // A client that records every handler call.
    window.client = (room, options) => {
      const c = new WebSocketRelay(new URL(room, location.href), options)
      c.log = []
      for (const name of ['onself', 'onjoin', 'onquit', 'onreconnect', 'ondisconnect']) {
        c[name] = function (...args) { this.log.push([name, ...args]) }
      }
      c.onrecv = function (...args) { this.log.push(['onrecv', ...args]) }
      c.onbinary = function (source, bytes) { this.log.push(['onbinary', source, [...bytes]]) }
      c.seen = (name) => c.log.filter((e) => e[0] === name)
      return c
    }
  })

  await check('exports, URL mapping, ready and peers', () => api.evaluate(async () => {
    eq(mod.WebSocketRelay === mod.default, true, 'named and default export')
    eq(mod.relayUrl('https://example.com/spacewar?game=2#x'), 'wss://example.com/ws-relay/spacewar?game=2', 'https page')
    eq(mod.relayUrl('http://127.0.0.1:80/a/b?c=d'), 'ws://127.0.0.1/ws-relay/a/b?c=d', 'http page')
    const room = '/api?run=' + Math.random()
    const a = client(room)
    eq(a.url, location.origin.replace('http', 'ws') + '/ws-relay' + room, 'url')
    eq([a.id, a.connected, a.send('early x')], [null, false, false], 'before self: id, connected, send')
    const idA = await readyOf(a)
    eq([idA, a.id, a.connected, a.log], ['1', '1', true, [['onself', '1', '']]], 'a after self')
    const b = client(room)
    const c = client(room)
    eq([await readyOf(b), await readyOf(c)], ['2', '3'], 'ids of b and c')
    // The peers already there arrive as `join` messages right after `self`.
    await until('c to list a and b', () => c.peers.length === 2)
    eq(c.peers, ['1', '2'], 'c.peers')
    await until('a to hear 2 and 3 join', () => a.peers.length === 2)
    eq(a.seen('onjoin'), [['onjoin', '2', ''], ['onjoin', '3', '']], 'joins a heard')
    window.abc = [a, b, c]
  }))

  await check("send to '*', to one id, to myself; on<type> and onrecv fallback", () => api.evaluate(async () => {
    const [a, b, c] = window.abc ?? skip()
    for (const x of abc) x.onhello = function (source, data) { this.log.push(['onhello', source, data]) }
    eq(a.send('hello world  two'), true, 'send returns true')
    await until("b and c to get a's hello", () => b.seen('onhello').length && c.seen('onhello').length)
    eq([b.seen('onhello'), c.seen('onhello')], [[['onhello', '1', 'world  two']], [['onhello', '1', 'world  two']]], "'*' message")
    a.send('hello just-b', b.id)
    a.send('hello to-me', 1) // a number works as a target too
    await until('b and a to get the direct messages', () => b.seen('onhello').length === 2 && a.seen('onhello').length === 1)
    eq(a.seen('onhello'), [['onhello', '1', 'to-me']], 'message to my own id')
    eq(b.seen('onhello')[1], ['onhello', '1', 'just-b'], 'message to b')
    b.send('unhandled 1 2 3', a.id)
    b.send('notype')
    await until('onrecv on a and c', () => a.seen('onrecv').length === 2 && c.seen('onrecv').length === 1)
    eq(a.seen('onrecv'), [['onrecv', '2', 'unhandled', '1 2 3'], ['onrecv', '2', 'notype', '']], 'onrecv on a')
    // A peer cannot fake this module's own events.
    b.send('reconnect 9 1')
    b.send('disconnect 1008 x false')
    await until('the fakes on c', () => c.seen('onrecv').length === 3)
    eq(c.seen('onreconnect').length + c.seen('ondisconnect').length, 0, 'faked events dispatched')
    eq(c.seen('onrecv').slice(1).map((e) => e[2]), ['reconnect', 'disconnect'], 'fakes go to onrecv')
    eq(c.seen('onhello').length, 1, "c got a message meant for another")
    // A subclass method is a handler, called with this = the instance.
    class Game extends WebSocketRelay { onhey (source, data) { this.hey = [this instanceof Game, source, data] } }
    const g = new Game(location.origin + '/api-subclass?run=' + Math.random())
    const gid = await readyOf(g)
    g.send('hey there', gid)
    await until('the subclass handler', () => g.hey)
    eq(g.hey, [true, gid, 'there'], 'subclass handler')
    g.close()
  }))

  await check('send and sendBinary refuse what the relay would close the client for', () => api.evaluate(() => {
    const [a] = window.abc ?? skip()
    const throws = (f, type, what) => {
      try { f() } catch (e) { if (e instanceof type) return; throw new Error(`${what}: threw ${e}`) }
      throw new Error(`${what}: did not throw`)
    }
    throws(() => a.send('quit'), TypeError, "send('quit')")
    throws(() => a.send('  join x'), TypeError, "send('  join x')")
    throws(() => a.send(''), TypeError, "send('')")
    throws(() => a.send('hi', 'bob'), TypeError, "send to 'bob'")
    throws(() => a.send('hi', '1 2'), TypeError, "send to '1 2'")
    throws(() => a.send('resume 1'), TypeError, "send('resume 1')")
    throws(() => a.sendBinary('text'), TypeError, 'sendBinary of a string')
    eq(a.connected, true, 'a still connected')
  }))

  await check('sendBinary delivers bytes exactly, to one id and to everyone', () => api.evaluate(async () => {
    const [a, b, c] = window.abc ?? skip()
    const bytes = [0x42, 0, 255, 32, 10, 13, 0x20, 7, 0xc3, 0x28]
    eq(a.sendBinary(new Uint8Array(bytes), b.id), true, 'sendBinary returns true')
    const f32 = new Float32Array([1.5, -2.25])
    a.sendBinary(f32.buffer.slice(0))
    await until('the binary messages', () => b.seen('onbinary').length === 2 && c.seen('onbinary').length === 1)
    eq(b.seen('onbinary')[0], ['onbinary', '1', bytes], 'bytes to b')
    const got = new Uint8Array(c.seen('onbinary')[0][2])
    eq([...new Float32Array(got.buffer)], [1.5, -2.25], 'Float32Array to c')
    eq(a.seen('onbinary').length, 0, 'sender got its own broadcast')
    // Byte for byte whatever the bytes: nothing, leading whitespace, the relay's own words.
    const odd = [[], [32, 32, 9, 1], [...new TextEncoder().encode('self')], [...new TextEncoder().encode('quit now')]]
    for (const payload of odd) eq(a.sendBinary(new Uint8Array(payload), b.id), true, `sendBinary of ${payload}`)
    await until('the odd payloads', () => b.seen('onbinary').length === 2 + odd.length)
    eq(b.seen('onbinary').slice(2).map((e) => e[2]), odd, 'odd payloads to b, exactly')
    eq(a.connected, true, 'a still connected')
  }))

  await check('close() leaves the room, stops handlers and rejects ready', () => api.evaluate(async () => {
    const [a, b, c] = window.abc ?? skip()
    const before = c.log.length
    c.close()
    eq([c.closed, c.connected, c.id, c.ws, c.send('hello late')], [true, false, null, null, false], 'c after close')
    eq(await readyOf(c, 2000).then(String, (e) => e.message), 'ws-relay: closed', 'ready after close')
    await until('a and b to hear c quit', () => a.peers.length === 1 && b.peers.length === 1)
    eq(a.seen('onquit'), [['onquit', '3', '']], 'quit a heard')
    a.send('hello anyone')
    await until('b to get the hello', () => b.seen('onhello').length === 3)
    await new Promise((resolve) => setTimeout(resolve, 300))
    eq(c.log.length, before, 'handlers called after close')
  }))

  await check('a dropped connection reconnects with a new id: onquit, ondisconnect, onreconnect, onself, onjoin', () => api.evaluate(async () => {
    const [a, b] = window.abc ?? skip()
    a.log.length = 0
    b.log.length = 0
    const first = a.ready
    a.ws.close(4000, 'test drops the socket') // as a network failure would: a did not call close()
    await until('a to reconnect', () => a.seen('onself').length === 1, 8000)
    eq(a.log.slice(0, 4).map((e) => e[0] === 'ondisconnect' ? [e[0], e[1], e[3]] : e), [['onquit', '2', ''], ['ondisconnect', 4000, true],
      ['onreconnect', '4', '1'], ['onself', '4', '']], 'what a saw')
    eq([a.id, await readyOf(a), a.ready !== first, await first], ['4', '4', true, '1'], 'id and ready after the reconnect')
    await until('a to see b again and b to see a', () => a.peers.includes('2') && b.peers.includes('4'))
    eq(b.log, [['onquit', '1', ''], ['onjoin', '4', '']], 'what b saw')
    a.send('hello again', b.id)
    await until('the message after the reconnect', () => b.seen('onhello').length === 1)
    eq(b.seen('onhello'), [['onhello', '4', 'again']], 'message from the new id')
  }))

  await check('close code 1008 from the relay does not reconnect', () => api.evaluate(async () => {
    const [a, b] = window.abc ?? skip()
    a.log.length = 0
    a.ws.send('nobody-target hi') // breaks the protocol: the relay closes with 1008
    await until('ondisconnect', () => a.seen('ondisconnect').length === 1)
    const [, code, reason, again] = a.seen('ondisconnect')[0]
    eq([code, again, a.closed, a.connected], [1008, false, true, false], 'after the 1008')
    if (!/target/i.test(reason)) throw new Error(`the reason does not name the target: ${reason}`)
    const error = await readyOf(a, 2000).then(String, (e) => e.message)
    if (!error.startsWith('ws-relay: closed by the relay (1008 ')) throw new Error(`ready after a 1008: ${error}`)
    await new Promise((resolve) => setTimeout(resolve, 1500))
    eq([a.ws, a.seen('onself').length], [null, 0], 'no reconnect')
    await until('b to hear a quit', () => b.peers.length === 0)
    b.close()
  }))

  await check('a relay restart: clients back off, reconnect and find each other; a full room is retried', async () => {
    private_ = await startRelay('127.0.0.1:0')
    const origin = 'http://' + private_.addr
    await api.evaluate(async (origin) => {
      const opts = { baseDelay: 100, maxDelay: 800 }
      const p = client(origin + '/restart', opts)
      const q = client(origin + '/restart', opts)
      eq([await readyOf(p), await readyOf(q)], ['1', '2'], 'ids before the restart')
      // The private relay takes 2 clients a room: a third is refused (HTTP 503) until one leaves.
      const r = client(origin + '/restart', opts)
      await new Promise((resolve) => setTimeout(resolve, 1200))
      eq([r.id, r.connected, r.closed], [null, false, false], 'third client in a full room')
      q.close()
      eq(await readyOf(r), '3', 'third client once there is room')
      await until('p to see r', () => p.peers.join() === '3')
      window.pr = [p, r]
    }, origin)
    await stopRelay(private_.child, 'SIGTERM')
    await api.evaluate(async () => {
      const [p, r] = pr
      await until('both to lose the relay', () => !p.connected && !r.connected)
      eq(p.seen('ondisconnect'), [['ondisconnect', 1001, 'server shutting down', true]], 'p ondisconnect')
      await new Promise((resolve) => setTimeout(resolve, 800)) // some attempts fail: nobody listens
      eq([p.connected, r.connected, p.closed, r.closed], [false, false, false, false], 'while the relay is down')
    })
    private_ = await startRelay(private_.addr) // the same port
    await api.evaluate(async () => {
      const [p, r] = pr
      await until('both to reconnect', () => p.connected && r.connected, 8000)
      const ids = [p.id, r.id].sort()
      eq(ids, ['1', '2'], 'ids in the restarted relay number from 1 again')
      eq(p.seen('onreconnect'), [['onreconnect', p.id, '1']], 'p onreconnect(new, old)')
      eq(r.seen('onreconnect'), [['onreconnect', r.id, '3']], 'r onreconnect(new, old)')
      await until('p and r to see each other', () => p.peers.join() === r.id && r.peers.join() === p.id)
      p.close()
      r.close()
    })
    await stopRelay(private_.child, 'SIGTERM')
  })

  await check('a token function joins a checking relay, a 4401 asks it again, a 4403 stops; server messages arrive', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ws-relay-browser-'))
    const secret = 'the backend secret'
    writeFileSync(join(dir, 'secret'), secret + '\n')
    writeFileSync(join(dir, 'key'), 'api key\n')
    private_ = await startRelay('127.0.0.1:0', ['--token-secret-file', join(dir, 'secret'),
      '--admin-listen', '127.0.0.1:0', '--api-key-file', join(dir, 'key')])
    const origin = 'http://' + private_.addr
    // The page's token function calls the backend (here: this test) for each connect.
    let calls = 0
    await api.exposeFunction('backendToken', (room, expired) => {
      calls++
      const exp = Math.floor(Date.now() / 1000) + (expired ? -60 : 60)
      return mintToken(secret, { exp, room, sub: 'player-1' })
    })
    await api.evaluate(async (origin) => {
      let first = true
      const t = client(origin + '/tok', { baseDelay: 100, maxDelay: 400, token: () => {
        // An expired token first: the relay says 4401, and the helper asks again.
        const expired = first
        first = false
        return window.backendToken('/ws-relay/tok', expired)
      } })
      t.onstart = function (source, data) { this.log.push(['onstart', source, data]) }
      eq(await readyOf(t), '1', 'joined with the fresh token')
      eq(t.seen('ondisconnect').map((e) => e[1]), [4401], 'the expired token was refused first')
      window.tok = t
    }, origin)
    if (calls !== 2) throw new Error(`the token function was called ${calls} times, not 2`)
    const published = await fetch(`http://${private_.admin}/api/publish`, {
      method: 'POST',
      headers: { authorization: 'Bearer api key', 'content-type': 'application/json' },
      body: JSON.stringify({ room: '/ws-relay/tok', to: '*', data: 'start round 1' })
    })
    assert(published.status === 200, `publish answered ${published.status}`)
    assert((await published.json()).delivered === 1, 'delivered to the one player')
    await api.evaluate(async (origin) => {
      await until('the server message', () => tok.seen('onstart').length === 1)
      eq(tok.seen('onstart'), [['onstart', '0', 'round 1']], 'from id 0, to the on<type> handler')
      tok.close()
      // A valid token for another room: 4403, and no retry.
      const other = client(origin + '/tok', { token: () => window.backendToken('/ws-relay/other', false) })
      const error = await readyOf(other).then(String, (e) => e.message)
      eq([error.startsWith('ws-relay: closed by the relay (4403'), other.closed], [true, true], 'after a 4403')
      eq(other.seen('ondisconnect').map((e) => [e[1], e[3]]), [[4403, false]], 'ondisconnect(4403, ..., false)')
    }, origin)
    await stopRelay(private_.child, 'SIGTERM')
  })

  await check('with resume, a dropped connection takes its seat back: same id, messages kept, nobody notices', async () => {
    private_ = await startRelay('127.0.0.1:0', [])
    const [relayHost, relayPort] = private_.addr.split(':')
    // A TCP proxy in front of the relay for one page, whose connections this test can cut.
    const cut = new Set()
    const proxy = createServer((downstream) => {
      const upstream = connect(Number(relayPort), relayHost)
      downstream.pipe(upstream).pipe(downstream)
      const pair = [downstream, upstream]
      cut.add(pair)
      for (const s of pair) s.on('error', () => {}).on('close', () => { cut.delete(pair); pair.forEach((x) => x.destroy()) })
    })
    await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    const via = `http://127.0.0.1:${proxy.address().port}`
    try {
      await api.evaluate(async ([via, direct]) => {
        const p = client(via + '/resume', { resume: true, baseDelay: 100 })
        p.onresume = function (id) { this.log.push(['onresume', id]) }
        eq(await readyOf(p), '1', 'p first')
        const q = client(direct + '/resume')
        eq(await readyOf(q), '2', 'then q')
        await until('p to list q', () => p.peers.join() === '2')
        window.pq = [p, q]
      }, [via, 'http://' + private_.addr])
      // The network drops p's connection: no close frame reaches either side.
      for (const pair of cut) pair.forEach((s) => s.destroy())
      await api.evaluate(async () => {
        const [p, q] = pq
        q.send('while you were away', '1')
        await until('p to resume', () => p.seen('onresume').length === 1)
        await until('the message kept for p', () => p.seen('onrecv').length === 1)
        eq(p.seen('onrecv'), [['onrecv', '2', 'while', 'you were away']], 'delivered after the resume')
        eq([p.id, p.peers, await p.ready], ['1', ['2'], '1'], 'same id, same peers, ready unchanged')
        eq([p.seen('onquit'), p.seen('onself').length, p.seen('onreconnect')], [[], 1, []], 'no fresh-join sequence')
        eq([q.seen('onquit'), q.seen('onjoin')], [[], [['onjoin', '1', '']]], 'q never saw p leave or join again')
        p.send('back', '2')
        await until('q to hear p', () => q.seen('onrecv').length === 1)
        eq(q.seen('onrecv'), [['onrecv', '1', 'back', '']], 'live again')
        p.close()
        q.close()
      })
    } finally {
      proxy.close()
      for (const pair of cut) pair.forEach((s) => s.destroy())
      await stopRelay(private_.child, 'SIGTERM')
    }
  })

  await check('closing page 2 removes its player from page 1', async () => {
    assert(id1 && id2, 'skipped: the two players did not meet')
    await page2.context().close()
    await waitState(page1, `player ${id2} to leave page 1's list`, (s) => s.peers.length === 0, 5000)
  })

  await check('no errors in the pages', () => {
    assert(pageErrors.length === 0, pageErrors.join('\n'))
  })
} catch (e) {
  failed++
  console.log(`FAIL ${e.stack}`)
} finally {
  await browser.close().catch(() => {})
  if (private_) await stopRelay(private_.child, 'SIGKILL')
}

console.log(`${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
