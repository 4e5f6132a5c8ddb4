"""Turns compare.sh's JSON lines into the README's Markdown table, with each
reference's figure and ws-relay's ratio against it. A scenario run in several
rounds is shown as the median of its rounds, figure by figure."""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
relays = ["ws-relay", "tokio-tungstenite", "node-ws"]


def pick(relay, scenario, mode=None):
    runs = [r for r in rows
            if r["relay"] == relay and r["scenario"] == scenario and (mode is None or r.get("mode") == mode)]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0] if runs else None
    merged = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, (int, float)) and key != "round":
            merged[key] = statistics.median(r[key] for r in good if isinstance(r.get(key), (int, float)))
    merged["rounds"] = len(good)
    return merged


def fmt(r, key, unit="", digits=2):
    if r is None or r.get(key) is None:
        return "n/a" if r is None or "error" not in r else "error"
    return f"{r[key]:.{digits}f}{unit}"


def latency(r):
    if r is None or "error" in r:
        return "error"
    return (f"{r['delivered']:,} of {r['expected']:,} delivered ({100 * (1 - r['loss']):.2f}%); "
            f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, p99.9 {r['p999_ms']:.2f} ms; "
            f"{fmt(r, 'relay_us_per_delivery', ' µs')} relay CPU/delivery; load tool CPU {fmt(r, 'tool_cpu_percent', '%', 0)}")


def ratio(a, b, better_low):
    if a is None or b is None or not a or not b:
        return "n/a"
    return f"{(b / a if better_low else a / b):.1f}×"


print("| scenario | ws-relay | tokio-tungstenite | node-ws | ws-relay vs tokio | ws-relay vs node |")
print("| --- | --- | --- | --- | --- | --- |")
for scenario, label in [("game", "game: 64 rooms × 8 clients × 30 Hz × 200 B"),
                        ("bigroom", "big room: 1 room × 200 clients × 5 Hz × 100 B")]:
    cells = [pick(r, scenario) for r in relays]
    us = [c.get("p99_ms") if c and "error" not in c else None for c in cells]
    cpu = [c.get("relay_us_per_delivery") if c and "error" not in c else None for c in cells]
    print(f"| {label} | " + " | ".join(latency(c) for c in cells)
          + f" | p99 {ratio(us[0], us[1], True)} lower, CPU/delivery {ratio(cpu[0], cpu[1], True)} lower"
          + f" | p99 {ratio(us[0], us[2], True)} lower, CPU/delivery {ratio(cpu[0], cpu[2], True)} lower |")
best = [pick(r, "ramp", "ramp-best") for r in relays]
rates = [b["deliveries_per_s"] if b else None for b in best]
print("| ramp: 16 rooms × 16 clients × 200 B, highest rate with loss ≤ 1% and p99 ≤ 50 ms | "
      + " | ".join(f"{x:,.0f} deliveries/s (tool CPU {fmt(b, 'tool_cpu_percent', '%', 0)})" if x else "n/a"
                   for x, b in zip(rates, best))
      + f" | {ratio(rates[0], rates[1], False)} | {ratio(rates[0], rates[2], False)} |")
idle = [pick(r, "idle") for r in relays]
kib = [i.get("relay_kib_per_connection") if i else None for i in idle]
print("| idle: relay RSS per open connection | "
      + " | ".join(f"{k:.2f} KiB ({i['connections']:,} held)" if k is not None else "n/a" for k, i in zip(kib, idle))
      + f" | {ratio(kib[0], kib[1], True)} less | {ratio(kib[0], kib[2], True)} less |")
churn = [pick(r, "churn") for r in relays]
cps = [c.get("cycles_per_s") if c else None for c in churn]
print("| churn: connect, `self`, close; 4 clients watching | "
      + " | ".join(f"{x:,.0f} cycles/s" if x else "n/a" for x in cps)
      + f" | {ratio(cps[0], cps[1], False)} | {ratio(cps[0], cps[2], False)} |")
