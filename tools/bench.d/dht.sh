#!/usr/bin/env bash
# dht: the deterministic Kademlia simulator at scale.
#
# Runs beemesh-dht-sim (the real state machine on virtual time) at
# BENCH_DHT_NODES=10000 nodes (seed BENCH_DHT_SEED=1) and checks its figures against
# the targets: lookup success, hops, records kept when a third of the nodes leave,
# forged records refused (.build/bench-dht.md). Then the publishing load at
# BENCH_DHT_LOAD_NODES (default: the same N) with BENCH_DHT_RECORDS_PER_NODE=10 service
# records per node (30 s TTL, republished every 10 s, as sidecars do; 6 min of virtual
# time, over 15 min of one core at 10,000 nodes): messages each node sends per second,
# by kind, and the size of a store carrying a real signed record. Target: under 50
# messages a second.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_begin
nodes=${BENCH_DHT_NODES:-10000}
simulator=$(release_tool beemesh-dht-sim)
log "simulating $nodes nodes (seed ${BENCH_DHT_SEED:-1})"
out=$("$simulator" --nodes "$nodes" --seed "${BENCH_DHT_SEED:-1}" --lookups 1000 --records 200) ||
    die "simulator failed"
load_nodes=${BENCH_DHT_LOAD_NODES:-$nodes}
log "publishing load: $load_nodes nodes, ${BENCH_DHT_RECORDS_PER_NODE:-10} records each"
load=$("$simulator" --nodes "$load_nodes" --seed "${BENCH_DHT_SEED:-1}" \
    --records-per-node "${BENCH_DHT_RECORDS_PER_NODE:-10}") || die "simulator (publishing load) failed"
bench_report dht dht_report.py "$out" "$load"
