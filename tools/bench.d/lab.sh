#!/usr/bin/env bash
# lab: failover across nodes, in a 3-node tools/lab.
#
# Builds a lab of 3 nodes (tools/lab, named after this run) running
# deploy/manifests/lab-demo.yaml (frontend on node 1, one orders replica on node 2
# and one on node 3), and a steady client in frontend's pod (its network namespace,
# so its sidecar captures it): BENCH_LAB_RATE=10 new connections a second, each one
# HTTP request to orders.default.mesh:8080 (5 s timeout). BENCH_LAB_BEFORE=10 s in,
# node 2 is cut off the LAN (tools/lab cut: its packets vanish, nothing resets); the
# client runs BENCH_LAB_AFTER=50 s more. Reports the requests that failed (those
# started after the cut apart from those in flight at it), p50/p99/max latency of
# the requests started in the 10 s after the cut, and how long after the cut a
# request last paid for trying node 2 (.build/bench-lab.md). Target: no request
# started after the cut fails, p99 at most 1 s. Needs root and podman.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (namespaces, podman)"
bench_begin
"$ROOT/tools/setup" >/dev/null || die "tools/setup failed"
build
rate=${BENCH_LAB_RATE:-10}
before=${BENCH_LAB_BEFORE:-10}
after=${BENCH_LAB_AFTER:-50}
lab_name=b$$  # not "name": the cleanup trap has a local of that name
lab() { "$ROOT/tools/lab" --name "$lab_name" --bin "$BIN" "$@"; }
at_exit 'lab down >/dev/null 2>&1'
log "lab $lab_name: 3 nodes (tools/lab up 3)"
lab up 3 >"$WORK/logs/lab-up.log" 2>&1 || { tail_log lab-up; die "tools/lab up failed"; }
lab demo --apply >"$WORK/logs/lab-apply.log" 2>&1 || { tail_log lab-apply; die "tools/lab demo --apply failed"; }
both_serve() {
    local log
    log=$(lab exec 1 beectl logs frontend-0 --tail 20 2>/dev/null) || return 1
    grep -q "orders-a-0 answered" <<<"$log" && grep -q "orders-b-0 answered" <<<"$log"
}
wait_until 300 "frontend answered by both orders replicas" both_serve
netns=$(lab exec 1 podman inspect frontend-0.default.frontend --format '{{.NetworkSettings.SandboxKey}}') ||
    die "cannot inspect frontend's pod"
# The pod's resolver is captured by its sidecar: any address but loopback will do.
vip=$(nsenter --net="$netns" dig +short +time=2 @10.88.1.1 orders.default.mesh A) || vip=""
vip=${vip%%$'\n'*}
[ -n "$vip" ] || die "frontend's sidecar gave no address for orders.default.mesh"
log "client: $rate requests a second to $vip:8080 (orders.default.mesh) from frontend's pod; node 2 cut after $before s"
start_bg client nsenter --net="$netns" python3 "$D/lab_client.py" "$vip" 8080 "$rate" $((before + after)) \
    "$WORK/requests.jsonl"
sleep "$before"
cut=$(date +%s.%N)
lab cut 2 >/dev/null
wait "${PID[client]}" || die "the client failed: $(tail -3 "$WORK/logs/client.log")"
unset "PID[client]"
lab heal 2 >/dev/null
bench_report lab lab_report.py "$WORK/requests.jsonl" "$cut" "$rate"
