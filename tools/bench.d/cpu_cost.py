#!/usr/bin/env python3
"""The CPU that proxies spent on one measurement, as results lines for tools/bench.

usage: cpu_cost.py tput|ka SETUP "USER SYSTEM" "USER SYSTEM" PREEMPTIONS HZ OUTPUT

The two "USER SYSTEM" pairs are the processes' CPU times in clock ticks before and
after the measurement; PREEMPTIONS is how many involuntary context switches their
threads had meanwhile; OUTPUT is iperf3's JSON (tput: cost per GiB received) or wrk's
text (ka: cost per request). Prints SETUP.KIND.cpu_*, user_*, sys_* and, for ka,
preemptions per 1,000 requests; a missing count prints an .error line instead.
"""
import json
import re
import sys


def main():
    if len(sys.argv) != 8:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kind, setup, before, after, preempted, hz, path = sys.argv[1:]
    user0, system0 = (int(v) for v in before.split())
    user1, system1 = (int(v) for v in after.split())
    seconds = {"user": (user1 - user0) / int(hz), "sys": (system1 - system0) / int(hz)}
    seconds["cpu"] = seconds["user"] + seconds["sys"]
    try:
        text = open(path).read()
        if kind == "tput":
            units = json.loads(text)["end"]["sum_received"]["bytes"] / 2**30
            scale, unit = 1e3, "ms_per_gib"
        else:
            units = int(re.search(r"([0-9]+) requests in", text).group(1))
            scale, unit = 1e6, "us_per_request"
    except (OSError, ValueError, KeyError, AttributeError) as error:
        print("%s.%s.cpu.error=no count in %s (%s)" % (setup, kind, path, error))
        return 0
    if units <= 0:
        print("%s.%s.cpu.error=nothing measured" % (setup, kind))
        return 0
    for name, spent in seconds.items():
        print("%s.%s.%s_%s=%.2f" % (setup, kind, name, unit, spent * scale / units))
    if kind == "ka":
        print("%s.ka.preemptions_per_1k_requests=%.1f" % (setup, int(preempted) * 1e3 / units))
    return 0


if __name__ == "__main__":
    sys.exit(main())
