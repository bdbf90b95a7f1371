#!/usr/bin/env bash
# agent: a pod's start through the agent against podman kube play.
#
# Starts one pod (tools/bench.d/agent-pod.yaml: one app container) through the node
# agent, with the injected sidecar, its identity, capture and readiness, and the
# same manifest through `podman kube play`, which runs it without any of that;
# BENCH_AGENT_ROUNDS=5 rounds alternate, and each start is timed from the request
# until every container of the pod runs (.build/bench-agent.md). Target: at most
# 1.5x. Needs root and podman.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
mesh_pod_running() { "$BEECTL" get pods --agent "$socket" | grep -q "benchpod .*2/2 .*Running"; }
plain_pod_running() { [ "$(podman inspect benchpod-web --format '{{.State.Status}}' 2>/dev/null)" = running ]; }
mesh_pod_gone() { ! podman pod exists benchpod.default; }

[ "$(id -u)" = 0 ] || die "run as root (podman pods, capture)"
bench_begin
"$ROOT/tools/setup" >/dev/null || die "tools/setup failed"
build
agent="$BIN/beemesh-agent"
[ -x "$agent" ] || die "beemesh-agent not found at $agent"
manifest="$D/agent-pod.yaml"
results="$WORK/agent.txt"
socket=$WORK/api/agent.sock
run_directory=/run/beemesh-bench-$$
at_exit 'podman pod rm -f benchpod.default benchpod >/dev/null 2>&1; rm -rf "$run_directory"'
log "building the images (deploy/build-images)"
"$ROOT/deploy/build-images" "$BIN" >"$WORK/logs/images.log" 2>&1 || { tail_log images; die "deploy/build-images failed"; }
"$BEECTL" ca init --trust-domain bench.local --dir "$WORK/ca" >/dev/null
"$BEECTL" ca intermediate --dir "$WORK/ca" --name node-1 --out "$WORK/node" >/dev/null
mkdir -p "$WORK/policies"
cat >"$WORK/agent.yaml" <<YAML
node: {name: node-1, ca: $WORK/node, stateDirectory: $WORK/state}
dht: {listen: 127.0.0.1:$AGENT_DHT_PORT}
api: {socket: $socket}
pods: {runDirectory: $run_directory/pods, policies: $WORK/policies}
YAML
start_bg agent "$agent" run --config "$WORK/agent.yaml"
wait_until 10 "the agent's API socket" test -S "$socket"
: >"$results"
rounds=${BENCH_AGENT_ROUNDS:-5}
for round in $(seq "$rounds"); do
    log "round $round of $rounds: through the agent"
    start=$(now_ms)
    "$BEECTL" apply -f "$manifest" --agent "$socket" >/dev/null || die "apply failed"
    wait_until 60 "the pod running through the agent" mesh_pod_running
    end=$(now_ms)
    echo "mesh $round $((end - start))" >>"$results"
    "$BEECTL" delete -f "$manifest" --agent "$socket" >/dev/null
    wait_until 60 "the agent's pod removed" mesh_pod_gone

    log "round $round of $rounds: podman kube play"
    start=$(now_ms)
    podman kube play "$manifest" >/dev/null || die "podman kube play failed"
    wait_until 60 "the pod running through podman kube play" plain_pod_running
    end=$(now_ms)
    echo "plain $round $((end - start))" >>"$results"
    podman kube down "$manifest" >/dev/null 2>&1 || podman pod rm -f benchpod >/dev/null
done
bench_report agent agent_report.py "$results"
