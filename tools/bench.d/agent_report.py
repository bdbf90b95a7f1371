#!/usr/bin/env python3
"""The report of tools/bench agent: pod start times through the agent and through
`podman kube play`, per round and their ratio (target: median at most 1.5x).

usage: agent_report.py RESULTS   (lines "mesh|plain ROUND MILLISECONDS")
"""
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
mesh = [int(ms) for kind, _, ms in rows if kind == "mesh"]
plain = [int(ms) for kind, _, ms in rows if kind == "plain"]
ratios = [m / p for m, p in zip(mesh, plain)]
median = statistics.median(ratios)
print("# BeeMesh agent benchmark: pod start time\n")
print("| setup | per round (ms) | median (ms) |")
print("|---|---|---:|")
print(f"| beemesh-agent (sidecar, identity, capture, ready, app) | {', '.join(map(str, mesh))} | {statistics.median(mesh):.0f} |")
print(f"| podman kube play (app only) | {', '.join(map(str, plain))} | {statistics.median(plain):.0f} |")
print(f"\nratio per round: {', '.join(f'{r:.2f}' for r in ratios)}; median {median:.2f} "
      f"({'PASS' if median <= 1.5 else 'FAIL'}, target <= 1.5)")
