"""Rooms kept whole on one relay node behind HAProxy (deploy/haproxy.cfg), with
the Python `websockets` client. Started by scripts/multinode.sh, which starts
the relays and the balancers lb1 and lb2 and describes them in ENV_JSON; see
that script for the list of checks. Talks to HAProxy's runtime API on the
stats sockets with the socket module, reads which node holds which room from
the nodes' debug logs (`joined room="..." id=N`) and /metrics.

usage: check.py ENV_JSON"""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 10
QUIET = 0.3
ROOMS = 50
# One prefix longer than 32 bytes for every room: HAProxy's default string key
# length would give them all one stick entry, and so one node.
OLD = "/ws-relay/spacewar-tournament-finals?game={}"
NEW = "/ws-relay/spacewar-tournament-finals?game=new{}"

env = json.load(open(sys.argv[1]))
LB = env["balancers"]
NODES = env["nodes"]
results = []
DEAD = []


T0 = time.monotonic()


def phase(text):
    print(f"== {text} [{time.monotonic() - T0:.1f} s]", flush=True)


def step(text):
    print(f"  ok: {text}", flush=True)
    results.append(("ok", text))


def info(text):
    print(f"  info: {text}", flush=True)


def record_pid(pid):
    with open(os.path.join(env["tmp"], "pids"), "a") as f:
        f.write(f"{pid}\n")


# ---------------------------------------------------------------- HAProxy CLI

def cli(sock, command, timeout=5):
    """One command on a stats socket; returns the answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    return b"".join(chunks).decode()


def unescape(key):
    return re.sub(r"\\(.)", r"\1", key)


def table(sock):
    """The relays stick table as {room: server_id}."""
    out = {}
    for line in cli(sock, "show table relays").splitlines():
        m = re.match(r"0x[0-9a-f]+: key=(.*?) use=\d+ exp=\d+ server_id=(\d+)", line)
        if m:
            out[unescape(m.group(1))] = int(m.group(2))
    return out


def table_text(sock):
    return cli(sock, "show table relays")


def servers(sock):
    """{server name: (operational state, admin state)}; 2 is up, 0 down."""
    out = {}
    for line in cli(sock, "show servers state relays").splitlines():
        f = line.split()
        if len(f) > 6 and f[1] == "relays":
            out[f[3]] = (int(f[5]), int(f[6]))
    return out


def worker_pid(sock):
    for line in cli(sock, "show info").splitlines():
        if line.startswith("Pid: "):
            return int(line[5:])
    return None


async def until(what, predicate, timeout=TIMEOUT, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:   # a stats socket or process between two lives
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- relay logs

JOINED = re.compile(r'#\S+ joined room="((?:[^"\\]|\\.)*)" id=(\d+)$')
PROXIED = re.compile(r"#\S+ is 127\.0\.0\.1:(\d+) \(PROXY protocol\)$")


def log_size(node):
    return os.path.getsize(NODES[node]["log"])


def joins(node, since=0):
    """[(room, id)] the node logged from byte offset `since` on."""
    with open(NODES[node]["log"], "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [(unescape(m.group(1)), int(m.group(2)))
            for m in map(JOINED.search, text.splitlines()) if m]


def proxied_ports(node):
    with open(NODES[node]["log"], "rb") as f:
        text = f.read().decode(errors="replace")
    return {int(m.group(1)) for m in map(PROXIED.search, text.splitlines()) if m}


def rooms_by_node(names, since=None):
    """{room: {node: [ids]}} for the rooms named, from every node's log."""
    since = since or {}
    where = {r: {} for r in names}
    for node in NODES:
        for room, cid in joins(node, since.get(node, 0)):
            if room in where:
                where[room].setdefault(node, []).append(cid)
    return where


async def placed(names, counts, since=None):
    """Waits until every room's joins are logged (counts[room] of them, on any
    nodes), then returns {room: node}, failing if a room is on two nodes."""
    def logged():
        where = rooms_by_node(names, since)
        if all(sum(len(ids) for ids in where[r].values()) >= counts[r] for r in names):
            return where
        return None
    where = await until("the nodes to log every join", logged, timeout=5)
    out = {}
    for room, nodes in where.items():
        if len(nodes) != 1:
            raise AssertionError(f"room {room} is split across nodes: {nodes}")
        (node, ids), = nodes.items()
        out[room] = node
    return out


