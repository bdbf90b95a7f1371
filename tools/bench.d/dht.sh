#!/usr/bin/env bash
# dht: the deterministic Kademlia simulator at scale.
#
# Runs beemesh-dht-sim (the real state machine on virtual time) at
# BENCH_DHT_NODES=10000 nodes (seed BENCH_DHT_SEED=1) and checks its figures against
# the targets: lookup success, hops, records kept when a third of the nodes leave,
# forged records refused (.build/bench-dht.md).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_begin
nodes=${BENCH_DHT_NODES:-10000}
simulator=$(release_tool beemesh-dht-sim)
log "simulating $nodes nodes (seed ${BENCH_DHT_SEED:-1})"
out=$("$simulator" --nodes "$nodes" --seed "${BENCH_DHT_SEED:-1}" --lookups 1000 --records 200) ||
    die "simulator failed"
bench_report dht dht_report.py "$out"
