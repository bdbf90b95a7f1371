#!/usr/bin/env python3
"""Render the `tools/bench capture` results file as markdown.

usage: capture_report.py RESULTS_FILE

Lines: meta.<name>=..., capture.<name>=..., explicit.nc.<metric>=<n> and
captured.nc.<metric>=<n> (one per round; the table shows medians).
"""
import statistics
import sys

ROWS = (
    ("nc.rps", "new connections/s (wrk -c16, Connection: close)", 0),
    ("nc.p50_ms", "latency p50 (ms)", 3),
    ("nc.p99_ms", "latency p99 (ms)", 3),
)


def main(path):
    values, facts, notes = {}, {}, []
    for line in open(path):
        key, _, value = line.rstrip("\n").partition("=")
        if key.startswith(("meta.", "capture.")):
            facts[key.split(".", 1)[1]] = value
            continue
        try:
            values.setdefault(key, []).append(float(value))
        except ValueError:
            notes.append("%s: %s" % (key, value))

    def median(key):
        return statistics.median(values[key]) if key in values else None

    def cell(value, decimals):
        return "-" if value is None else ("{:,.%df}" % decimals).format(value)

    print("# BeeMesh capture benchmark: the cost of the nftables redirect\n")
    for name in sorted(facts):
        print("- %s: %s" % (name, facts[name]))
    print()
    print("| metric | explicit route | captured | captured/explicit |")
    print("|---|---:|---:|---:|")
    for key, label, decimals in ROWS:
        explicit, captured = median("explicit." + key), median("captured." + key)
        ratio = "-" if not explicit or captured is None else "%.2f" % (captured / explicit)
        print("| %s | %s | %s | %s |" % (label, cell(explicit, decimals), cell(captured, decimals), ratio))
    if notes:
        print("\nNotes:")
        for note in notes:
            print("- " + note)


if __name__ == "__main__":
    main(sys.argv[1])
