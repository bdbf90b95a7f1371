#!/usr/bin/env bash
# flood: 5,000 unauthenticated connections against a legitimate client.
#
# Runs a sidecar pair in front of nginx; a legitimate client opens new connections
# (50/s) through the client sidecar, first alone (the quiet baseline), then while
# tools/bench.d/flood.py holds BENCH_FLOOD=5000 unauthenticated connections to the
# server sidecar's mTLS listener from 127.0.0.2, half idle and half with a stalled
# ClientHello, reopening the ones the server closes (at most BENCH_FLOOD_REOPEN=1000
# per second); then the flood stops. Targets (.build/bench-flood.md): during the
# flood, at least 99% of the legitimate connections succeed and their p99 is at most
# 3x the quiet p99 of the same run; 30 s after the flood the server sidecar's RSS is
# within 10% of its pre-flood value.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_loopback
make_identities
start_apps
start_pair || die "the sidecar pair did not start"
http_ok "$SC_ROUTE_HTTP" >/dev/null || die "no HTTP 200 through the pair"
log "flood: ${BENCH_FLOOD:-5000} unauthenticated connections from 127.0.0.2 against :$SC_SERVER_IN"
run_fg python3 "$D/flood.py" --target "$SC_SERVER_IN" --route "$SC_ROUTE_HTTP" --pid "${PID[sc-server]}" \
    --flood "${BENCH_FLOOD:-5000}" --reopen "${BENCH_FLOOD_REOPEN:-1000}" >"$WORK/out/flood.txt" 2>"$WORK/logs/flood.log" ||
    { tail_log flood; die "flood.py failed"; }
alive sc-server || die "the server sidecar died during the flood"
counters=$({ curl -s -m 5 "http://127.0.0.1:$SC_SERVER_METRICS/metrics" || true; } |
    { grep -E '^beemesh_inbound_connections_total' || true; } | tr '\n' ' ')
stop_pair
bench_report flood flood_report.py "$WORK/out/flood.txt" "$counters"