def metrics(node):
    with urllib.request.urlopen(f"http://{NODES[node]['metrics']}/metrics", timeout=5) as r:
        text = r.read().decode()
    vals = {}
    for name in ("ws_relay_rooms", "ws_relay_clients"):
        m = re.search(rf"^{name} (\d+)$", text, re.M)
        vals[name] = int(m.group(1))
    return vals


# ---------------------------------------------------------------- clients

class Client:
    def __init__(self, name, ws, lb):
        self.name, self.ws, self.lb = name, ws, lb
        self.inbox = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())
        self.port = ws.local_address[1]

    @classmethod
    async def open(cls, name, lb, path):
        ws = await connect(LB[lb]["url"] + path, ping_interval=None, open_timeout=TIMEOUT)
        return cls(name, ws, lb)

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

    @property
    def closed(self):
        return self.reader.done()

    async def close(self):
        await self.ws.close()
        await self.reader


class Room:
    """A room as its players see it: who is in, in join order, and the next id."""

    def __init__(self, name):
        self.name = name
        self.members = []          # [(id, Client)]
        self.next_id = 1

    def clients(self):
        return [c for _, c in self.members]

    async def join(self, lb):
        cid = self.next_id
        c = await Client.open(f"{self.name} #{cid} via {lb}", lb, self.name)
        await c.expect(f"{cid} self", *[f"{i} join" for i, _ in self.members])
        for _, other in self.members:
            await other.expect(f"{cid} join")
        self.members.append((cid, c))
        self.next_id += 1
        return c

    async def leave(self, c):
        cid = next(i for i, o in self.members if o is c)
        self.members = [(i, o) for i, o in self.members if o is not c]
        await c.close()
        for _, other in self.members:
            await other.expect(f"{cid} quit")

    async def chat(self):
        """Every member sends to the room; every other member hears it."""
        for cid, c in self.members:
            await c.ws.send(f"* hi from {cid}")
            for oid, other in self.members:
                if other is not c:
                    await other.expect(f"{cid} hi from {cid}")
        await asyncio.gather(*(c.quiet() for c in self.clients()))


async def each(rooms, action, limit=25):
    """Runs action(room) for every room, `limit` rooms at a time."""
    sem = asyncio.Semaphore(limit)

    async def one(room):
        async with sem:
            await action(room)
    await asyncio.gather(*(one(r) for r in rooms))


# ---------------------------------------------------------------- checks

async def check_a():
    phase("a. 50 rooms of 4 players through lb1")
    rooms = [Room(OLD.format(i)) for i in range(1, ROOMS + 1)]

    async def fill(room):
        for _ in range(4):
            await room.join("lb1")
        await room.chat()
    await each(rooms, fill)
    where = await placed([r.name for r in rooms], {r.name: 4 for r in rooms})
    for room in rooms:
        ids = sorted(rooms_by_node([room.name])[room.name][where[room.name]])
        if ids != [1, 2, 3, 4]:
            raise AssertionError(f"{room.name}: the node logged ids {ids}")
    spread = {n: sum(1 for r in rooms if where[r.name] == n) for n in NODES}
    if sum(1 for v in spread.values() if v) < 2:
        raise AssertionError(f"every room went to one node: {spread}")
    step(f"every room whole on one node, ids 1..4, every player heard its 3 room-mates; "
         f"rooms per node {spread}")
    for node in NODES:
        m = metrics(node)
        want = {"ws_relay_rooms": spread[node], "ws_relay_clients": 4 * spread[node]}
        if m != want:
            raise AssertionError(f"{node} /metrics says {m}, its log {want}")
    step("each node's /metrics ws_relay_rooms and ws_relay_clients match its log")
    tab = table(LB["lb1"]["sock"])
    for room in rooms:
        if tab.get(room.name) != NODES[where[room.name]]["id"]:
            raise AssertionError(f"lb1's stick entry for {room.name} is {tab.get(room.name)}")
    step("lb1's stick table names each room's node (server_id), full keys (over 32 bytes)")
    return rooms, where


