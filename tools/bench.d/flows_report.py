#!/usr/bin/env python3
"""Render the `tools/bench flows` results file as markdown.

usage: flows_report.py RESULTS_FILE

Lines: meta.<name>=..., flows_on.<metric>=<n> and flows_off.<metric>=<n> (one per
round; the same sidecar pair with flow recording and metrics on, and off), and
flows_on.recorded=<flows> <requests> (flows the server's table held or evicted, and
HTTP requests counted in the flows it held: proof that it recorded). Ratios are on/off per round, paired because both pairs were loaded at the same moment; the
table shows the medians of both figures and of the ratios. Target: recording costs
less than 5% of throughput and of keep-alive req/s (ratio >= 0.95); the CPU both
sidecars spend per request, steadier than req/s on a shared machine, shows the same
cost directly (ratio <= 1.05).
"""
import statistics
import sys

from results import cell, print_facts, print_notes, read_rounds

ROWS = (
    ("tput.gbps", "iperf3 throughput (Gbit/s)", 2, (">=", 0.95)),
    ("tput.cpu_ms_per_gib", "CPU of both sidecars per GiB relayed (ms)", 1, ("<=", 1.05)),
    ("ka.rps", "keep-alive req/s (wrk -c32, HTTP port: every request recorded)", 0, (">=", 0.95)),
    ("ka.p99_ms", "keep-alive latency p99 (ms)", 3, None),
    ("ka.cpu_us_per_request", "CPU of both sidecars per keep-alive request (µs)", 2, ("<=", 1.05)),
)


def main(path):
    values, facts, notes = read_rounds(path)
    # "<flows> <requests>" per round: text, so read_rounds filed it as a note.
    recorded = ", ".join(n.split(": ", 1)[1] for n in notes if n.startswith("flows_on.recorded:")) or "-"
    notes = [n for n in notes if not n.startswith("flows_on.recorded:")]

    print("# BeeMesh flows benchmark: the cost of recording flows and metrics\n")
    print_facts(facts)
    print("- flows recorded by the server sidecar per round (flows, HTTP requests in the flows kept): %s" % recorded)
    print()
    print("| metric | recording on | recording off | on/off per round | median | target |")
    print("|---|---:|---:|---|---:|---|")
    for key, label, decimals, target in ROWS:
        on, off = values.get("flows_on." + key, []), values.get("flows_off." + key, [])
        ratios = [a / b for a, b in zip(on, off) if b]
        median = statistics.median(ratios) if ratios else None
        verdict = "-"
        if target is not None and median is not None:
            sense, bound = target
            passed = median >= bound if sense == ">=" else median <= bound
            verdict = ("PASS" if passed else "FAIL") + " (%s %.2f)" % (sense, bound)
        print(
            "| %s | %s | %s | %s | %s | %s |"
            % (
                label,
                cell(statistics.median(on) if on else None, decimals),
                cell(statistics.median(off) if off else None, decimals),
                ", ".join("%.3f" % r for r in ratios) or "-",
                "-" if median is None else "%.3f" % median,
                verdict,
            )
        )
    print_notes(notes)


if __name__ == "__main__":
    main(sys.argv[1])
