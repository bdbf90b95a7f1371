#!/usr/bin/env python3
"""The report of tools/bench flood: the targets met or missed, the flood and the
legitimate client's figures, and the server sidecar's inbound counters.

usage: flood_report.py FLOOD_RESULTS "SERVER COUNTERS"
"""
import sys
values = dict(line.strip().split("=", 1) for line in open(sys.argv[1]) if "=" in line)
f = lambda key: float(values[key])
checks = [
    ("legitimate new connections during the flood succeed", f"{f('flood.success_pct'):.2f}%", ">= 99%", f("flood.success_pct") >= 99),
    ("their p99 / the quiet p99 (same run)", f"{f('flood.p99_ratio'):.2f}x ({values['flood.p99_ms']} / {values['quiet.p99_ms']} ms)", "<= 3x", f("flood.p99_ratio") <= 3),
    ("server RSS 30 s after / before the flood", f"{f('rss.after_ratio'):.3f} ({values['rss.after_mb']} / {values['rss.before_mb']} MB)", "<= 1.10", f("rss.after_ratio") <= 1.10),
]
print("# tools/bench flood\n")
print("| target | measured | wanted | |\n| --- | --- | --- | --- |")
for name, measured, wanted, ok in checks:
    print(f"| {name} | {measured} | {wanted} | {'met' if ok else 'MISSED'} |")
print()
print(f"Flood: {values['flood.connections_opened']} connections opened from 127.0.0.2 ({values['flood.closed_by_server']} closed by the server, most at accept), at most {values['flood.peak_held']} held at once; server RSS peaked at {values['rss.during_mb']} MB.")
print(f"Legitimate client: {values['quiet.ok']} quiet connections (p50 {values['quiet.p50_ms']} ms), {values['flood.ok']} during the flood ({values['flood.failed']} failed, p50 {values['flood.p50_ms']} ms).")
print()
print("Server counters: `" + sys.argv[2].strip() + "`")