async def check_b():
    phase("b. the seed's three-client exchange through lb1")
    room = "/ws-relay/spacewar"
    c1 = await Client.open("client 1", "lb1", room)
    await c1.expect("1 self")
    c2 = await Client.open("client 2", "lb1", room)
    await c2.expect("2 self", "1 join")
    await c1.expect("2 join")
    c3 = await Client.open("client 3", "lb1", room)
    await c3.expect("3 self", "1 join", "2 join")
    await c1.expect("3 join")
    await c2.expect("3 join")
    await asyncio.gather(c1.quiet(), c2.quiet(), c3.quiet())
    await c1.ws.send("2 hello")
    await c2.expect("1 hello")
    await c1.ws.send("* hello")
    await c2.expect("1 hello")
    await c3.expect("1 hello")
    await asyncio.gather(c1.quiet(), c2.quiet(), c3.quiet())
    await c3.close()
    await c1.expect("3 quit")
    await c2.expect("3 quit")
    await c2.close()
    await c1.expect("2 quit")
    await c1.quiet()
    await c1.close()
    step("self/join in order, '2 hello' to 2 alone, '* hello' to 2 and 3, '3 quit', '2 quit'")


def check_c(rooms, where):
    phase("c. players' addresses in the nodes' logs (PROXY protocol)")
    ports = {node: proxied_ports(node) for node in NODES}
    n = 0
    for room in rooms:
        for c in room.clients():
            if c.port not in ports[where[room.name]]:
                raise AssertionError(f"{c.name}: 127.0.0.1:{c.port} is not in {where[room.name]}'s log")
            n += 1
    step(f"all {n} players' 127.0.0.1:<their own port> are in their node's "
         f"'#.. is 127.0.0.1:PORT (PROXY protocol)' lines")


async def check_d(rooms, where):
    phase("d. a fourth node added through the runtime API, on both balancers")
    cmds = [env["add_server"], "enable health relays/relay4", "enable server relays/relay4"]
    for lb in LB:
        for cmd in cmds:
            answer = cli(LB[lb]["sock"], cmd).strip()
            print(f"    {lb}> {cmd}\n      {answer or '(no answer: done)'}", flush=True)
            if cmd.startswith("add server") and "New server registered" not in answer:
                raise AssertionError(f"{lb}: add server: {answer}")
    for lb in LB:
        await until(f"{lb} to see relay4 up",
                    lambda: servers(LB[lb]["sock"]).get("relay4") == (2, 0), timeout=15)
    step("'add server relays/relay4 ... id 4 ...', 'enable health', 'enable server' on lb1 and lb2: "
         "relay4 up on both, no reload")

    since = {n: log_size(n) for n in NODES}

    async def fifth(room):
        lb = "lb1" if int(room.name.rsplit("=", 1)[1]) % 2 else "lb2"
        await room.join(lb)
    await each(rooms, fifth)
    moved = await placed([r.name for r in rooms], {r.name: 1 for r in rooms}, since)
    for room in rooms:
        if moved[room.name] != where[room.name]:
            raise AssertionError(f"the 5th player of {room.name} went to {moved[room.name]}, "
                                 f"the room is on {where[room.name]}")
    step("a 5th player of each old room, half through lb2, got '5 self' and '1 join'..'4 join' "
         "on the room's node: the stick table, shared by the peers, held")

    new = [Room(NEW.format(i)) for i in range(1, ROOMS + 1)]

    async def fill(room):
        await room.join("lb1")
        await room.join("lb2")
        await room.chat()
    await each(new, fill)
    new_where = await placed([r.name for r in new], {r.name: 2 for r in new})
    spread = {n: sum(1 for r in new if new_where[r.name] == n) for n in NODES}
    if spread["relay4"] == 0:
        raise AssertionError(f"no new room went to the new node: {spread}")
    step(f"50 new rooms (player 1 through lb1, player 2 through lb2) each whole on one node; "
         f"rooms per node {spread}")

    def agree():
        t1, t2 = table(LB["lb1"]["sock"]), table(LB["lb2"]["sock"])
        names = [r.name for r in rooms + new]
        return all(t1.get(n) is not None and t1.get(n) == t2.get(n) for n in names)
    await until("lb1's and lb2's stick tables to agree", agree, timeout=5)
    step("lb1's and lb2's stick tables agree on all 100 rooms")
    where.update(new_where)
    return new


