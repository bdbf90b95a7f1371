#!/usr/bin/env bash
# capture: what the nftables redirect itself costs, in two network namespaces.
#
# Two network namespaces joined by a veth pair, capture installed in both, nginx
# behind the server sidecar, and wrk in the client namespace asking for new
# connections (Connection: close) either through the client sidecar's explicit
# route listener (127.0.0.1, not captured) or by dialling the server's plain address
# (captured, redirected to :15001, original destination looked up, same route).
# Prints new connections/s and p99 latency for both and their ratio
# (.build/bench-capture.md). Needs root.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# the namespaces and veth ends are this run's own
CAP_A=bmb$$a
CAP_B=bmb$$b
CAP_ADDR_A=10.79.0.1
CAP_ADDR_B=10.79.0.2
CAP_ROUTE=7000

# ns_listening NS PORT: something listens on PORT inside NS
ns_listening() { [ -n "$(ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null)" ]; }

# ns_wait_listen NAME NS PORT: wait up to 20 s while NAME runs
ns_wait_listen() {
    local deadline=$((SECONDS + 20))
    until ns_listening "$2" "$3"; do
        alive "$1" || {
            log "$1 exited before listening on $3 in $2"
            return 1
        }
        [ "$SECONDS" -lt "$deadline" ] || {
            log "$1: port $3 not listening in $2 after 20s"
            return 1
        }
        sleep 0.1
    done
}

capture_namespaces() {
    local ns
    for ns in "$CAP_A" "$CAP_B"; do
        ip netns add "$ns" || die "ip netns add $ns failed"
        NETNS+=("$ns")
    done
    ip link add "${CAP_A}0" type veth peer name "${CAP_B}0" || die "cannot create the veth pair"
    ip link set "${CAP_A}0" netns "$CAP_A"
    ip link set "${CAP_B}0" netns "$CAP_B"
    ip -n "$CAP_A" addr add "$CAP_ADDR_A/24" dev "${CAP_A}0"
    ip -n "$CAP_B" addr add "$CAP_ADDR_B/24" dev "${CAP_B}0"
    for ns in "$CAP_A" "$CAP_B"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set "${ns}0" up
    done
}

capture_sidecars() {
    local S="$WORK/sidecars" ns
    mkdir -p "$S"
    # the sidecars run as uid 1337, like in a pod, and make their admin sockets in $S
    chmod 755 "$WORK" "$WORK/certs"
    chown -R 1337:1337 "$WORK/certs/client" "$WORK/certs/server" "$S"
    allow_client "$WORK/policies/bench.yaml" bench default
    chmod 755 "$WORK/policies"
    sidecar_config "$S/b.yaml" server inbound=0.0.0.0:15008 services=app.default ports="$APP_HTTP_PORT" \
        policies="$WORK/policies" capture=on socket="$S/b-admin.sock"
    sidecar_config "$S/a.yaml" client inbound=0.0.0.0:15008 capture=on socket="$S/a-admin.sock" \
        endpoint="$CAP_ADDR_B:15008" route="127.0.0.1:$CAP_ROUTE,$APP_HTTP_PORT,$CAP_ADDR_B"
    for ns in "$CAP_A" "$CAP_B"; do
        "$PROXY" capture install --netns "$ns" >>"$WORK/logs/capture-install.log" 2>&1 ||
            { tail_log capture-install; die "capture install in $ns failed"; }
    done
    local as1337=(setpriv --reuid 1337 --regid 1337 --clear-groups)
    start_bg cap-b ip netns exec "$CAP_B" "${as1337[@]}" "$PROXY" run --config "$S/b.yaml"
    start_bg cap-a ip netns exec "$CAP_A" "${as1337[@]}" "$PROXY" run --config "$S/a.yaml"
    ns_wait_listen cap-b "$CAP_B" 15008 || { tail_log cap-b; die "server sidecar did not start"; }
    ns_wait_listen cap-a "$CAP_A" 15001 || { tail_log cap-a; die "client sidecar did not start"; }
}

# capture_wrk SETUP URL: new connections through the client sidecar
capture_wrk() {
    local setup=$1 url=$2 out="$WORK/out/$1-nc-$ROUND.txt"
    log "$setup: wrk -t1 -c16 Connection: close ${SECS}s to $url"
    run_fg timeout $((SECS + 30)) ip netns exec "$CAP_A" \
        wrk -t1 -c16 -H 'Connection: close' -d"${SECS}s" --latency "$url" >"$out" 2>&1 || true
    parse wrk "$out" "$setup.nc"
}

[ "$(uname -s)" = Linux ] || die "Linux only"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, nftables)"
bench_begin
install_deps
build
[ -z "$PROXY_NOTE" ] || die "$PROXY_NOTE"
make_identities
capture_namespaces
# nginx inside the server namespace, on its loopback, behind the sidecar
nginx_config
start_bg nginx ip netns exec "$CAP_B" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
    -c "$WORK/nginx/nginx.conf"
ns_wait_listen nginx "$CAP_B" "$APP_HTTP_PORT" || { tail_log nginx; die "nginx did not start"; }
capture_sidecars
meta
meta_tools capture
record meta.setup "namespaces $CAP_A ($CAP_ADDR_A) and $CAP_B ($CAP_ADDR_B) on a veth pair; capture installed in both; sidecars as uid 1337"

for ROUND in $(seq "$ROUNDS"); do
    log "=== round $ROUND of $ROUNDS"
    capture_wrk explicit "http://127.0.0.1:$CAP_ROUTE/"
    sleep 2
    capture_wrk captured "http://$CAP_ADDR_B:$APP_HTTP_PORT/"
    sleep 2
done
"$PROXY" capture show --netns "$CAP_A" >"$WORK/out/counters-a.txt" 2>&1 ||
    record capture.error "capture show failed: $(tail -n 1 "$WORK/out/counters-a.txt")"
record capture.redirected_connections "$(awk '/outbound TCP to the proxy/ { print $3 }' "$WORK/out/counters-a.txt")"
bench_report capture capture_report.py "$RES"
