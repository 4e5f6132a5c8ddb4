#!/usr/bin/env python3
"""A game backend's side of ws-relay, with nothing but Python's standard library.

It does the two things a backend does: mint the signed token (an HS256 JWT)
that lets one player into one room, and speak to the relay's server API on
its operator's port (publish into a room, list rooms, see who is in one,
disconnect a player). Copy the functions into your own server; the command
line is there to try them:

    printf 'a long random secret' >secret; printf 'an API key' >api-key
    cargo run --release -- --token-secret-file secret \\
        --admin-listen 127.0.0.1:7928 --api-key-file api-key
    python3 examples/backend.py token '/ws-relay/lobby?g=1' --sub alice
    python3 examples/backend.py publish '/ws-relay/lobby?g=1' 'the match starts'
    python3 examples/backend.py presence '/ws-relay/lobby?g=1'
    python3 examples/backend.py rooms --prefix /ws-relay/lobby
    python3 examples/backend.py disconnect --sub alice --reason 'banned'
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def b64url(data: bytes) -> str:
    # JWTs use base64url without padding, which is also what lets a token
    # travel in Sec-WebSocket-Protocol (browsers refuse `=` there).
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret: bytes, *, room=None, room_prefix=None, sub=None, ttl=300, now=None) -> str:
    """A token opening `room` exactly, or every room starting with
    `room_prefix`, for `ttl` seconds; `sub` (the player's account id) is
    what the relay shows in presence and what a disconnect by account finds."""
    if (room is None) == (room_prefix is None):
        raise ValueError("give room or room_prefix, not both")
    now = time.time() if now is None else now
    claims = {"exp": int(now + ttl)}
    if room is not None:
        claims["room"] = room
    else:
        claims["room_prefix"] = room_prefix
    if sub is not None:
        claims["sub"] = sub
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


class RelayApi:
    """The relay's server API at `base` (its --admin-listen address), with
    the key from its --api-key-file."""

    def __init__(self, base: str, key: str):
        self.base = base.rstrip("/")
        self.key = key

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            # The relay explains every refusal in a JSON body.
            raise RuntimeError(f"{e.code}: {json.load(e).get('error')}") from None

    def publish(self, room: str, data: str, to="*") -> int:
        """Sends `0 <data>` (id 0 is the server) to everyone in `room`, or
        to one id; returns how many clients it reached."""
        return self._call("POST", "/api/publish", {"room": room, "to": to, "data": data})["delivered"]

    def publish_binary(self, room: str, data: bytes, to="*") -> int:
        body = {"room": room, "to": to, "data_base64": base64.b64encode(data).decode()}
        return self._call("POST", "/api/publish", body)["delivered"]

    def rooms(self, prefix="", limit=100):
        query = urllib.parse.urlencode({"prefix": prefix, "limit": limit})
        return self._call("GET", f"/api/rooms?{query}")["rooms"]

    def presence(self, room: str):
        return self._call("GET", "/api/presence?" + urllib.parse.urlencode({"room": room}))["members"]

    def disconnect(self, *, room=None, id=None, sub=None, reason=""):
        body = {"sub": sub} if sub is not None else {"room": room, "id": id}
        body["reason"] = reason
        return self._call("POST", "/api/disconnect", body)["disconnected"]


def read_secret(path: str) -> bytes:
    # The relay strips one trailing newline from its secret and key files; so do we.
    with open(path, "rb") as f:
        data = f.read()
    return data[:-1] if data.endswith(b"\n") else data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secret-file", default="secret", help="the relay's --token-secret-file")
    parser.add_argument("--api", default="http://127.0.0.1:7928", help="the relay's --admin-listen, as a URL")
    parser.add_argument("--key-file", default="api-key", help="the relay's --api-key-file")
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="print a token for a room")
    token.add_argument("room", help="the room: the request target, path and query, e.g. '/ws-relay/lobby?g=1'")
    token.add_argument("--prefix", action="store_true", help="open every room starting with ROOM")
    token.add_argument("--sub", help="the player's account id")
    token.add_argument("--ttl", type=int, default=300, help="seconds the token lasts")

    publish = commands.add_parser("publish", help="send `0 DATA` into a room")
    publish.add_argument("room")
    publish.add_argument("data")
    publish.add_argument("--to", default="*", help="a client id, or * for everyone")

    rooms = commands.add_parser("rooms", help="list rooms and their client counts")
    rooms.add_argument("--prefix", default="")
    rooms.add_argument("--limit", type=int, default=100)

    presence = commands.add_parser("presence", help="list a room's members in join order")
    presence.add_argument("room")

    disconnect = commands.add_parser("disconnect", help="close a client, or an account's every connection, with 4000")
    disconnect.add_argument("--room")
    disconnect.add_argument("--id", type=int)
    disconnect.add_argument("--sub")
    disconnect.add_argument("--reason", default="")

    args = parser.parse_args()
    if args.command == "token":
        secret = read_secret(args.secret_file)
        where = {"room_prefix": args.room} if args.prefix else {"room": args.room}
        print(mint(secret, sub=args.sub, ttl=args.ttl, **where))
        return
    api = RelayApi(args.api, read_secret(args.key_file).decode())
    try:
        if args.command == "publish":
            to = args.to if args.to == "*" else int(args.to)
            print(json.dumps({"delivered": api.publish(args.room, args.data, to)}))
        elif args.command == "rooms":
            print(json.dumps(api.rooms(args.prefix, args.limit)))
        elif args.command == "presence":
            print(json.dumps(api.presence(args.room)))
        elif args.command == "disconnect":
            if (args.sub is None) == (args.room is None or args.id is None):
                parser.error("give --sub, or --room and --id")
            print(json.dumps({"disconnected": api.disconnect(room=args.room, id=args.id, sub=args.sub, reason=args.reason)}))
    except RuntimeError as e:
        sys.exit(f"the relay refused: {e}")


if __name__ == "__main__":
    main()
