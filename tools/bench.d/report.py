#!/usr/bin/env python3
"""Render the `tools/bench dataplane` results file as markdown.

usage: report.py RESULTS_FILE

RESULTS_FILE holds key=value lines written by tools/bench:
  meta.<name>=...            header facts (date, versions, ...)
  <setup>.<metric>=<number>  setup is direct | pair | haproxy
  <setup>.skipped=<why>      the whole column could not be measured
  <setup>.<x>.error=<why>    one measurement failed
  <setup>.<x>.errors=<what>  load-generator errors during a measurement
  check.<name>=PASS|FAIL <detail>   sanity checks (mTLS enforced, ...)

Keep-alive figures come from rounds in which the pair and HAProxy are measured
seconds apart: their targets are judged on the median of the per-round ratios,
whose range is printed too. Req/s is wrk's; latency is judged on h2load's runs
over warm connections (<setup>.warm.*), since wrk's percentiles include each
connection's set-up (see parse.py). A keep-alive measurement spoiled by the
hypervisor's steal is repeated by tools/bench (<setup>.<ka|warm>.steal_pct of the
attempt kept, <setup>.<ka|warm>.repeated attempts thrown away); both are printed.
"""
import statistics
import sys

SETUPS = ("direct", "pair", "haproxy")
# key, label, decimals, applies to direct
ROWS = (
    ("tput.gbps", "bulk throughput, iperf3 (Gbit/s)", 2, True),
    ("ka.rps", "keep-alive HTTP req/s (wrk -c32)", 0, True),
    ("ka.p50_ms", "keep-alive latency p50, wrk (ms)", 3, True),
    ("ka.p99_ms", "keep-alive latency p99, wrk: with each connection's set-up (ms)", 3, True),
    ("ka.steal_pct", "  host CPU steal during those wrk runs (%)", 2, True),
    ("warm.rps", "keep-alive HTTP req/s on warm connections (h2load -c32)", 0, True),
    ("warm.p50_ms", "keep-alive latency p50, warm connections (ms)", 3, True),
    ("warm.p99_ms", "keep-alive latency p99, warm connections (ms)", 3, True),
    ("warm.p999_ms", "keep-alive latency p99.9, warm connections (ms)", 3, True),
    ("warm.steal_pct", "  host CPU steal during those h2load runs (%)", 2, True),
    ("nc.rps", "new connections/s (wrk -c16, Connection: close)", 0, True),
    ("tput.cpu_ms_per_gib", "CPU of both proxies per GiB relayed (ms)", 1, False),
    ("ka.cpu_us_per_request", "CPU of both proxies per keep-alive request (µs)", 2, False),
    ("ka.user_us_per_request", "  of which user space (µs)", 2, False),
    ("ka.sys_us_per_request", "  of which kernel (µs)", 2, False),
    ("ka.preemptions_per_1k_requests", "proxy threads preempted per 1,000 keep-alive requests", 0, False),
    ("idle_server_mb", "idle RSS, server-side proxy (MB)", 1, False),
    ("idle_client_mb", "idle RSS, client-side proxy (MB)", 1, False),
    ("idle_server_anon_mb", "idle private memory (RssAnon), server-side proxy (MB)", 1, False),
    ("c1k_server_mb", "RSS with {conns} conns, server-side proxy (MB)", 1, False),
    ("c1k_client_mb", "RSS with {conns} conns, client-side proxy (MB)", 1, False),
    ("c1k_server_anon_mb", "private memory with {conns} conns, server-side proxy (MB)", 1, False),
)
# metric, label, op, bound, setup-ratio ("haproxy" = pair/haproxy, None = pair value)
TARGETS = (
    ("tput.gbps", "throughput pair/haproxy", ">=", 0.8, "haproxy"),
    ("ka.rps", "keep-alive req/s pair/haproxy (median of rounds)", ">=", 0.8, "haproxy"),
    ("warm.p99_ms", "keep-alive p99 latency pair/haproxy, warm connections (median of rounds)", "<=", 1.25, "haproxy"),
    ("idle_server_mb", "idle RSS server-side sidecar (MB)", "<=", 20.0, None),
    ("idle_client_mb", "idle RSS client-side sidecar (MB)", "<=", 20.0, None),
)


def series(path, key):
    """Every value of KEY in the results file, in the order measured."""
    values = []
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            if k.strip() == key:
                try:
                    values.append(float(v))
                except ValueError:
                    pass
    return values


def round_ratios(path, key):
    """Per-round pair/haproxy ratios of a keep-alive figure (rounds in step)."""
    pairs = series(path, "pair." + key)
    haproxies = series(path, "haproxy." + key)
    if not pairs or len(pairs) != len(haproxies):
        return []
    return [p / h for p, h in zip(pairs, haproxies) if h]


