#!/usr/bin/env python3
"""The steady client of tools/bench lab: RATE new connections a second to HOST:PORT,
each one HTTP/1.0 request (5 s timeout), each in a thread of its own so that a
stalled one does not hold back the schedule. One JSON line per request: its start
(seconds since 1970), latency, whether it succeeded, and the replica that answered.

usage: lab_client.py HOST PORT RATE SECONDS OUT
"""
import json, socket, sys, threading, time

host, port, rate, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
results, lock = [], threading.Lock()


def request(started):
    begin = time.monotonic()
    record = {"start": started, "ok": False}
    try:
        with socket.create_connection((host, port), timeout=5) as connection:
            connection.settimeout(5)
            connection.sendall(b"GET /cgi-bin/hello HTTP/1.0\r\nHost: orders\r\n\r\n")
            data = b""
            while True:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace")
        record["ok"] = text.startswith("HTTP/1.") and " 200 " in text.split("\r\n", 1)[0]
        words = text.split("\r\n\r\n", 1)[-1].split()
        record["server"] = words[0] if words else ""
        if not record["ok"]:
            record["error"] = text.split("\r\n", 1)[0][:80]
    except Exception as error:  # a failure is a result, recorded
        record["error"] = f"{type(error).__name__}: {error}"[:120]
    record["latency"] = time.monotonic() - begin
    with lock:
        results.append(record)


threads = []
first = time.monotonic()
for index in range(int(rate * seconds)):
    due = first + index / rate
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    thread = threading.Thread(target=request, args=(time.time(),))
    thread.start()
    threads.append(thread)
for thread in threads:
    thread.join()
with open(out, "w") as file:
    for record in sorted(results, key=lambda r: r["start"]):
        file.write(json.dumps(record) + "\n")
