#!/usr/bin/env python3
"""Helpers of tools/order-functions.

  order.py echo PORT                        a loopback echo server (until killed)
  order.py drive PORT COUNT                 COUNT connections, 100 kB echoed on each
  order.py functions NM_OUTPUT              addresses of every sized function, ascending
  order.py order NM_OUTPUT MAP TRACE OUT    write the linker's symbol-ordering file

The ordering file lists the traced functions in first-call order, skipping names
that more than one local symbol carries (lld would move every one of them). Functions
with a section of their own come first; those inside a large shared section (code of
prebuilt archives compiled without one section per function) follow, so that the
blobs they drag in do not split the dense part.
"""
import bisect
import collections
import socket
import sys
import threading

SHARED_SECTION = 16 * 1024


def echo(port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)

    def serve(connection):
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    while True:
        connection, _ = server.accept()
        threading.Thread(target=serve, args=(connection,), daemon=True).start()


def drive(port, count):
    payload = b"x" * 100_000
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(payload)
            received = 0
            while received < len(payload):
                chunk = connection.recv(65536)
                if not chunk:
                    sys.exit(f"connection closed after {received} of {len(payload)} bytes")
                received += len(chunk)
            connection.shutdown(socket.SHUT_WR)
            connection.recv(1)


def read_symbols(path):
    """(address, size, name) of every sized function in `nm -n -S` output."""
    symbols = []
    for line in open(path):
        fields = line.split(None, 3)
        if len(fields) == 4 and fields[2] in "tTwW" and int(fields[1], 16) > 0:
            symbols.append((int(fields[0], 16), int(fields[1], 16), fields[3].rstrip("\n")))
    return symbols


def text_sections(path):
    """(start, size) of each input section of .text in an lld -Map file."""
    sections, in_text = [], False
    for line in open(path):
        if len(line) < 50:
            continue
        name = line[49:].rstrip("\n")
        depth = len(name) - len(name.lstrip(" "))
        if depth == 0:
            in_text = name.strip() == ".text"
        elif in_text and depth == 8:
            fields = line.split()
            sections.append((int(fields[0], 16), int(fields[2], 16)))
    return sections


def order(nm_output, link_map, trace, output):
    symbols = read_symbols(nm_output)
    names_at = collections.defaultdict(list)
    for address, _, name in symbols:
        names_at[address].append(name)
    carriers = collections.Counter(name for _, _, name in symbols)
    sections = text_sections(link_map)
    starts = [start for start, _ in sections]

    own, shared, seen = [], [], set()
    for line in open(trace):
        address = int(line, 16)
        if address in seen:
            continue
        seen.add(address)
        index = bisect.bisect_right(starts, address) - 1
        in_shared = index >= 0 and sections[index][1] > SHARED_SECTION
        for name in names_at[address]:
            if carriers[name] == 1:
                (shared if in_shared else own).append(name)
    with open(output, "w") as file:
        file.write("\n".join(own + shared) + "\n")
    print(f"{len(seen)} functions called; ordered {len(own)} with a section of their own, "
          f"then {len(shared)} inside shared sections")


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "echo" and len(argv) == 3:
        echo(int(argv[2]))
    elif command == "drive" and len(argv) == 4:
        drive(int(argv[2]), int(argv[3]))
    elif command == "functions" and len(argv) == 3:
        for address in sorted({address for address, _, _ in read_symbols(argv[2])}):
            print(f"{address:x}")
    elif command == "order" and len(argv) == 6:
        order(*argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
