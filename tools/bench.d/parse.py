#!/usr/bin/env python3
"""Turn load-generator output into key=value lines (for `tools/bench`).

usage: parse.py iperf JSON_FILE PREFIX
       parse.py wrk   TEXT_FILE PREFIX

iperf: PREFIX.gbps (end.sum_received.bits_per_second / 1e9)
wrk:   PREFIX.rps, PREFIX.p50_ms, PREFIX.p99_ms (us/ms/s/m normalised to ms),
       PREFIX.errors (socket errors + non-2xx/3xx, when any)
A value that cannot be read is left out and PREFIX.error says why.
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


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("iperf", "wrk"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    (iperf if sys.argv[1] == "iperf" else wrk)(sys.argv[2], sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
