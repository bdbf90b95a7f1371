#!/usr/bin/env python3
"""Check the output of `beemesh-dht-sim` against the DHT targets (for `tools/bench dht`).

usage: dht_report.py SIMULATOR_OUTPUT_TEXT [PUBLISHING_LOAD_OUTPUT_TEXT]

Targets: lookup success >= 99.9% without churn and >= 99% while a third of the nodes
leave and others join; hops p50 <= 4 and p99 <= 6; no record lost when a third of the
nodes leave at once (for keys with three publishers, all three); no forged, expired
or rolled-back record stored. With the publishing load's output (`--records-per-node`):
each node sends under 50 messages a second on average for publishing and maintenance.
"""
import re
import sys


def main(text, load=None):
    def find(pattern, within=None):
        within = text if within is None else within
        m = re.search(pattern, within, re.M)
        if not m:
            raise SystemExit("simulator output lacks %r:\n%s" % (pattern, within))
        return m.groups()

    steady, = find(r"lookup success \(steady\)\s+([0-9.]+)%")
    churn, = find(r"lookup success \(churn\)\s+([0-9.]+)%")
    p50, p99 = find(r"hops p50 / p99\s+(\d+) / (\d+)")
    found, records = find(r"records found after .* left\s+(\d+) of (\d+)")
    forged, offered = find(r"forged/expired/rolled-back stored\s+(\d+) of (\d+)")
    merged_keys, merged_complete = find(r"all publishers of the (\d+) keys with three: (\d+)")
    checks = [
        ("lookup success without churn", float(steady) >= 99.9, "%s%% (>= 99.9%%)" % steady),
        ("lookup success under churn", float(churn) >= 99.0, "%s%% (>= 99%%)" % churn),
        ("hops p50", int(p50) <= 4, "%s (<= 4)" % p50),
        ("hops p99", int(p99) <= 6, "%s (<= 6)" % p99),
        ("records kept when a third leave", found == records, "%s of %s" % (found, records)),
        ("forged, expired, rolled-back stored", forged == "0", "%s of %s offered" % (forged, offered)),
        (
            "every publisher of a shared key found",
            merged_complete == merged_keys,
            "%s of %s keys" % (merged_complete, merged_keys),
        ),
    ]
    if load is not None:
        rate, = find(r"messages sent per node per second\s+([0-9.]+)", load)
        checks.append(("messages sent per node per second, publishing and maintenance", float(rate) < 50, "%s (< 50)" % rate))
    print("# BeeMesh DHT simulation\n")
    print("```")
    print(text.strip())
    print("```\n")
    if load is not None:
        print("```")
        print(load.strip())
        print("```\n")
    print("Targets:")
    for name, passed, detail in checks:
        print("- %s %s: %s" % ("PASS" if passed else "FAIL", name, detail))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
