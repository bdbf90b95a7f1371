#!/usr/bin/env python3
"""Results lines from package-benchmark's JMH export (for `tools/bench policy`).

usage: jmh_results.py JMH_JSON NAME=PREFIX...

For each benchmark NAME (as named in Benchmarks/, e.g. decision_indexed) prints
PREFIX.p50_us, PREFIX.p99_us, PREFIX.max_us of its wall-clock time per iteration,
PREFIX.samples (iterations measured) and PREFIX.mallocs_p50 (allocations per
iteration). A benchmark missing from the file prints PREFIX.error.
"""
import json
import sys


def main(path, pairs):
    with open(path) as f:
        elements = json.load(f)
    by_name = {e["benchmark"].rsplit(".", 1)[-1]: e for e in elements}
    for pair in pairs:
        name, prefix = pair.split("=", 1)
        element = by_name.get(name)
        if element is None:
            print("%s.error=benchmark %r not in %s" % (prefix, name, path))
            continue
        wall = element["secondaryMetrics"].get("Time (wall clock)")
        if wall is None:
            print("%s.error=no wall-clock time for %r" % (prefix, name))
            continue
        percentiles = wall["scorePercentiles"]
        print("%s.p50_us=%.3f" % (prefix, percentiles["50.0"]))
        print("%s.p99_us=%.3f" % (prefix, percentiles["99.0"]))
        print("%s.max_us=%.3f" % (prefix, percentiles["100.0"]))
        print("%s.samples=%d" % (prefix, element["measurementIterations"]))
        mallocs = element["secondaryMetrics"].get("Malloc (total)")
        if mallocs is not None:
            print("%s.mallocs_p50=%g" % (prefix, mallocs["scorePercentiles"]["50.0"]))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip())
    main(sys.argv[1], sys.argv[2:])
