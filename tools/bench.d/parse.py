#!/usr/bin/env python3
"""Turn load-generator output into key=value lines (for `tools/bench`).

usage: parse.py iperf  JSON_FILE PREFIX
       parse.py wrk    TEXT_FILE PREFIX
       parse.py h2load TEXT_FILE PREFIX   (reads TEXT_FILE.log too)

iperf:  PREFIX.gbps (end.sum_received.bits_per_second / 1e9)
wrk:    PREFIX.rps, PREFIX.p50_ms, PREFIX.p99_ms (us/ms/s/m normalised to ms),
        PREFIX.errors (socket errors + non-2xx/3xx, when any)
h2load: PREFIX.rps, PREFIX.p50_ms, PREFIX.p99_ms, PREFIX.p999_ms from h2load's
        per-request log (--log-file TEXT_FILE.log: start, status, microseconds),
        nearest rank; PREFIX.errors (failed, errored, timed out, non-2xx)
A value that cannot be read is left out and PREFIX.error says why.

wrk's latency percentiles are corrected for coordinated omission: a request that
took longer than the run's mean interval per connection stands for the requests its
connection did not send meanwhile, so wrk adds them to the histogram. The first
request of each connection (its set-up) is one of those. h2load's log holds each
request once, and only those of the measured period (after --warm-up-time).
"""
import json
import re
import sys

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError("bad duration %r" % text)
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def iperf(path, prefix):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print("%s.error=no iperf3 JSON (%s)" % (prefix, str(e).replace("\n", " ")))
        return
    if doc.get("error"):
        print("%s.error=iperf3: %s" % (prefix, doc["error"]))
    try:
        bps = doc["end"]["sum_received"]["bits_per_second"]
    except (KeyError, TypeError):
        if not doc.get("error"):
            print("%s.error=iperf3 JSON has no end.sum_received" % prefix)
        return
    print("%s.gbps=%.3f" % (prefix, bps / 1e9))


def wrk(path, prefix):
    try:
        text = open(path, errors="replace").read()
    except OSError as e:
        print("%s.error=no wrk output (%s)" % (prefix, e))
        return
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if m:
        print("%s.rps=%.1f" % (prefix, float(m.group(1))))
    else:
        first = text.strip().splitlines()[-1] if text.strip() else "empty output"
        print("%s.error=wrk: %s" % (prefix, first))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s*%s(?:\.0+)?%%\s+([0-9.]+(?:us|ms|s|m|h))\s*$" % pct, text, re.M)
        if m:
            print("%s.%s=%.3f" % (prefix, key, to_ms(m.group(1))))
    errs = []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for name, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errs.append("%s %s" % (v, name))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m and int(m.group(1)):
        errs.append("%s non-2xx" % m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if errs:
        total = (", of %s requests" % m.group(1)) if m else ""
        print("%s.errors=%s%s" % (prefix, ", ".join(errs), total))


def h2load(path, prefix):
    try:
        text = open(path, errors="replace").read()
        rows = [line.split("\t") for line in open(path + ".log") if line.strip()]
    except OSError as e:
        print("%s.error=no h2load output (%s)" % (prefix, e))
        return
    m = re.search(r"^finished in [0-9.]+s, ([0-9.]+) req/s", text, re.M)
    if not m or not rows:
        last = text.strip().splitlines()[-1] if text.strip() else "empty output"
        print("%s.error=h2load: %s" % (prefix, last))
        return
    print("%s.rps=%.1f" % (prefix, float(m.group(1))))
    try:
        micros = sorted(int(row[2]) for row in rows)
        statuses = [int(row[1]) for row in rows]
    except (IndexError, ValueError):
        print("%s.error=h2load log: unexpected row %r" % (prefix, rows[0]))
        return
    for pct, key in ((50, "p50_ms"), (99, "p99_ms"), (99.9, "p999_ms")):
        rank = max(1, -(-len(micros) * pct // 100))
        print("%s.%s=%.3f" % (prefix, key, micros[int(rank) - 1] / 1000.0))
    errs = []
    m = re.search(r"^requests: .* (\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if m:
        for name, v in zip(("failed", "errored", "timeout"), m.groups()):
            if int(v):
                errs.append("%s %s" % (v, name))
    bad = sum(1 for status in statuses if not 200 <= status < 400)
    if bad:
        errs.append("%d non-2xx/3xx" % bad)
    if errs:
        print("%s.errors=%s, of %d requests" % (prefix, ", ".join(errs), len(rows)))


def main():
    kinds = {"iperf": iperf, "wrk": wrk, "h2load": h2load}
    if len(sys.argv) != 4 or sys.argv[1] not in kinds:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kinds[sys.argv[1]](sys.argv[2], sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
