#!/usr/bin/env python3
"""Render the `tools/bench policy` results file as markdown.

usage: policy_report.py RESULTS_FILE
"""
import sys


def main(path):
    values, facts = {}, {}
    for line in open(path):
        key, _, value = line.rstrip("\n").partition("=")
        if key.startswith("meta."):
            facts[key[5:]] = value
        else:
            values[key] = value

    def number(key):
        try:
            return float(values[key])
        except (KeyError, ValueError):
            return None

    def cell(key, decimals=3):
        value = number(key)
        return "-" if value is None else ("{:,.%df}" % decimals).format(value)

    print("# BeeMesh policy benchmark\n")
    for name in sorted(facts):
        print("- %s: %s" % (name, facts[name]))
    print("- set: %s rules selecting the workload, %s decisions timed one by one (Benchmarks/, PolicyBenchmarks;"
          " each sample also carries the harness's own cost, 'empty iteration' p50 %s us)"
          % (values.get("set.rules", "?"), values.get("indexed.samples", "?"), values.get("empty.p50_us", "?")))
    print()
    print("| metric | p50 (us) | p99 (us) | max (us) |")
    print("|---|---:|---:|---:|")
    for key, label in (
        ("indexed", "decision, indexed"),
        ("linear", "decision, linear scan (baseline)"),
        ("reload", "full reload: read, parse, compile"),
        ("reload_read", "  of which read"),
        ("reload_parse", "  of which parse"),
        ("reload_compile", "  of which compile"),
        ("reload_one_file", "reload after one file changed"),
    ):
        print("| %s | %s | %s | %s |" % (label, cell(key + ".p50_us"), cell(key + ".p99_us"), cell(key + ".max_us")))
    indexed, linear = number("indexed.p99_us"), number("linear.p99_us")
    if indexed and linear:
        print("\nindexed/linear at p99: %.4f" % (indexed / linear))
    print("\nReloads under traffic: %s new connections (wrk -c16, Connection: close), %s file edits, "
          "%s policy reloads, %s denied connections, wrk errors: %s"
          % (values.get("traffic.requests", "?"), values.get("traffic.edits", "?"),
             values.get("traffic.reloads", "?"), values.get("traffic.denied", "?"),
             values.get("traffic.nc.errors", "none")))
    print("\nTargets:")
    checks = (
        ("decision p99 (us)", number("indexed.p99_us"), 2.0),
        ("full reload p50 (ms)", (number("reload.p50_us") or 0) / 1000 if number("reload.p50_us") else None, 100.0),
    )
    for label, value, target in checks:
        if value is None:
            print("- MISSING %s" % label)
        else:
            print("- %s %s = %.3f (target <= %.0f)" % ("PASS" if value <= target else "FAIL", label, value, target))
    dropped = values.get("traffic.nc.errors")
    print("- %s no connection dropped during reloads (%s)" % ("PASS" if not dropped else "FAIL", dropped or "0 errors"))


if __name__ == "__main__":
    main(sys.argv[1])
