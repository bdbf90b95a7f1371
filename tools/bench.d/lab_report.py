#!/usr/bin/env python3
"""The report of tools/bench lab: a steady client's requests across the cut of one
of two replicas' nodes. Target: no request started after the cut fails; p99 latency
of those started in the 10 s after it at most 1 s.

usage: lab_report.py REQUESTS.jsonl CUT_EPOCH RATE
"""
import json, sys

requests = [json.loads(line) for line in open(sys.argv[1])]
cut, rate = float(sys.argv[2]), float(sys.argv[3])
# A request tried node 2 first when it paid the race's stagger (250 ms) or more.
SLOW = 0.2


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def ms(value):
    return f"{value * 1000:.1f}"


before = [r for r in requests if r["start"] + r["latency"] < cut]
in_flight = [r for r in requests if r["start"] < cut <= r["start"] + r["latency"]]
after = [r for r in requests if r["start"] >= cut]
window = [r for r in after if r["start"] < cut + 10]
failed_after = [r for r in after if not r["ok"]]
failed_in_flight = [r for r in in_flight if not r["ok"]]
slow_after = [r for r in after if r["latency"] >= SLOW]
last_slow = max((r["start"] - cut for r in slow_after), default=None)
servers_after = {}
for r in after:
    if r["ok"]:
        servers_after[r["server"]] = servers_after.get(r["server"], 0) + 1
p99 = quantile([r["latency"] for r in window], 0.99)

print("# BeeMesh lab benchmark: a steady client while one of two replicas' nodes is cut\n")
print(f"{len(requests)} requests at {rate:g} a second, each a new connection from frontend's pod (node 1) to "
      f"orders.default.mesh; node 2 cut off the LAN {ms(cut - requests[0]['start'])} ms after the first.\n")
print("| requests | count | failed | p50 (ms) | p99 (ms) | max (ms) |")
print("|---|---:|---:|---:|---:|---:|")
for label, rows in [("before the cut", before), ("in flight at the cut", in_flight),
                    ("started in the 10 s after the cut", window), ("started after the cut (all)", after)]:
    latencies = [r["latency"] for r in rows]
    failed = sum(1 for r in rows if not r["ok"])
    print(f"| {label} | {len(rows)} | {failed} | {ms(quantile(latencies, 0.5))} | {ms(quantile(latencies, 0.99))} | "
          f"{ms(max(latencies, default=float('nan')))} |")
print()
print(f"- requests after the cut that tried node 2 first (latency >= {SLOW * 1000:.0f} ms): {len(slow_after)}; "
      f"the last started {'-' if last_slow is None else f'{last_slow:.1f} s'} after the cut "
      "(node 2's endpoint is ejected after each such attempt, 1 s then doubling, until its record expires)")
print(f"- answered after the cut by: {', '.join(f'{k} {v}' for k, v in sorted(servers_after.items())) or 'nobody'}")
for r in (failed_in_flight + failed_after)[:5]:
    print(f"- failed: started {r['start'] - cut:+.2f} s from the cut: {r.get('error', '')}")
verdict = "PASS" if not failed_after and p99 <= 1.0 else "FAIL"
print(f"\n{verdict}: {len(failed_after)} failed after the cut (target 0), p99 in the 10 s after it {ms(p99)} ms "
      f"(target <= 1000); {len(failed_in_flight)} in flight at the cut failed")
