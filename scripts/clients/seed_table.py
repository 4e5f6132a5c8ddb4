"""Runs the seed's three-client exchange through client programs we did not
write, each a process that prints `< msg` per message and sends its stdin
lines, and checks every message each client receives, in order."""
import queue
import re
import subprocess
import sys
import threading

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]")


class Client:
    def __init__(self, argv, name):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            # `python -m websockets` draws a prompt with terminal escapes; keep the messages.
            for m in re.finditer(r"< (.*)", ANSI.sub("", raw).replace("\r", "")):
                self.lines.put(m.group(1).strip())

    def expect(self, *messages):
        for want in messages:
            try:
                got = self.lines.get(timeout=10)
            except queue.Empty:
                raise AssertionError(f"{self.name}: waited for {want!r}, got nothing")
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


def scenario(makers, url):
    c1 = makers[0](url, "client 1")
    c1.expect("1 self")
    c2 = makers[1](url, "client 2")
    c2.expect("2 self", "1 join")
    c1.expect("2 join")
    c3 = makers[2](url, "client 3")
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


def main():
    addr, python, node_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    here = sys.path[0]
    lib = lambda url, name: Client([python, "-u", f"{here}/ws_client.py", url], f"{name} (python websockets)")
    cli = lambda url, name: Client([python, "-u", "-m", "websockets", url], f"{name} (python -m websockets)")
    node = lambda url, name: Client(["node", f"{here}/ws_client.mjs", url], f"{name} (node ws)")
    scenarios = {
        "python websockets x3": [lib, lib, lib],
        "node ws x3": [node, node, node],
        "python -m websockets x3": [cli, cli, cli],
        "mixed: node, python -m websockets, python websockets": [node, cli, lib],
    }
    passed = failed = 0
    for i, (name, makers) in enumerate(scenarios.items()):
        url = f"ws://{addr}/ws-relay/clients-{i}?game=1"
        try:
            scenario(makers, url)
            print(f"PASS {name}")
            passed += 1
        except AssertionError as e:
            print(f"FAIL {name}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
