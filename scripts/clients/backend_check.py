"""examples/backend.py run as its README walk-through runs it, against a relay
that checks tokens and serves the API, with the `websockets` library as the
game's client: a minted token joins the room it names through the
Sec-WebSocket-Protocol header and through the query, a publish arrives as
`0 <data>`, presence shows the account, a token for another room closes with
4403, and a disconnect by account closes with 4000."""
import asyncio
import json
import subprocess
import sys

import websockets

relay, admin, secret_file, key_file = sys.argv[1:5]
# A room is the whole request target, the /ws-relay/ prefix included.
ROOM = "/ws-relay/lobby?g=1"


def backend(*args):
    out = subprocess.run(
        [sys.executable, "examples/backend.py", "--secret-file", secret_file, "--api", f"http://{admin}",
         "--key-file", key_file, *args],
        check=True, capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


async def expect(ws, *messages):
    for want in messages:
        got = await asyncio.wait_for(ws.recv(), 5)
        assert got == want, f"expected {want!r}, got {got!r}"


async def closed_with(ws, code):
    try:
        got = await asyncio.wait_for(ws.recv(), 5)
        raise AssertionError(f"expected close {code}, got {got!r}")
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == code, e


async def main():
    alice = backend("token", ROOM, "--sub", "alice")
    a = await websockets.connect(f"ws://{relay}{ROOM}", subprotocols=["ws-relay", f"ws-relay.token.{alice}"])
    assert a.subprotocol == "ws-relay", a.subprotocol
    await expect(a, "1 self")
    bob = backend("token", "/ws-relay/lobby", "--prefix", "--sub", "bob")
    b = await websockets.connect(f"ws://{relay}/ws-relay/lobby?token={bob}&g=1")
    await expect(b, "2 self", "1 join")
    await expect(a, "2 join")

    assert json.loads(backend("publish", ROOM, "the match starts")) == {"delivered": 2}
    await expect(a, "0 the match starts")
    await expect(b, "0 the match starts")
    assert json.loads(backend("publish", ROOM, "just you", "--to", "2")) == {"delivered": 1}
    await expect(b, "0 just you")
    assert json.loads(backend("presence", ROOM)) == [{"id": 1, "sub": "alice"}, {"id": 2, "sub": "bob"}]
    assert json.loads(backend("rooms", "--prefix", "/ws-relay/lobby")) == [{"room": ROOM, "clients": 2}]

    elsewhere = backend("token", "/ws-relay/other")
    c = await websockets.connect(f"ws://{relay}{ROOM}", subprotocols=["ws-relay", f"ws-relay.token.{elsewhere}"])
    await closed_with(c, 4403)

    assert json.loads(backend("disconnect", "--sub", "bob", "--reason", "banned")) == {"disconnected": 1}
    await closed_with(b, 4000)
    await expect(a, "2 quit")
    await a.close()
    print("ok   examples/backend.py: tokens both ways, publish, presence, rooms, 4403, disconnect")


asyncio.run(main())