def load(path):
    """Results file: KEY=VALUE lines; a key measured in several rounds appears once
    per round and is reduced to its median (non-numeric values keep the last)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                values.setdefault(k.strip(), []).append(v.strip())
    res = {}
    for k, vs in values.items():
        if k.startswith("meta.") or k.startswith("check."):
            res[k] = vs[-1]
            continue
        try:
            nums = sorted(float(v) for v in vs)
        except ValueError:
            res[k] = vs[-1]
            continue
        res[k] = repr(statistics.median(nums))
    return res


def num(res, setup, key):
    try:
        return float(res["%s.%s" % (setup, key)])
    except (KeyError, ValueError):
        return None


def fmt(v, dec):
    if v is None:
        return "n/a"
    return "{:,.{}f}".format(v, dec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    res = load(sys.argv[1])
    out = []
    w = out.append
    w("# BeeMesh dataplane benchmark")
    w("")
    for k in sorted(k for k in res if k.startswith("meta.")):
        w("- %s: %s" % (k[5:], res[k]))
    w("")
    for s in SETUPS:
        if res.get(s + ".skipped"):
            w("**%s skipped:** %s" % ({"pair": "sidecar pair"}.get(s, s), res[s + ".skipped"]))
            w("")
    w("| metric | direct | sidecar pair | haproxy pair | pair/direct | pair/haproxy |")
    w("|---|---:|---:|---:|---:|---:|")
    try:
        conns = "{:,}".format(int(res.get("meta.connections_held", "1000")))
    except ValueError:
        conns = res["meta.connections_held"]
    for key, label, dec, for_direct in ROWS:
        label = label.format(conns=conns)
        d = num(res, "direct", key) if for_direct else None
        p = num(res, "pair", key)
        h = num(res, "haproxy", key)
        # The host's steal is a condition of the run, not a figure of the setups.
        compared = not key.endswith("steal_pct")
        w("| %s | %s | %s | %s | %s | %s |" % (
            label,
            fmt(d, dec) if for_direct else "-",
            fmt(p, dec), fmt(h, dec),
            fmt(ratio(p, d), 2) if for_direct and compared else "-",
            fmt(ratio(p, h), 2) if compared else "-"))
    w("")

    notes = []
    for k in sorted(res):
        if k.endswith(".error") or k.endswith(".errors") or k.endswith(".note"):
            notes.append("- %s: %s" % (k, res[k]))
    if notes:
        w("Notes:")
        out.extend(notes)
        w("")

    checks = sorted(k for k in res if k.startswith("check."))
    if checks:
        w("Sanity checks:")
        for k in checks:
            w("- %s: %s" % (k[6:], res[k]))
        w("")

    per_round = {
        key: round_ratios(sys.argv[1], key)
        for key in ("ka.rps", "ka.p50_ms", "ka.p99_ms", "warm.rps", "warm.p50_ms", "warm.p99_ms", "warm.p999_ms")
    }
    if any(per_round.values()):
        w("Keep-alive pair/haproxy per round (%s):" % res.get("meta.keepalive_rounds", "alternating rounds"))
        for key, values in per_round.items():
            if values:
                w("- %s: median %.2f, range %.2f-%.2f (%s)" % (
                    key, statistics.median(values), min(values), max(values),
                    ", ".join("%.2f" % v for v in values)))
        for kind, tool in (("ka", "wrk"), ("warm", "h2load")):
            steals = {s: series(sys.argv[1], "%s.%s.steal_pct" % (s, kind)) for s in SETUPS}
            if not any(steals.values()):
                continue
            w("- host steal per kept %s run (%%): %s" % (tool, "; ".join(
                "%s %s" % (s, ", ".join("%.1f" % v for v in steals[s])) for s in SETUPS if steals[s])))
            w("- %s runs repeated because the host stole more than the bound: %s" % (tool, ", ".join(
                "%s %d" % (s, sum(series(sys.argv[1], "%s.%s.repeated" % (s, kind)))) for s in SETUPS if steals[s])))
        w("")

    w("Targets:")
    for key, label, op, bound, vs in TARGETS:
        p = num(res, "pair", key)
        v = ratio(p, num(res, vs, key)) if vs else p
        if vs and per_round.get(key):
            v = statistics.median(per_round[key])
        if v is None:
            verdict = "SKIP"
            shown = "n/a"
        else:
            ok = v >= bound if op == ">=" else v <= bound
            verdict = "PASS" if ok else "FAIL"
            shown = "%.2f" % v
        w("- %s %s = %s (target %s %.2f)" % (verdict, label, shown, op, bound))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
