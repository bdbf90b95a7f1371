#!/usr/bin/env python3
"""Check that a TLS listener enforces client certificates (for `tools/bench`).

usage: tls_probe.py HOST PORT [--cert CERT --key KEY] [--ca BUNDLE] [--send TEXT]

Connects with TLS (no hostname check; server verified against --ca when
given), optionally presenting a client certificate, sends TEXT (default: a
keep-alive-less HTTP GET) and reads the answer. Prints one line and exits:
  0  accepted: <first line of the answer>
  1  rejected: <TLS alert / reset>   (the server refused the handshake)
  3  closed: <EOF after the handshake, no TLS alert>   (ambiguous)
  4  open: <no answer within the timeout>
  5  error: <could not connect / other>
"""
import argparse
import socket
import ssl
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--send", default="GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
    ap.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if a.ca:
        ctx.load_verify_locations(a.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)

    try:
        raw = socket.create_connection((a.host, a.port), timeout=a.timeout)
    except OSError as e:
        print("error: connect: %s" % e)
        return 5
    try:
        try:
            s = ctx.wrap_socket(raw, server_hostname="bench")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            print("rejected: handshake: %s" % e)
            return 1
        version = s.version()
        try:
            s.sendall(a.send.encode().decode("unicode_escape").encode("latin-1"))
            data = s.recv(4096)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            print("rejected: after handshake (%s): %s" % (version, e))
            return 1
        except socket.timeout:
            print("open: %s handshake done, no answer within %.0fs" % (version, a.timeout))
            return 4
        if not data:
            print("closed: %s handshake done, then EOF without a TLS alert" % version)
            return 3
        first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        print("accepted: %s: %s" % (version, first))
        return 0
    except OSError as e:
        print("error: %s" % e)
        return 5
    finally:
        raw.close()


if __name__ == "__main__":
    sys.exit(main())
