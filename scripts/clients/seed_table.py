"""Runs the seed's three-client exchange through client programs we did not
write, each a process that prints `< msg` per message and sends its stdin
lines, and checks every message each client receives, in order.

    seed_table.py ADDR PYTHON NODE_DIR                 # over ws://
    seed_table.py ADDR PYTHON NODE_DIR TLS_ADDR CA     # over wss:// to TLS_ADDR,
                                                       # and wss:// mixed with ws://

Over wss:// every client verifies the relay's certificate against CA, a PEM
file: the library clients take it as an argument, `python -m websockets` has
no option for it and gets it as SSL_CERT_FILE, which OpenSSL's default trust
store reads. Each client is also shown to refuse the certificate without CA."""
import os
import queue
import re
import subprocess
import sys
import threading

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]")


class Client:
    def __init__(self, argv, name, env=None):
        self.name = name
        self.output = []
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.output.append(raw)
            # `python -m websockets` draws a prompt with terminal escapes; keep the messages.
            for m in re.finditer(r"< (.*)", ANSI.sub("", raw).replace("\r", "")):
                self.lines.put(m.group(1).strip())

    def expect(self, *messages):
        for want in messages:
            try:
                got = self.lines.get(timeout=10)
            except queue.Empty:
                said = ""
                if self.proc.poll() is not None:
                    said = f"; it exited {self.proc.returncode}: {''.join(self.output)[-300:]!r}"
                raise AssertionError(f"{self.name}: waited for {want!r}, got nothing{said}")
            if got != want:
                raise AssertionError(f"{self.name}: expected {want!r}, got {got!r}")

    def quiet(self):
        try:
            got = self.lines.get(timeout=0.3)
        except queue.Empty:
            return
        raise AssertionError(f"{self.name}: unexpected {got!r}")

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def quit(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def scenario(makers, room):
    c1 = makers[0](room, "client 1")
    c1.expect("1 self")
    c2 = makers[1](room, "client 2")
    c2.expect("2 self", "1 join")
    c1.expect("2 join")
    c3 = makers[2](room, "client 3")
    c3.expect("3 self", "1 join", "2 join")
    c1.expect("3 join")
    c2.expect("3 join")
    c1.send("2 hello")
    c2.expect("1 hello")
    c1.send("* hello")
    c2.expect("1 hello")
    c3.expect("1 hello")
    c1.quiet()
    c3.quit()
    c1.expect("3 quit")
    c2.expect("3 quit")
    c2.quit()
    c1.expect("2 quit")
    c1.quit()


def refused(maker):
    """A client given no CA must refuse the self-signed certificate: it exits
    non-zero, says why, and receives nothing."""
    c = maker("/ws-relay/untrusted", "client")
    try:
        code = c.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        c.proc.kill()
        raise AssertionError(f"{c.name}: still connected after 20 s to a relay whose certificate it cannot trust")
    c.proc.stdin.close()
    c.reader.join(timeout=5)  # everything it printed
    said = "".join(c.output)
    if code == 0:
        raise AssertionError(f"{c.name}: exited 0: {said!r}")
    if not re.search(r"certificate", said, re.I):
        raise AssertionError(f"{c.name}: exited {code} without naming the certificate: {said!r}")
    if not c.lines.empty():
        raise AssertionError(f"{c.name}: received {c.lines.get()!r} from a relay it cannot trust")


def main():
    addr, python, node_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    tls_addr, ca = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    here = sys.path[0]
    # Without SSL_CERT_FILE: only what a client is given explicitly is trusted.
    clean = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS")}

    # Each maker connects one kind of client to `room` on one port: ws:// to
    # ADDR, or wss:// to TLS_ADDR trusting `trust` (None: nothing but the system's store).
    def lib(secure=False, trust=ca):
        def make(room, name):
            if secure:
                argv = [python, "-u", f"{here}/ws_client.py", f"wss://{tls_addr}{room}"] + ([trust] if trust else [])
                return Client(argv, f"{name} (python websockets, wss)", clean)
            return Client([python, "-u", f"{here}/ws_client.py", f"ws://{addr}{room}"], f"{name} (python websockets)")
        return make

    def cli(secure=False, trust=ca):
        def make(room, name):
            if secure:
                env = dict(clean, SSL_CERT_FILE=trust) if trust else clean
                return Client([python, "-u", "-m", "websockets", f"wss://{tls_addr}{room}"],
                              f"{name} (python -m websockets, wss)", env)
            return Client([python, "-u", "-m", "websockets", f"ws://{addr}{room}"], f"{name} (python -m websockets)")
        return make

    def node(secure=False, trust=ca):
        def make(room, name):
            if secure:
                argv = ["node", f"{here}/ws_client.mjs", f"wss://{tls_addr}{room}"] + ([trust] if trust else [])
                return Client(argv, f"{name} (node ws, wss)", clean)
            return Client(["node", f"{here}/ws_client.mjs", f"ws://{addr}{room}"], f"{name} (node ws)")
        return make

    if tls_addr is None:
        scenarios = {
            "python websockets x3": [lib(), lib(), lib()],
            "node ws x3": [node(), node(), node()],
            "python -m websockets x3": [cli(), cli(), cli()],
            "mixed: node, python -m websockets, python websockets": [node(), cli(), lib()],
        }
        refusals = {}
    else:
        wss = dict(secure=True)
        scenarios = {
            "wss: python websockets x3": [lib(**wss), lib(**wss), lib(**wss)],
            "wss: node ws x3": [node(**wss), node(**wss), node(**wss)],
            "wss: python -m websockets x3": [cli(**wss), cli(**wss), cli(**wss)],
            "wss: mixed: node, python -m websockets, python websockets": [node(**wss), cli(**wss), lib(**wss)],
            # One room whatever the port: the room is the request target.
            "wss and ws in one room: node wss, python websockets ws, python -m websockets wss":
                [node(**wss), lib(), cli(**wss)],
            "ws and wss in one room: python -m websockets ws, python websockets wss, node ws":
                [cli(), lib(**wss), node()],
        }
        refusals = {
            f"wss without the CA: {name} refuses the certificate": make(secure=True, trust=None)
            for name, make in [("python websockets", lib), ("node ws", node), ("python -m websockets", cli)]
        }
    passed = failed = 0
    scheme = "wss" if tls_addr else "clients"
    for i, (name, makers) in enumerate(scenarios.items()):
        try:
            scenario(makers, f"/ws-relay/{scheme}-{i}?game=1")
            print(f"PASS {name}")
            passed += 1
        except AssertionError as e:
            print(f"FAIL {name}: {e}")
            failed += 1
    for name, maker in refusals.items():
        try:
            refused(maker)
            print(f"PASS {name}")
            passed += 1
        except AssertionError as e:
            print(f"FAIL {name}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
