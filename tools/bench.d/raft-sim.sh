#!/usr/bin/env bash
# raft-sim: the deterministic Raft simulator against its targets.
#
# Runs beemesh-raft-sim (the real state machine on virtual time): BENCH_RAFT_SEEDS=10000
# seeds of groups of 3 and 5 under partitions (symmetric, asymmetric, one member
# isolated), 0-20% message loss, duplication, reordering, crash-restarts (some torn in
# the middle of a write), clock drift and membership changes, every history decided by
# the linearizability checker; then BENCH_RAFT_TRIALS=1000 leader crashes at each of two
# timings and as many partitioned followers rejoining (.build/bench-raft-sim.md).
# Targets: 0 violations; a leader commits within 2 election timeouts of the last heal
# in >= 99.9% of seeds; leader-crash downtime p50 <= 1.3 s and p99 <= 2.2 s (100 ms
# heartbeat, [1, 2) s election timeout) and p99 <= 700 ms (50 ms, [300, 600) ms); a
# rejoining follower causes no term increase and no leader change.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_begin
simulator=$(release_tool beemesh-raft-sim)
seeds=${BENCH_RAFT_SEEDS:-10000}
trials=${BENCH_RAFT_TRIALS:-1000}
log "simulating $seeds fault seeds, $trials leader crashes per timing, $trials partitioned followers"
out="$ROOT/.build/bench-raft-sim.md"
mkdir -p "$ROOT/.build"
status=0
{
    echo "# BeeMesh Raft simulator"
    echo
    "$simulator" --seeds "$seeds" --crash-trials "$trials" --partition-trials "$trials" || status=$?
} >"$out"
cat "$out"
log "written to .build/bench-raft-sim.md"
exit "$status"
