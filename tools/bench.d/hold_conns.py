#!/usr/bin/env python3
"""Open N keep-alive HTTP connections and hold them open (for `tools/bench`).

usage: hold_conns.py HOST PORT [COUNT] [HOLD_SECONDS]

Opens COUNT TCP connections to HOST:PORT, sends one keep-alive
`GET /` on each and reads its full response, so that every hop behind
the port (proxies, the app) holds a live connection. Then prints one line
    READY opened=<n> failed=<m> [error=<first error>]
and keeps the sockets open until it is killed (SIGTERM/SIGINT) or
HOLD_SECONDS pass. The kernel closes the sockets on exit.
"""
import concurrent.futures
import resource
import signal
import socket
import sys
import time


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def open_one(host, port, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no response header")
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed before response")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise ConnectionError("unexpected status %r" % status)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(body) < length:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed mid-body")
            body += chunk
        s.settimeout(None)
        return s
    except BaseException:
        s.close()
        raise


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    raise_nofile(count + 64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    socks, errors = [], []
    # A few connections at a time: each one is a fresh handshake between
    # the proxies; don't flood the accept queues.
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futs = [pool.submit(open_one, host, port, 15.0) for _ in range(count)]
        for f in futs:
            try:
                socks.append(f.result())
            except Exception as e:  # noqa: BLE001 - report, keep going
                errors.append("%s: %s" % (type(e).__name__, e))

    line = "READY opened=%d failed=%d" % (len(socks), len(errors))
    if errors:
        line += " error=%s" % errors[0].replace(" ", "_")
    print(line, flush=True)

    try:
        time.sleep(hold)
    finally:
        for s in socks:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
