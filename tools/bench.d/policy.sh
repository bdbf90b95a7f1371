#!/usr/bin/env bash
# policy: decisions with 10,000 rules, reloads, and connections during reloads.
#
# Times policy decisions with 10,000 rules in 1,000 policies (indexed, and a linear
# scan of the same set as the baseline), the full reload of that set from its YAML
# files (read, parse, compile) and the reload after one file changed: the
# PolicyBenchmarks of the micro-benchmarks (Benchmarks/). Then runs new connections
# through a sidecar pair whose server holds that set while its files keep changing,
# and counts failed connections (.build/bench-policy.md). Targets: decision p99 at
# most 2 us, full reload p50 at most 100 ms, no connection dropped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(uname -s)" = Linux ] || die "Linux only"
bench_begin
install_deps
build
[ -z "$PROXY_NOTE" ] || die "$PROXY_NOTE"
meta
meta_tools capture

log "policy decisions and reloads: 10,000 rules in 1,000 policies (Benchmarks/, PolicyBenchmarks)"
mkdir -p "$WORK/policies"
BEEMESH_BENCH_TIME_ONLY=1 BEEMESH_BENCH_POLICY_FILES=$WORK/policies run_fg swift package --package-path "$ROOT/Benchmarks" benchmark \
    --target PolicyBenchmarks --no-progress --format jmh --path "$WORK/out" >"$WORK/logs/micro.log" 2>&1 ||
    { tail_log micro; die "PolicyBenchmarks failed"; }
record set.rules 10000 # PolicyFixture checks the compiled set holds exactly these
python3 "$D/jmh_results.py" "$(ls "$WORK"/out/*.jmh.json)" "decision_indexed=indexed" "decision_linear_scan=linear" "empty_iteration=empty" \
    "reload=reload" "reload_read=reload_read" "reload_parse=reload_parse" "reload_compile=reload_compile" \
    "reload_one_file_changed=reload_one_file" >>"$RES"

# Reloads under traffic: the same 10,000 rules plus one that admits the bench client,
# on a real server sidecar; new connections run while the files change.
[ -e "$WORK/policies/policies-00000.yaml" ] || die "PolicyBenchmarks did not write the set to \$BEEMESH_BENCH_POLICY_FILES"
allow_client "$WORK/policies/zz-bench-client.yaml" bench-client bench
make_identities
start_apps
sidecar_config "$WORK/sidecars/server.yaml" server inbound="127.0.0.1:$SC_SERVER_IN" ports="$APP_HTTP_PORT" \
    workload=bench policies="$WORK/policies" admin=off socket=off metrics=off logLevel=info
sidecar_config "$WORK/sidecars/client.yaml" client inbound="127.0.0.1:$SC_CLIENT_IN" admin=off socket=off \
    metrics=off route="127.0.0.1:$SC_ROUTE_HTTP,$APP_HTTP_PORT"
start_bg sc-server "$PROXY" run --config "$WORK/sidecars/server.yaml"
start_bg sc-client "$PROXY" run --config "$WORK/sidecars/client.yaml"
wait_listen sc-server 30 "$SC_SERVER_IN" || { tail_log sc-server; die "server sidecar did not start"; }
wait_listen sc-client 30 "$SC_ROUTE_HTTP" || { tail_log sc-client; die "client sidecar did not start"; }
http_ok "$SC_ROUTE_HTTP" >/dev/null || { tail_log sc-server; die "no HTTP 200 through the pair"; }

seconds=$((SECS * 2)) edits=0
files=("$WORK"/policies/policies-*.yaml)
first=${files[0]}
temporary=$WORK/policies/.${first##*/}.tmp
log "policy: wrk new connections for ${seconds}s while a policy file changes every 250 ms"
start_bg policy-wrk wrk -t1 -c16 -H 'Connection: close' -d"${seconds}s" "http://127.0.0.1:$SC_ROUTE_HTTP/"
while alive policy-wrk; do
    # an atomic rename, as configuration tools write files, with one more policy each
    # time (the set changes: recompiled, live flows re-decided); every 4th time all
    # files are touched as well (an event, no change)
    cp "$first" "$temporary"
    printf -- '---\napiVersion: beemesh.io/v1\nkind: MeshPolicy\nmetadata: {name: edit-%d, namespace: bench}\nspec: {action: ALLOW, rules: [{from: [{namespaces: [edit-%d]}]}]}\n' \
        "$edits" "$edits" >>"$temporary"
    mv "$temporary" "$first"
    if [ $((edits % 4)) = 3 ]; then touch "$WORK"/policies/*.yaml; fi
    edits=$((edits + 1))
    sleep 0.25
done
wait "${PID[policy-wrk]}" || true # parse records what went wrong
unset "PID[policy-wrk]"
parse wrk "$WORK/logs/policy-wrk.log" traffic.nc
record traffic.edits "$edits"
record traffic.reloads "$(grep -c 'policies loaded' "$WORK/logs/sc-server.log" || true)"
record traffic.denied "$(grep -c 'denied by policy' "$WORK/logs/sc-server.log" || true)"
record traffic.requests "$(awk '/requests in/ { print $1 }' "$WORK/logs/policy-wrk.log")"
bench_report policy policy_report.py "$RES"