async def check_e(rooms, where):
    phase("e. one node killed (SIGKILL)")
    count = {n: sum(1 for r in rooms if where[r.name] == n) for n in ("relay1", "relay2", "relay3")}
    victim = max(count, key=count.get)
    lost = [r for r in rooms if where[r.name] == victim]
    kept = [r for r in rooms if where[r.name] != victim]
    since = {n: log_size(n) for n in NODES}
    os.kill(NODES[victim]["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    await until(f"{victim}'s players to be cut off",
                lambda: all(c.closed for r in lost for c in r.clients()))
    if any(c.closed for r in kept for c in r.clients()):
        raise AssertionError("players of other nodes were cut off too")
    DEAD.append(victim)
    step(f"{victim} (id {NODES[victim]['id']}, {len(lost)} rooms) killed: all its "
         f"{sum(len(r.members) for r in lost)} players cut off, nobody else")
    for lb in LB:
        await until(f"{lb} to mark {victim} down",
                    lambda: servers(LB[lb]["sock"]).get(victim, (None,))[0] == 0, timeout=20)
    step(f"both balancers marked {victim} down {time.monotonic() - t0:.1f} s after the kill "
         f"(inter 2s fall 3)")

    tab = table(LB["lb1"]["sock"])
    stale = sum(1 for r in lost if tab.get(r.name) == NODES[victim]["id"])
    info(f"before the players come back, lb1 still has {stale} of {len(lost)} entries naming "
         f"{victim}: an entry for a server that is down is skipped, not deleted")

    async def rejoin(room):
        room.members, room.next_id = [], 1
        for k in range(4):
            await room.join("lb1" if k % 2 == 0 else "lb2")
        await room.chat()
    await each(lost, rejoin)
    again = await placed([r.name for r in lost], {r.name: 4 for r in lost}, since)
    for room in lost:
        if again[room.name] == victim:
            raise AssertionError(f"{room.name} formed again on the dead node")

    def pointed():
        t1, t2 = table(LB["lb1"]["sock"]), table(LB["lb2"]["sock"])
        return all(t1.get(r.name) == t2.get(r.name) == NODES[again[r.name]]["id"] for r in lost)
    await until("both balancers' entries to name the rooms' new nodes", pointed, timeout=5)
    spread = {n: sum(1 for r in lost if again[r.name] == n) for n in NODES}
    step(f"their {len(lost)} rooms formed again (ids 1..4, players alternating lb1/lb2), each "
         f"whole on one surviving node {spread}; both tables now name those nodes")
    await each(kept, lambda r: r.chat())
    step(f"the {len(kept)} rooms on the other nodes were not disturbed (everyone still hears everyone)")
    where.update(again)
    del NODES[victim]


async def check_f(rooms, where):
    phase("f. reloads and the stick table (reported; not a failure either way)")
    # lb2 leaves first, so lb1's new process can learn the table only from
    # lb1's old one. Its players leave cleanly first.
    async def leave_lb2(room):
        for c in [c for c in room.clients() if c.lb == "lb2"]:
            await room.leave(c)
    await each(rooms, leave_lb2)
    os.kill(LB["lb2"]["master"], signal.SIGTERM)
    await until("lb2 to exit", lambda: not os.path.exists(f"/proc/{LB['lb2']['master']}")
                or open(f"/proc/{LB['lb2']['master']}/stat").read().split()[2] == "Z")
    # A server added on the socket is gone after a reload unless the file has
    # it too: put relay4's line in lb1's file first, as the README says.
    with open(LB["lb1"]["cfg"], "a") as f:
        f.write(f"    server relay4 {env['add_server'].split(' ', 3)[3]}\n")
    sock = LB["lb1"]["sock"]
    before_text = table_text(sock)
    before = table(sock)
    old = worker_pid(sock)
    os.kill(LB["lb1"]["master"], signal.SIGUSR2)
    t_reload = time.monotonic()
    await until("lb1's new worker", lambda: (worker_pid(sock) or old) != old, timeout=15)
    await asyncio.sleep(1)   # the old process pushes its entries within a fraction of a second
    after_text = table_text(sock)
    after = table(sock)
    same = sum(1 for k, v in before.items() if after.get(k) == v)
    reports = [f"lb1 reload, master-worker (SIGUSR2, as systemctl reload does), local peer lb1 "
               f"(-L lb1): {len(before)} entries before, {len(after)} after, {same} identical"]
    info(reports[-1])
    print("    before: " + "\n            ".join(before_text.splitlines()[:4]), flush=True)
    print("    after:  " + "\n            ".join(after_text.splitlines()[:4]), flush=True)
    alive = [r for r in rooms if r.members]
    if any(c.closed for r in alive for c in r.clients()):
        raise AssertionError("players were cut off by the reload")
    if same < len(before):
        info("the table was not kept whole: no joiners sent (those of rooms whose hash now "
             "names relay4 would start a second room of the same name there)")
    elif alive:
        since = {n: log_size(n) for n in NODES}
        await each(alive, lambda r: r.join("lb1"))
        moved = await placed([r.name for r in alive], {r.name: 1 for r in alive}, since)
        home = sum(1 for r in alive if moved[r.name] == where[r.name])
        step(f"the reload cut no player off (the old worker keeps them); after it, "
             f"{home} of {len(alive)} joiners of live rooms reached their room's node")
        reports.append(f"after the master-worker reload, {home}/{len(alive)} joiners reached their room")

    # lb2 starts again from nothing, as after a restart or a reboot: a new
    # process with no old one learns the table from the other peer.
    with open(LB["lb2"]["cfg"], "a") as f:
        f.write(f"    server relay4 {env['add_server'].split(' ', 3)[3]}\n")
    if os.path.exists(LB["lb2"]["sock"]):
        os.unlink(LB["lb2"]["sock"])   # so its reappearance means the new lb2
    log = open(LB["lb2"]["log"], "a")
    lb2 = subprocess.Popen(["haproxy", "-W", "-L", "lb2", "-f", LB["lb2"]["cfg"]], stdout=log, stderr=log)
    record_pid(lb2.pid)
    t_start = time.monotonic()
    want = table(sock)
    try:
        await until("lb2 to learn lb1's table",
                    lambda: all(table(LB["lb2"]["sock"]).get(k) == v for k, v in want.items()))
        reports.append(f"lb2 restarted from nothing (no old process): had all {len(want)} of lb1's "
                       f"entries {time.monotonic() - t_start:.1f} s after its start")
    except AssertionError:
        got = table(LB["lb2"]["sock"]) if os.path.exists(LB["lb2"]["sock"]) else {}
        reports.append(f"lb2 restarted from nothing: {len(got)} of lb1's {len(want)} entries "
                       f"after {TIMEOUT} s")
    info(reports[-1])

    reports += await asyncio.gather(standalone_reload("sf1", "lb1", 6),
                                    standalone_reload("sf2", "lb1", 1),
                                    standalone_reload("sf3", None, 6))
    if alive:
        cut = sum(1 for r in alive for c in r.clients() if c.closed)
        if cut:
            raise AssertionError(f"{cut} players of lb1's old worker were cut off after the reload")
        await each(alive, lambda r: r.chat())
        step(f"{sum(len(r.members) for r in alive)} players, in rooms spanning lb1's old and new "
             f"workers, still all hear each other {time.monotonic() - t_reload:.0f} s after the reload")
        # The old worker leaves once its last player has: how it leaves is
        # reported (HAProxy 2.6.12 sometimes crashes there; nobody is left).
        await asyncio.gather(*(c.close() for r in alive for c in r.clients()))
        pattern = re.compile(rf"Former worker \({old}\) exited with code (\d+)(.*)")

        def exited():
            with open(LB["lb1"]["log"]) as f:
                return pattern.search(f.read())
        try:
            m = await until("lb1's old worker to leave", exited, timeout=5)
            reports.append(f"lb1's old worker left {time.monotonic() - t_reload:.0f} s after the "
                           f"reload, once its players had: exit code {m.group(1)}{m.group(2)}")
        except AssertionError:
            reports.append("lb1's old worker had not left 5 s after its last player")
        info(reports[-1])
    with open(os.path.join(env["tmp"], "reload-report.txt"), "w") as f:
        f.write("\n".join(reports) + "\n")


async def standalone_reload(name, local, after):
    """Starts a standalone HAProxy (no master-worker), puts 10 rooms in its
    table, reloads it with -sf `after` seconds after its start and reports the
    new process's table."""
    sf = env["standalone"][name]
    if local is None:
        host = socket.gethostname()
        local_args = [] if host not in ("lb1", "lb2") else ["-L", "not-a-peer"]
        label = f"no -L: local peer name '{host}' (the hostname) is not in the peers section"
    else:
        local_args = ["-L", local]
        label = f"-L {local}: the local peer is in the peers section"
    log = open(sf["log"], "a")
    cmd = ["haproxy", *local_args, "-f", sf["cfg"]]
    p1 = subprocess.Popen(cmd, stdout=log, stderr=log)
    started = time.monotonic()
    record_pid(p1.pid)
    await until(f"{name} to start", lambda: os.path.exists(sf["sock"]) and worker_pid(sf["sock"]))
    LB[name] = {"url": sf["url"], "sock": sf["sock"]}
    for dead in DEAD:   # a fresh HAProxy takes every server for up until checked
        cli(sf["sock"], f"disable server relays/{dead}")
    for i in range(10):
        c = await Client.open(f"{name} player {i}", name, f"/ws-relay/reload-{name}?game={i}")
        await c.expect("1 self")
        await c.close()
    await asyncio.sleep(max(0, started + after - time.monotonic()))
    before_text = table_text(sf["sock"])
    before = table(sf["sock"])
    label += f", reloaded {time.monotonic() - started:.1f} s after its start"
    p2 = subprocess.Popen(cmd + ["-sf", str(p1.pid)], stdout=log, stderr=log)
    record_pid(p2.pid)
    await until(f"{name}'s new process", lambda: (worker_pid(sf["sock"]) or p1.pid) == p2.pid, timeout=15)
    try:
        await asyncio.wait_for(asyncio.to_thread(p1.wait), 10)
    except asyncio.TimeoutError:
        info(f"{name}: the old process had not left 10 s after -sf")
    await asyncio.sleep(1)
    after_text = table_text(sf["sock"])
    after = table(sf["sock"])
    same = sum(1 for k, v in before.items() if after.get(k) == v)
    report = (f"standalone HAProxy reloaded with -sf, {label}: "
              f"{len(before)} entries before, {len(after)} after, {same} identical")
    info(report + "\n    before: " + "\n            ".join(before_text.splitlines()[:3])
         + "\n    after:  " + "\n            ".join(after_text.splitlines()[:3]))
    p2.terminate()
    await asyncio.to_thread(p2.wait)
    return report


async def main():
    t0 = time.monotonic()
    for lb in LB:
        await until(f"{lb}'s stats socket", lambda: os.path.exists(LB[lb]["sock"]))
        await until(f"{lb} to see relay1..3 up",
                    lambda: all(servers(LB[lb]["sock"]).get(f"relay{i}") == (2, 0) for i in (1, 2, 3)))
    rooms, where = await check_a()
    await check_b()
    check_c(rooms, where)
    new = await check_d(rooms, where)
    await check_e(rooms + new, where)
    await check_f(rooms + new, where)
    print(f"== {len(results)} checks passed in {time.monotonic() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (AssertionError, InvalidStatus, ConnectionClosed, OSError, asyncio.TimeoutError) as e:
        sys.exit(f"  failed: {type(e).__name__}: {e}")
