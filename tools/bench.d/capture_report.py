#!/usr/bin/env python3
"""Render the `tools/bench capture` results file as markdown.

usage: capture_report.py RESULTS_FILE

Lines: meta.<name>=..., capture.<name>=..., explicit.nc.<metric>=<n> and
captured.nc.<metric>=<n> (one per round; the table shows medians).
"""
import sys

from results import cell, median, print_facts, print_notes, read_rounds

ROWS = (
    ("nc.rps", "new connections/s (wrk -c16, Connection: close)", 0),
    ("nc.p50_ms", "latency p50 (ms)", 3),
    ("nc.p99_ms", "latency p99 (ms)", 3),
)


def main(path):
    values, facts, notes = read_rounds(path, ("meta.", "capture."))

    print("# BeeMesh capture benchmark: the cost of the nftables redirect\n")
    print_facts(facts)
    print()
    print("| metric | explicit route | captured | captured/explicit |")
    print("|---|---:|---:|---:|")
    for key, label, decimals in ROWS:
        explicit, captured = median(values, "explicit." + key), median(values, "captured." + key)
        ratio = "-" if not explicit or captured is None else "%.2f" % (captured / explicit)
        print("| %s | %s | %s | %s |" % (label, cell(explicit, decimals), cell(captured, decimals), ratio))
    print_notes(notes)


if __name__ == "__main__":
    main(sys.argv[1])
