#!/usr/bin/env bash
# flows: what flow recording and metrics cost, on against off.
#
# Runs two sidecar pairs side by side, one with flow recording and metrics on (the
# defaults), one with them off (`flows.record: false`, `metrics.listen: off`), the
# app's port an HTTP port in both, and in each round loads both at the same moment
# (iperf3, then wrk), so that the machine's swings hit both alike; it prints each
# pair's throughput, req/s and CPU per GiB and per request with their per-round
# ratio (.build/bench-flows.md).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# concurrently KIND COMMAND PORT_ON PORT_OFF: COMMAND (ending in a port, or a URL up
# to its port) through both pairs at the same moment; records each pair's result and
# the CPU its two sidecars spent per GiB (tput) or per request (ka).
concurrently() {
    local kind=$1 command=$2 on=$3 off=$4 before_on before_off after_on after_off
    local out_on="$WORK/out/on-$kind-$ROUND.txt" out_off="$WORK/out/off-$kind-$ROUND.txt"
    local target_on="$on" target_off="$off" parser=wrk
    if [ "$kind" = ka ]; then target_on="$on/" target_off="$off/"; fi
    if [ "$kind" = tput ]; then target_on=" $on" target_off=" $off" parser=iperf; fi
    local on_pids=("${PID[on-server]}" "${PID[on-client]}") off_pids=("${PID[off-server]}" "${PID[off-client]}")
    before_on=$(cpu_ticks "${on_pids[@]}")
    before_off=$(cpu_ticks "${off_pids[@]}")
    local switched_on switched_off
    switched_on=$(preemptions "${on_pids[@]}")
    switched_off=$(preemptions "${off_pids[@]}")
    # the command is a string of words on purpose
    # shellcheck disable=SC2086
    start_bg load-on pin_load timeout $((SECS + 30)) ${command}${target_on}
    # shellcheck disable=SC2086
    start_bg load-off pin_load timeout $((SECS + 30)) ${command}${target_off}
    wait "${PID[load-on]}" || true # parse records what went wrong
    wait "${PID[load-off]}" || true
    unset "PID[load-on]" "PID[load-off]"
    cp "$WORK/logs/load-on.log" "$out_on"
    cp "$WORK/logs/load-off.log" "$out_off"
    after_on=$(cpu_ticks "${on_pids[@]}")
    after_off=$(cpu_ticks "${off_pids[@]}")
    switched_on=$(($(preemptions "${on_pids[@]}") - switched_on))
    switched_off=$(($(preemptions "${off_pids[@]}") - switched_off))
    parse "$parser" "$out_on" "flows_on.$kind"
    parse "$parser" "$out_off" "flows_off.$kind"
    cpu_cost "$kind" flows_on "$before_on" "$after_on" "$switched_on" "$out_on"
    cpu_cost "$kind" flows_off "$before_off" "$after_off" "$switched_off" "$out_off"
}

off=300
iperf_off=$((APP_IPERF_PORT + 1))
# shellcheck disable=SC2046  # the second pair's ports: every SC_* port + $off
bench_loopback $iperf_off $(for port in $SC_ROUTE_HTTP $SC_ROUTE_IPERF $SC_SERVER_IN $SC_CLIENT_IN \
    $SC_SERVER_METRICS $SC_CLIENT_METRICS $SC_SERVER_ADMIN $SC_CLIENT_ADMIN; do echo $((port + off)); done)
make_identities
start_apps
meta
meta_tools flows
record meta.method "both pairs run side by side and are loaded at the same moment, so that the machine's swings hit both alike; their ports trade places every round"
# The app's port is an HTTP port on both server sidecars, so every request is
# parsed, decided and (when on) recorded with its status and latency.
export PAIR_HTTP_PORTS=$APP_HTTP_PORT
for ROUND in $(seq "$ROUNDS"); do
    # The two pairs' ports and sockets trade places every round, so that neither
    # setting keeps the same ports, accept queues and start order throughout.
    if [ $((ROUND % 2)) = 1 ]; then
        on_off=0 off_off=$off on_iperf=$APP_IPERF_PORT off_iperf=$iperf_off
    else
        on_off=$off off_off=0 on_iperf=$iperf_off off_iperf=$APP_IPERF_PORT
    fi
    pair_configs on- on "$on_off" "$on_iperf"
    pair_configs off- off "$off_off" "$off_iperf"
    for side in on off; do
        start_bg "$side-server" pin_proxy "$PROXY" run --config "$WORK/sidecars/$side-server.yaml"
        start_bg "$side-client" pin_proxy "$PROXY" run --config "$WORK/sidecars/$side-client.yaml"
    done
    wait_listen on-client 20 $((SC_ROUTE_HTTP + on_off)) $((SC_ROUTE_IPERF + on_off)) || die "the recording pair did not start"
    wait_listen off-client 20 $((SC_ROUTE_HTTP + off_off)) $((SC_ROUTE_IPERF + off_off)) || die "the baseline pair did not start"
    http_ok $((SC_ROUTE_HTTP + on_off)) >/dev/null && http_ok $((SC_ROUTE_HTTP + off_off)) >/dev/null ||
        die "no HTTP 200 through a pair"
    log "=== round $ROUND of $ROUNDS: iperf3 ${SECS}s through both pairs at once"
    start_bg iperf-on pin_load iperf3 -s -1 -B 127.0.0.1 -p "$on_iperf"
    start_bg iperf-off pin_load iperf3 -s -1 -B 127.0.0.1 -p "$off_iperf"
    wait_listen iperf-on 10 "$on_iperf" && wait_listen iperf-off 10 "$off_iperf" || die "iperf3 did not start"
    concurrently tput "iperf3 -c 127.0.0.1 -t $SECS -J -p" $((SC_ROUTE_IPERF + on_off)) $((SC_ROUTE_IPERF + off_off))
    stop_proc iperf-on
    stop_proc iperf-off
    log "=== round $ROUND of $ROUNDS: wrk -t1 -c32 ${SECS}s through both pairs at once"
    concurrently ka "wrk -t1 -c32 -d${SECS}s --latency http://127.0.0.1:" \
        $((SC_ROUTE_HTTP + on_off)) $((SC_ROUTE_HTTP + off_off))
    record flows_on.recorded "$(curl -s --unix-socket "$WORK/sidecars/on-server-admin.sock" 'http://localhost/flows' |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["evicted"] + len(d["flows"]), sum(f.get("requests", 0) for f in d["flows"]))')"
    for side in on-server on-client off-server off-client; do
        alive "$side" || record "flows.$side.error" "beemesh-proxy $side died in round $ROUND"
        stop_proc "$side"
    done
done
bench_report flows flows_report.py "$RES"
