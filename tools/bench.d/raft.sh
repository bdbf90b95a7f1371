#!/usr/bin/env bash
# raft: a 3-member BeeMesh Raft group against a 3-member etcd 3.4 cluster (Debian's
# etcd-server, installed when missing), both on loopback with their logs fsynced to
# the same disk, under the same load (.build/bench-raft.md).
#
# BeeMesh: three beemesh-raft-node processes (the agent's RaftGroupHost, RaftTransport
# and workload API handler; members talk mutual TLS as node identities). etcd: three
# etcd processes with mutual TLS between peers too. The load generator
# (beemesh-raft-node load) sends to the leader of each, one request in flight per
# client and one connection per client: BeeMesh's workload API over HTTP/1.1, etcd's
# gRPC KV API over HTTP/2 (no gateway). For 1, then RAFT_CLIENTS=32 clients:
# BENCH_SECONDS of writes (256-byte values), then as long of linearizable reads, each
# measurement alternating between the two clusters for BENCH_ROUNDS rounds. Printed:
# the medians of committed writes/s with p50/p99 latency, and reads/s, side by side
# with the ratio. Targets: BeeMesh's writes/s at least etcd's and its p99 at most etcd's, at
# both concurrencies. Ports: BENCH_PORT_BASE+400 to +436 on 127.0.0.1.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_begin
if ! command -v etcd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "etcd is missing and not root: install etcd-server first"
    log "installing etcd-server"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; } ||
        die "apt-get install etcd-server failed"
fi
node=$(release_tool beemesh-raft-node)
beectl=$(release_tool beectl)
secs=${BENCH_SECONDS:-6}
many=${RAFT_CLIENTS:-32}
disk=$(findmnt -n -o FSTYPE -T "$WORK" || echo "?")
log "data in $WORK ($disk); $secs s per measurement; 1 and $many clients"

# measure ROUND NAME SYSTEM ENDPOINT CLIENTS MODE: one measurement
measure() {
    local round=$1 name=$2 system=$3 endpoint=$4 clients=$5 mode=$6 flags=()
    log "round $round: $name, $clients client(s), $mode"
    [ "$mode" = reads ] && flags=(--reads)
    run_fg "$node" load --system "$system" --endpoint "$endpoint" --clients "$clients" \
        --seconds "$secs" "${flags[@]}" >"$WORK/out/$name-$mode-$clients-$round.json" ||
        die "$name: the load generator failed"
}

# --- BeeMesh -------------------------------------------------------------------
"$beectl" ca init --trust-domain bench.local --dir "$WORK/ca" >"$WORK/logs/beectl.log" 2>&1
members=()
for i in 1 2 3; do
    "$beectl" ca intermediate --dir "$WORK/ca" --name "node-$i" --out "$WORK/n$i/ca" >>"$WORK/logs/beectl.log" 2>&1
    id=$("$node" id --ca "$WORK/n$i/ca" --name "node-$i" --state "$WORK/n$i")
    members+=(--member "$id=127.0.0.1:$((BASE + 400 + i))")
done
for i in 1 2 3; do
    start_bg "beemesh-$i" "$node" serve --ca "$WORK/n$i/ca" --name "node-$i" --state "$WORK/n$i" \
        --raft "127.0.0.1:$((BASE + 400 + i))" --http "127.0.0.1:$((BASE + 410 + i))" "${members[@]}"
