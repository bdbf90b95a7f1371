#!/usr/bin/env python3
"""tools/bench flood: an unauthenticated flood against a server sidecar's mTLS
listener while a legitimate client keeps opening new connections through its own
sidecar, on 127.0.0.0/8 only, bounded in time.

    flood.py --target PORT --route PORT --pid PID [--flood N] [--source ADDR]
             [--quiet S] [--during S] [--settle S] [--rate R]

Phases, all in this one run:
  warm-up --warmup legitimate connections as fast as they go, so that the server's
          flow table (4,096 finished flows, bounded) is full before the baseline RSS
          is read: its growth from legitimate traffic is not the flood's
  quiet   the legitimate client alone: --rate new connections per second through
          the client sidecar's route (each: connect, GET /, read the response,
          close), for --quiet seconds; its p99 is the baseline
  flood   --flood connections from --source to --target, half idle and half that
          send the first bytes of a ClientHello and stall; a connection the server
          closes is opened again, up to --reopen connections per second, so the
          pressure holds (unpaced, the flooder's own reconnect loop would take a whole
          core of this 2-core machine and measure the scheduler, not the sidecar); the
          legitimate client keeps its rate for --during seconds
  settle  the flood stops; after --settle seconds the server's RSS is read again

Prints key=value lines (success rates, p50/p99 in ms, RSS in MB, flood
connections opened and closed by the server) for tools/bench to judge."""

import argparse
import errno
import os
import resource
import selectors
import socket
import threading
import time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Legit:
    """New connections at a fixed rate; latency of each, failures counted."""

    def __init__(self, port, rate):
        self.port = port
        self.interval = 1.0 / rate

    def burst(self, count):
        """`count` connections, one after another, as fast as they go."""
        self.interval, saved = 0.0, self.interval
        try:
            return self.run(None, count)
        finally:
            self.interval = saved

    def run(self, seconds, count=None):
        latencies, failures = [], 0
        deadline = time.monotonic() + (seconds if seconds is not None else 1e9)
        next_start = time.monotonic()
        while next_start < deadline and (count is None or len(latencies) + failures < count):
            now = time.monotonic()
            if now < next_start:
                time.sleep(next_start - now)
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
                    conn.sendall(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        answer += chunk
                if answer.startswith(b"HTTP/1.1 200"):
                    latencies.append((time.monotonic() - started) * 1000)
                else:
                    failures += 1
            except OSError:
                failures += 1
            next_start += self.interval
        return latencies, failures


class Flood(threading.Thread):
    """Holds `count` unauthenticated connections to the target, reopening each one the
    server closes, until stopped."""

    HALF_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03])

    def __init__(self, port, count, source, reopen_rate):
        super().__init__(daemon=True)
        self.port, self.count, self.source = port, count, source
        self.reopen_rate = reopen_rate
        self.stop = threading.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.open_failures = 0
        self.peak = 0

    def connect(self, selector, index):
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setblocking(False)
        try:
            conn.bind((self.source, 0))
            conn.connect_ex(("127.0.0.1", self.port))
        except OSError:
            conn.close()
            self.open_failures += 1
            return
        selector.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, index)
        self.opened += 1

    def run(self):
        selector = selectors.DefaultSelector()
        for index in range(self.count):
            self.connect(selector, index)
        allowance, last = 0.0, time.monotonic()
        while not self.stop.is_set():
            self.peak = max(self.peak, len(selector.get_map()))
            now = time.monotonic()
            allowance = min(self.reopen_rate, allowance + (now - last) * self.reopen_rate)
            last = now
            missing = self.count - len(selector.get_map())
            for _ in range(min(missing, int(allowance))):
                allowance -= 1
                self.connect(selector, self.opened)
            for key, events in selector.select(timeout=0.05):
                conn = key.fileobj
                if events & selectors.EVENT_WRITE:
                    # Connected: half of them send a partial ClientHello, then nothing.
                    if key.data % 2 == 1:
                        try:
                            conn.send(self.HALF_HELLO)
                        except OSError:
                            pass
                    selector.modify(conn, selectors.EVENT_READ, key.data)
                    continue
                try:
                    data = conn.recv(4096)
                except OSError as error:
                    data = b"" if error.errno in (errno.ECONNRESET, errno.ECONNREFUSED, errno.EPIPE) else None
                if not data:
                    selector.unregister(conn)
                    conn.close()
                    self.closed_by_server += 1
        for key in list(selector.get_map().values()):
            key.fileobj.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--route", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--flood", type=int, default=5000)
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--quiet", type=float, default=8)
    parser.add_argument("--during", type=float, default=15)
    parser.add_argument("--settle", type=float, default=30)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--reopen", type=float, default=1000)
    parser.add_argument("--warmup", type=int, default=4200)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    legit = Legit(args.route, args.rate)
    legit.burst(args.warmup)
    time.sleep(2)
    rss_before = rss_mb(args.pid)
    quiet, quiet_failures = legit.run(args.quiet)

    flood = Flood(args.target, args.flood, args.source, args.reopen)
    flood.start()
    time.sleep(1)  # the flood is at full strength before the measurement
    rss_flood = rss_mb(args.pid)
    during, during_failures = legit.run(args.during)
    rss_peak = max(rss_flood, rss_mb(args.pid))
    flood.stop.set()
    flood.join()
    time.sleep(args.settle)
    rss_after = rss_mb(args.pid)

    def line(key, value):
        print(f"{key}={value}")

    line("quiet.ok", len(quiet))
    line("quiet.failed", quiet_failures)
    line("quiet.p50_ms", f"{percentile(quiet, 0.50):.2f}")
    line("quiet.p99_ms", f"{percentile(quiet, 0.99):.2f}")
    line("flood.ok", len(during))
    line("flood.failed", during_failures)
    line("flood.success_pct", f"{100.0 * len(during) / max(1, len(during) + during_failures):.2f}")
    line("flood.p50_ms", f"{percentile(during, 0.50):.2f}")
    line("flood.p99_ms", f"{percentile(during, 0.99):.2f}")
    line("flood.p99_ratio", f"{percentile(during, 0.99) / percentile(quiet, 0.99):.2f}")
    line("flood.connections_opened", flood.opened)
    line("flood.closed_by_server", flood.closed_by_server)
    line("flood.open_failures", flood.open_failures)
    line("flood.peak_held", flood.peak)
    line("rss.before_mb", f"{rss_before:.1f}")
    line("rss.during_mb", f"{rss_peak:.1f}")
    line("rss.after_mb", f"{rss_after:.1f}")
    line("rss.after_ratio", f"{rss_after / rss_before:.3f}")


if __name__ == "__main__":
    main()
