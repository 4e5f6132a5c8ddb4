"""The seed's three-client exchange through a TLS-terminating proxy in front of
the relay, with the Python `websockets` client (certificate checks off: the
proxy's certificate is self-signed). Checks every message each client
receives, in order, and that nothing else arrives; then that a query string
makes another room, that the proxy strips a large Cookie header the relay
itself would refuse (431), that the relay's keepalive pings pass through the
proxy, and that shutting the relay down (SIGTERM, as systemd does) reaches a
client through the proxy as close 1001.

usage: exchange.py PROXY_URL RELAY_ADDR RELAY_PID PING_INTERVAL_S
  PROXY_URL   e.g. wss://localhost:8443 (the rooms are under /ws-relay/)
  RELAY_ADDR  the relay's own host:port, to show what it says without the proxy
  RELAY_PID   sent SIGTERM at the end"""
import asyncio
import os
import signal
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 10
QUIET = 0.3

# A browser's upgrade request to the game's own origin carries the site's
# cookies. This one fits nginx's 8 KiB header-line buffer but makes the whole
# head larger than the relay's --max-request-head (8192).
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept-Language": "en-US,en;q=0.5",
    "Cookie": "session=" + "x" * 7990,
}


def tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client:
    def __init__(self, name, ws):
        self.name, self.ws = name, ws
        self.inbox = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, name, url, **kwargs):
        if url.startswith("wss:"):
            kwargs["ssl"] = tls()
        ws = await connect(url, ping_interval=None, open_timeout=TIMEOUT, **kwargs)
        return cls(name, ws)

    async def _read(self):
        try:
            async for message in self.ws:
                await self.inbox.put(message)
        except ConnectionClosed:
            pass

    async def expect(self, *messages):
        for want in messages:
            try:
                got = await asyncio.wait_for(self.inbox.get(), TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError(f"{self.name}: waited for {want!r}, got nothing") from None
            if got != want:
                raise AssertionError(f"{self.name}: expected {want!r}, got {got!r}")

    async def quiet(self):
        try:
            got = await asyncio.wait_for(self.inbox.get(), QUIET)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"{self.name}: unexpected {got!r}")

    async def send(self, text):
        await self.ws.send(text)

    async def close(self):
        await self.ws.close()
        await self.reader


async def quiet(*clients):
    await asyncio.gather(*(c.quiet() for c in clients))


def step(text):
    print(f"  ok: {text}", flush=True)


async def main(base, relay_addr, relay_pid, ping_interval):
    room = f"{base}/ws-relay/spacewar"
    other = f"{room}?game=2"

    c1 = await Client.open("client 1", room)
    await c1.expect("1 self")
    c2 = await Client.open("client 2", room)
    await c2.expect("2 self", "1 join")
    await c1.expect("2 join")
    c3 = await Client.open("client 3", room)
    await c3.expect("3 self", "1 join", "2 join")
    await c1.expect("3 join")
    await c2.expect("3 join")
    await quiet(c1, c2, c3)
    step("three clients joined /ws-relay/spacewar: self and join notices in order")

    g = await Client.open("client of ?game=2", other)
    await g.expect("1 self")
    await quiet(c1, c2, c3, g)
    step("a client of /ws-relay/spacewar?game=2 is 1 in a room of its own")

    await c1.send("2 hello")
    await c2.expect("1 hello")
    await quiet(c1, c2, c3, g)
    await c1.send("* hello")
    await c2.expect("1 hello")
    await c3.expect("1 hello")
    await g.send("* hello")
    await quiet(c1, c2, c3, g)
    step("'2 hello' reached client 2 alone, '* hello' clients 2 and 3, as '1 hello'; nothing crossed rooms")

    await c3.close()
    await c1.expect("3 quit")
    await c2.expect("3 quit")
    await c2.close()
    await c1.expect("2 quit")
    await quiet(c1, g)
    await c1.close()
    await quiet(g)
    step("client 3 quit, then client 2: '3 quit' to 1 and 2, '2 quit' to 1")

    big = await Client.open("client with cookies", other, additional_headers=BROWSER_HEADERS)
    await big.expect("2 self", "1 join")
    await g.expect("2 join")
    await big.close()
    await g.expect("2 quit")
    try:
        await Client.open("direct client with cookies", f"ws://{relay_addr}/ws-relay/spacewar?game=2",
                          additional_headers=BROWSER_HEADERS)
        raise AssertionError("the relay itself accepted the upgrade with a large Cookie header")
    except InvalidStatus as e:
        if e.response.status_code != 431:
            raise AssertionError(f"the relay itself answered {e.response.status_code}, not 431") from None
    step("an upgrade with an 8 KB Cookie header joins through the proxy (the relay alone answers 431)")

    await asyncio.sleep(ping_interval * 3)
    await g.send("1 still here")
    await g.expect("1 still here")
    step(f"a silent client answered the relay's pings through the proxy for {ping_interval * 3:g} s")

    os.kill(relay_pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(g.reader, TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError("the client was not closed after the relay's SIGTERM") from None
    if g.ws.close_code != 1001:
        raise AssertionError(f"after SIGTERM the client got close {g.ws.close_code}, not 1001")
    step("SIGTERM to the relay reached the client through the proxy as close 1001")


if __name__ == "__main__":
    url, addr, pid, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    try:
        asyncio.run(main(url, addr, pid, interval))
    except (AssertionError, InvalidStatus, ConnectionClosed, OSError, asyncio.TimeoutError) as e:
        sys.exit(f"  failed: {type(e).__name__}: {e}")
