"""Scrapes /metrics after a known exchange and reads it with the official
Prometheus Python client's parser: the exposition must parse, name its
families and types as Prometheus expects, and count exactly what happened."""
import asyncio
import sys
import urllib.request

import websockets
from prometheus_client.parser import text_string_to_metric_families

relay, metrics = sys.argv[1], sys.argv[2]
ROOM = f"ws://{relay}/ws-relay/metrics-check"


async def expect(ws, *messages):
    for want in messages:
        got = await asyncio.wait_for(ws.recv(), 5)
        assert got == want, f"expected {want!r}, got {got!r}"


async def exchange():
    c1 = await websockets.connect(ROOM)
    await expect(c1, "1 self")
    c2 = await websockets.connect(ROOM)
    await expect(c2, "2 self", "1 join")
    c3 = await websockets.connect(ROOM)
    await expect(c3, "3 self", "1 join", "2 join")
    await expect(c1, "2 join", "3 join")
    await expect(c2, "3 join")
    await c1.send("2 hello")
    await c1.send("* hello")
    await c1.send("9 nobody")
    await expect(c2, "1 hello", "1 hello")
    await expect(c3, "1 hello")
    await c3.send("* self")
    try:
        await asyncio.wait_for(c3.recv(), 5)
        raise AssertionError("a spoofed self was relayed")
    except websockets.ConnectionClosed as e:
        assert e.rcvd.code == 1008, e
    await expect(c1, "3 quit")
    await expect(c2, "3 quit")
    await c2.close()
    await expect(c1, "2 quit")
    return c1


def scrape():
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        return r.read().decode()


async def main():
    c1 = await exchange()
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://{relay}/ws-relay/x", method="POST"), timeout=5)
        raise AssertionError("POST was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405, e
    text = scrape()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    declared = [l for l in text.splitlines() if l.startswith("# TYPE ")]
    assert len(families) == len(declared), f"family names collide: {sorted(families)} from {declared}"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        assert key in samples, f"no sample {key}"
        return samples[key]

    types = {name: f.type for name, f in families.items()}
    for name, kind in [("ws_relay_clients", "gauge"), ("ws_relay_rooms", "gauge"),
                       ("ws_relay_messages_received", "counter"), ("ws_relay_messages_delivered", "counter"),
                       ("ws_relay_received_bytes", "counter"), ("ws_relay_sent_bytes", "counter"),
                       ("ws_relay_closes", "counter"), ("ws_relay_messages_dropped", "counter"),
                       ("ws_relay_handshakes_rejected", "counter"), ("ws_relay_loop_turn_seconds", "histogram")]:
        assert types.get(name) == kind, f"{name}: {types.get(name)} instead of {kind}"
    want = {
        ("ws_relay_clients", ()): 1,
        ("ws_relay_rooms", ()): 1,
        ("ws_relay_upgrades_total", ()): 3,
        ("ws_relay_messages_received_total", ()): 4,
        # joins 1 + 3 + 5, messages 1 + 2, quits 2 + 1
        ("ws_relay_messages_delivered_total", ()): 15,
        ("ws_relay_messages_dropped_total", (("reason", "no_such_id"),)): 1,
        ("ws_relay_closes_total", (("reason", "relay_error"),)): 1,
        ("ws_relay_closes_total", (("reason", "client_close"),)): 1,
        ("ws_relay_handshakes_rejected_total", (("status", "405"),)): 1,
    }
    for (name, labels), expected in want.items():
        got = value(name, **dict(labels))
        assert got == expected, f"{name}{dict(labels)}: {got} instead of {expected}"
    assert value("ws_relay_received_bytes_total") > 3 * 100
    assert value("ws_relay_sent_bytes_total") > 0
    turns = families["ws_relay_loop_turn_seconds"]
    buckets = [(float(s.labels["le"]), s.value) for s in turns.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets), "buckets are cumulative and ordered"
    count = value("ws_relay_loop_turn_seconds_count")
    assert count >= 10 and buckets[-1] == (float("inf"), count), (count, buckets[-1])
    assert value("ws_relay_loop_turn_seconds_sum") > 0
    await c1.close()
    print(f"metrics: {len(families)} families parsed by prometheus_client; "
          f"{int(count)} loop turns, {int(value('ws_relay_messages_delivered_total'))} deliveries")


asyncio.run(main())