done
for i in 1 2 3; do wait_listen "beemesh-$i" 20 "$((BASE + 410 + i))" || die "member $i did not start"; done
leads() { [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data x "http://127.0.0.1:$1/v1/kv/probe")" = 200 ]; }
leader=""
find_beemesh_leader() {
    local i
    for i in 1 2 3; do
        if leads "$((BASE + 410 + i))"; then
            leader="127.0.0.1:$((BASE + 410 + i))"
            return 0
        fi
    done
    return 1
}
wait_until 20 "a BeeMesh leader" find_beemesh_leader
ours=$leader
log "BeeMesh leader at $ours"

# --- etcd ----------------------------------------------------------------------
# Peer mutual TLS with an IP SAN, as etcd verifies it.
C="$WORK/etcd-tls"
mkdir -p "$C"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$C/ca.key" -out "$C/ca.pem" 2>>"$WORK/logs/openssl.log"
cluster=""
for i in 1 2 3; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=etcd-$i" \
        -keyout "$C/e$i.key" -out "$C/e$i.csr" 2>>"$WORK/logs/openssl.log"
    openssl x509 -req -in "$C/e$i.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 2 \
        -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n') \
        -out "$C/e$i.pem" 2>>"$WORK/logs/openssl.log"
    cluster+="${cluster:+,}e$i=https://127.0.0.1:$((BASE + 430 + i))"
done
for i in 1 2 3; do
    start_bg "etcd-$i" etcd --name "e$i" --data-dir "$WORK/e$i" --log-level error \
        --listen-client-urls "http://127.0.0.1:$((BASE + 420 + i))" \
        --advertise-client-urls "http://127.0.0.1:$((BASE + 420 + i))" \
        --listen-peer-urls "https://127.0.0.1:$((BASE + 430 + i))" \
        --initial-advertise-peer-urls "https://127.0.0.1:$((BASE + 430 + i))" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$$" \
        --peer-cert-file "$C/e$i.pem" --peer-key-file "$C/e$i.key" --peer-trusted-ca-file "$C/ca.pem" \
        --peer-client-cert-auth
done
for i in 1 2 3; do wait_listen "etcd-$i" 20 "$((BASE + 420 + i))" || { tail_log "etcd-$i"; die "etcd $i did not start"; }; done
find_etcd_leader() {
    local i
    for i in 1 2 3; do
        if curl -s "http://127.0.0.1:$((BASE + 420 + i))/metrics" | grep -q '^etcd_server_is_leader 1'; then
            leader="127.0.0.1:$((BASE + 420 + i))"
            return 0
        fi
    done
    return 1
}
wait_until 20 "an etcd leader" find_etcd_leader
theirs=$leader
log "etcd leader at $theirs ($(etcd --version | head -1))"

# Both clusters run throughout (idle but for heartbeats when not measured); each
# measurement alternates between them, the order swapped every round, and the report
# takes the median of the rounds, so that a drift of the machine hits both alike.
for round in $(seq 1 "$ROUNDS"); do
    for clients in 1 "$many"; do
        for mode in writes reads; do
            if ((round % 2)); then
                measure "$round" beemesh beemesh "$ours" "$clients" "$mode"
                measure "$round" etcd etcd "$theirs" "$clients" "$mode"
            else
                measure "$round" etcd etcd "$theirs" "$clients" "$mode"
                measure "$round" beemesh beemesh "$ours" "$clients" "$mode"
            fi
        done
    done
done
for i in 1 2 3; do stop_proc "beemesh-$i" && stop_proc "etcd-$i"; done

# --- report ----------------------------------------------------------------------
out="$ROOT/.build/bench-raft.md"
mkdir -p "$ROOT/.build"
status=0
python3 - "$WORK/out" "$many" "$secs" "$(etcd --version | head -1)" "$disk" "$ROUNDS" >"$out" <<'REPORT' || status=$?
import json, statistics, sys
directory, many, secs, etcd, disk, rounds = sys.argv[1:]
def result(name, mode, clients):
    runs = []
    for round in range(1, int(rounds) + 1):
        with open(f"{directory}/{name}-{mode}-{clients}-{round}.json") as f:
            runs.append(json.load(f))
    median = {key: statistics.median(run[key] for run in runs) for key in ["perSecond", "p50Milliseconds", "p99Milliseconds"]}
    median["errors"] = sum(run["errors"] for run in runs)
    return median
print("# BeeMesh Raft against etcd\n")
print(f"3 members each on 127.0.0.1, logs fsynced on {disk}; {etcd}; {secs} s per measurement, medians of "
      f"{rounds} rounds alternating between the two; one request in flight per client, one connection per client, "
      "256-byte values.\n")
print("| load | BeeMesh | etcd | BeeMesh / etcd | target |")
print("|---|---:|---:|---:|---|")
failures = []
for clients in ["1", many]:
    ours, theirs = result("beemesh", "writes", clients), result("etcd", "writes", clients)
    ratio = ours["perSecond"] / theirs["perSecond"]
    print(f"| writes/s, {clients} client(s) | {ours['perSecond']:.0f} | {theirs['perSecond']:.0f} | {ratio:.2f} | >= 1 |")
    for q in ["p50", "p99"]:
        a, b = ours[f"{q}Milliseconds"], theirs[f"{q}Milliseconds"]
        print(f"| write {q}, {clients} client(s) | {a:.2f} ms | {b:.2f} ms | {a / b:.2f} | {'<= 1' if q == 'p99' else ''} |")
    if ratio < 1:
        failures.append(f"writes/s at {clients} client(s): {ratio:.2f} of etcd's")
    if ours["p99Milliseconds"] > theirs["p99Milliseconds"]:
        failures.append(f"write p99 at {clients} client(s) above etcd's")
    reads, theirs_reads = result("beemesh", "reads", clients), result("etcd", "reads", clients)
    print(f"| linearizable reads/s, {clients} client(s) | {reads['perSecond']:.0f} | {theirs_reads['perSecond']:.0f} "
          f"| {reads['perSecond'] / theirs_reads['perSecond']:.2f} | |")
    errors = sum(result(n, m, clients)["errors"] for n in ["beemesh", "etcd"] for m in ["writes", "reads"])
    if errors:
        print(f"| failed requests, {clients} client(s) | {errors} | | | 0 |")
        failures.append(f"{errors} failed requests at {clients} client(s)")
print("\n" + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
sys.exit(1 if failures else 0)
REPORT
cat "$out"
log "written to .build/bench-raft.md"
exit "$status"
