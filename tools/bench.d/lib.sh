# shellcheck shell=bash disable=SC2034
# tools/bench.d/lib.sh — what the benchmark scripts share. Sourced, never run.
#
# Every script runs with `set -euo pipefail`: a command that fails where failure is
# not expected ends the run with the line that failed. Failures a benchmark expects
# (a setup that does not start, a load generator that gives up) are recorded as
# results instead, through `record`.
#
# Environment:
#   BENCH_SECONDS=6       length of each measurement
#   BENCH_ROUNDS=3        rounds of all setups; the reports show medians
#   BENCH_CONNS=1000      connections held open for the RSS measurement
#   BENCH_PORT_BASE=17000 first of the 127.0.0.1 ports used (up to base+323)
#   BENCH_SKIP_BUILD=1    do not run swift; use the binaries already built
#   BENCH_BIN_DIR=DIR     where beemesh-proxy, beemesh-agent and beectl are (default:
#                         the directory tools/build-release prints)
#   BENCH_KEEP=1          keep the temp dir (configs, logs, raw outputs)
#   BENCH_RELAY_ENGINE=E  the sidecars' relayEngine: direct (default) or channel
#   BENCH_STEAL_MAX=2     keep-alive measurements during which the hypervisor stole
#                         more than this percent of the CPU time (steal, /proc/stat)
#   BENCH_STEAL_RETRIES=3 are repeated up to this many times; the least stolen
#                         attempt is kept
#   BENCH_PIN=1           pin the sidecars to CPU 1 and the apps and load generators
#                         (nginx, iperf3, wrk, h2load) to CPU 0 (taskset)
#
# Only one benchmark runs at a time on a machine: each takes the lock
# /tmp/beemesh-bench.lock (see bench_lock) and refuses to start while another run
# holds it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
D="$ROOT/tools/bench.d"
SECS=${BENCH_SECONDS:-6}
ROUNDS=${BENCH_ROUNDS:-3}
ROUND=1
CONNS=${BENCH_CONNS:-1000}
BASE=${BENCH_PORT_BASE:-17000}

# --- ports (all on 127.0.0.1) -------------------------------------------------
APP_HTTP_PORT=$((BASE + 80))     # nginx
APP_IPERF_PORT=$((BASE + 201))   # iperf3 -s
SC_ROUTE_HTTP=$((BASE + 0))      # client sidecar route -> app.default:APP_HTTP_PORT
SC_ROUTE_IPERF=$((BASE + 1))     # client sidecar route -> app.default:APP_IPERF_PORT
SC_SERVER_IN=$((BASE + 8))       # server sidecar inbound (mTLS)
SC_CLIENT_IN=$((BASE + 9))       # client sidecar inbound (unused by the benchmarks)
SC_SERVER_METRICS=$((BASE + 20)) # sidecars' Prometheus and admin listeners
SC_CLIENT_METRICS=$((BASE + 21))
SC_SERVER_ADMIN=$((BASE + 22))
SC_CLIENT_ADMIN=$((BASE + 23))
HA_A_HTTP=$((BASE + 100))        # haproxy A frontends (plaintext)
HA_A_IPERF=$((BASE + 101))
HA_B_HTTP=$((BASE + 110))        # haproxy B frontends (TLS 1.3, client cert)
HA_B_IPERF=$((BASE + 111))
AGENT_DHT_PORT=$((BASE + 150))   # the agent benchmark's DHT listener
ALL_PORTS="$APP_HTTP_PORT $APP_IPERF_PORT $SC_ROUTE_HTTP $SC_ROUTE_IPERF $SC_SERVER_IN
           $SC_CLIENT_IN $SC_SERVER_METRICS $SC_CLIENT_METRICS $SC_SERVER_ADMIN $SC_CLIENT_ADMIN $HA_A_HTTP $HA_A_IPERF $HA_B_HTTP $HA_B_IPERF"
# idle timeouts of the proxies/app must outlast a measurement (iperf3's
# control connection is silent for the whole test)
IDLE_TIMEOUT=$((SECS + 120))
CLIENT_ID=spiffe://bench.local/ns/default/sa/client
SERVER_ID=spiffe://bench.local/ns/default/sa/app

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- process bookkeeping and cleanup ------------------------------------------
declare -A PID=()
NETNS=()
AT_EXIT=()
WORK=""
RES=""

stop_proc() {
    local name=$1 pid=${PID[$1]:-} _
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
}

# at_exit COMMAND...: run COMMAND (one string, evaluated) when the run ends, after
# the processes it started have been stopped
at_exit() { AT_EXIT+=("$*"); }

cleanup() {
    local rc=$? name command
    set +e
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do
        stop_proc "$name"
    done
    for command in "${AT_EXIT[@]}"; do
        eval "$command"
    done
    for name in "${NETNS[@]}"; do
        ip netns del "$name" 2>/dev/null
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then
            log "kept temp dir $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# bench_begin: take the machine's benchmark lock, set the traps, and make the run's
# own temp dir ($WORK, with logs/ and out/) and results file ($RES)
bench_begin() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    bench_lock
    WORK=$(mktemp -d /tmp/beemesh-bench.XXXXXX)
    mkdir -p "$WORK/logs" "$WORK/out"
    RES="$WORK/results.txt"
    : >"$RES"
}

# bench_lock: one benchmark at a time on this machine. The lock is a directory
# holding the owner's PID (no descriptor for the processes a benchmark starts to
# inherit), renamed into place whole so that it never exists without its PID. One
# whose owner is gone is moved aside (a rename, so that of two runs finding it stale
# only one takes it) and taken over. At exit it is removed only if it is still ours.
BENCH_LOCK=/tmp/beemesh-bench.lock
bench_lock() {
    local staging="$BENCH_LOCK.$$" holder
    mkdir -p "$staging"
    echo $$ >"$staging/pid"
    if ! mv -T "$staging" "$BENCH_LOCK" 2>/dev/null; then
        holder=$(cat "$BENCH_LOCK/pid" 2>/dev/null || true)
        # /proc, not kill -0: a holder of another user is alive too
        if [ -z "$holder" ] || [ -d "/proc/$holder" ]; then
            rm -rf "$staging"
            die "another tools/bench run (pid ${holder:-starting}) holds $BENCH_LOCK: one benchmark at a time"
        fi
        # Moved aside, it must still be the dead run's: another run may have taken
        # over between our read and our move (then it goes back).
        if ! mv -T "$BENCH_LOCK" "$BENCH_LOCK.stale.$$" 2>/dev/null ||
            [ "$(cat "$BENCH_LOCK.stale.$$/pid" 2>/dev/null)" != "$holder" ]; then
            mv -T "$BENCH_LOCK.stale.$$" "$BENCH_LOCK" 2>/dev/null || true
            rm -rf "$staging" "$BENCH_LOCK.stale.$$"
            die "another tools/bench run took $BENCH_LOCK first"
        fi
        if ! mv -T "$staging" "$BENCH_LOCK" 2>/dev/null; then
            rm -rf "$staging" "$BENCH_LOCK.stale.$$"
            die "another tools/bench run took $BENCH_LOCK first"
        fi
        log "took over $BENCH_LOCK from a run that is gone (pid $holder)"
        rm -rf "$BENCH_LOCK.stale.$$"
    fi
    at_exit '[ "$(cat "$BENCH_LOCK/pid" 2>/dev/null)" = $$ ] && rm -rf "$BENCH_LOCK"'
}

# bench_loopback [EXTRA_PORT...]: what every benchmark on 127.0.0.1 starts with: the
# lock and the run's temp dir, the open-files limit, the tools, the binaries, and its
# ports free
bench_loopback() {
    [ "$(uname -s)" = Linux ] || die "Linux only"
    bench_begin
    raise_open_files
    install_deps
    build
    ports_free $ALL_PORTS "$@"
}

# raise_open_files: 65536 open files if the hard limit allows, else the hard limit
raise_open_files() {
    if ! ulimit -n 65536 2>/dev/null; then
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        log "warning: cannot raise the open-files limit to 65536; using $(ulimit -n)"
    fi
}

# ports_free PORT...: dies when one of them is in use
ports_free() {
    local port
    for port in "$@"; do
        if listening "$port"; then
            die "port $port is already in use (set BENCH_PORT_BASE)"
        fi
    done
}

# bench_report NAME REPORTER [ARGS...]: the markdown report .build/bench-NAME.md,
# written by REPORTER (a script in tools/bench.d) and printed
bench_report() {
    local name=$1 reporter=$2 out="$ROOT/.build/bench-$1.md"
    shift 2
    mkdir -p "$ROOT/.build"
    python3 "$D/$reporter" "$@" >"$out" || die "$reporter failed"
    echo
    cat "$out"
    echo
    log "written to .build/bench-$name.md"
}

# start_bg NAME CMD...: run CMD in the background, output to $WORK/logs/NAME.log
start_bg() {
    local name=$1
    shift
    "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
}

# With BENCH_PIN=1: the CPU sets of the sidecars and of everything else. Used only
# as the command of start_bg and run_fg, whose background subshell it replaces (exec),
# so that the PID they keep is the process's own.
pin_proxy() { if [ "${BENCH_PIN:-0}" = 1 ]; then exec taskset -c 1 "$@"; else exec "$@"; fi; }
pin_load() { if [ "${BENCH_PIN:-0}" = 1 ]; then exec taskset -c 0 "$@"; else exec "$@"; fi; }

# run_fg CMD...: run CMD to completion, but in the background so that a
# signal to this script runs the cleanup trap at once (bash defers traps
# while a foreground child runs); the cleanup also stops CMD. Returns CMD's status.
run_fg() {
    local rc=0
    "$@" </dev/null &
    PID[fg]=$!
    wait "${PID[fg]}" || rc=$?
    unset "PID[fg]"
    return "$rc"
}

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

# listening PORT: something listens on PORT (any local address), per /proc
listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# wait_listen NAME TIMEOUT PORT...: wait until all PORTs listen while NAME runs
wait_listen() {
    local name=$1 timeout=$2 port
    shift 2
    local deadline=$((SECONDS + timeout))
    for port in "$@"; do
        until listening "$port"; do
            alive "$name" || {
                log "$name exited before listening on $port"
                return 1
            }
            [ "$SECONDS" -lt "$deadline" ] || {
                log "$name: port $port not listening after ${timeout}s"
                return 1
            }
            sleep 0.1
        done
    done
}

# wait_until TIMEOUT WHAT COMMAND...: run COMMAND every 20 ms until it succeeds;
# dies naming WHAT after TIMEOUT seconds
wait_until() {
    local timeout=$1 deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what: not within $timeout s"
        sleep 0.02
    done
}

rss_mb() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/status" ] || return 0
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Private memory: RssAnon, what one more proxy process costs (its file-backed pages,
# code and libraries, are shared with every other process running the same binary).
anon_mb() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/status" ] || return 0
    awk '/^RssAnon:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# cpu_ticks PID...: "USER SYSTEM" CPU time of the processes, in clock ticks
cpu_ticks() {
    local pid user=0 system=0 fields
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        # the fields after the parenthesised command name: utime is 12th, stime 13th
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        user=$((user + $(echo "$fields" | awk '{ print $12 }')))
        system=$((system + $(echo "$fields" | awk '{ print $13 }')))
    done
    echo "$user $system"
}

# preemptions PID...: involuntary context switches of every thread of the processes
preemptions() {
    local pid
    for pid in "$@"; do
        cat /proc/"$pid"/task/*/status 2>/dev/null || true
    done | awk '/^nonvoluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# cpu_cost KIND SETUP BEFORE AFTER SWITCHED OUTPUT: the results lines of cpu_cost.py
cpu_cost() {
    python3 "$D/cpu_cost.py" "$1" "$2" "$3" "$4" "$5" "$(getconf CLK_TCK)" "$6" >>"$RES"
}

# with_cpu SETUP KIND PIDS -- COMMAND...: runs a measurement (measure_iperf or
# measure_wrk) and records the CPU the processes PIDS (space separated) spent on it,
# user and system, and how often they were preempted, per GiB relayed (KIND tput,
# from iperf3's byte count) or per request (KIND ka, from wrk's request count). On a
# shared machine the time a request takes swings with the neighbours; the CPU it
# costs much less.
with_cpu() {
    local setup=$1 kind=$2 pids=$3 before after switched
    shift 4
    read -ra pids <<<"$pids"
    if ((${#pids[@]} == 0)); then
        "$@"
        return
    fi
    before=$(cpu_ticks "${pids[@]}")
    switched=$(preemptions "${pids[@]}")
    "$@"
    after=$(cpu_ticks "${pids[@]}")
    switched=$(($(preemptions "${pids[@]}") - switched))
    cpu_cost "$kind" "$setup" "$before" "$after" "$switched" \
        "$WORK/out/$setup-$([ "$kind" = tput ] && echo iperf.json || echo wrk-ka.txt)"
}

tail_log() { tail -n "${2:-15}" "$WORK/logs/$1.log" 2>/dev/null | sed 's/^/    | /' >&2 || true; }

# record KEY VALUE: one line of the results file (values on one line)
record() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')" >>"$RES"; }

# parse KIND FILE PREFIX: the results lines of parse.py (iperf, wrk or h2load output)
parse() { python3 "$D/parse.py" "$@" >>"$RES"; }

# render TEMPLATE OUT VAR=VALUE...: replace @VAR@ tokens
render() {
    local in=$1 out=$2 kv
    shift 2
    local args=()
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$in" >"$out" || die "cannot render $in"
    if grep -q '@[A-Z_]*@' "$out"; then
        die "unfilled token in $out: $(grep -o '@[A-Z_]*@' "$out" | sort -u | tr '\n' ' ')"
    fi
}

# --- setup steps ----------------------------------------------------------------
install_deps() {
    local need=() cmd pkg
    for cmd in haproxy:haproxy iperf3:iperf3 wrk:wrk h2load:nghttp2-client nginx:nginx-light python3:python3 timeout:coreutils curl:curl; do
        pkg=${cmd#*:}
        command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("$pkg")
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing ${need[*]} and not root: install them first"
    log "installing ${need[*]}"
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"; }; then
        die "apt-get install ${need[*]} failed"
    fi
}

# build: the shipped binaries ($BIN, $BEECTL, $PROXY); PROXY_NOTE says why the
# proxy is missing when its build failed
build() {
    PROXY_NOTE=""
    if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
        BIN=${BENCH_BIN_DIR:-$ROOT/.build-static/release}
        log "BENCH_SKIP_BUILD=1: using binaries in $BIN"
    else
        command -v swift >/dev/null 2>&1 || die "swift not found (set BENCH_SKIP_BUILD=1 and BENCH_BIN_DIR to use prebuilt binaries)"
        # The sidecar is measured as it ships: tools/build-release links the Swift
        # runtime and Foundation statically and places the start-up and relay code
        # together.
        log "building beectl, beemesh-agent and beemesh-proxy (tools/build-release)"
        if ! BIN=$("$ROOT/tools/build-release" | tail -n 1); then
            PROXY_NOTE="tools/build-release failed"
            BIN=$ROOT/.build-static/release
        fi
        BIN=${BENCH_BIN_DIR:-$BIN}
    fi
    BEECTL="$BIN/beectl"
    PROXY="$BIN/beemesh-proxy"
    [ -x "$BEECTL" ] || die "beectl not found at $BEECTL"
}

# release_tool PRODUCT: the path of a release build of one of the package's own
# tools (beemesh-dht-sim), built unless BENCH_SKIP_BUILD=1
release_tool() {
    if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
        log "building $1 (release)"
        (cd "$ROOT" && swift build -c release --product "$1" >&2) || die "swift build $1 failed"
    fi
    echo "$(cd "$ROOT" && swift build -c release --show-bin-path)/$1"
}

make_identities() {
    local C="$WORK/certs"
    log "creating identities with beectl"
    "$BEECTL" ca init --trust-domain bench.local --dir "$C/ca" >"$WORK/logs/beectl.log" 2>&1 ||
        { tail_log beectl; die "beectl ca init failed"; }
    "$BEECTL" ca issue --dir "$C/ca" --spiffe-id "$CLIENT_ID" \
        --out "$C/client" >>"$WORK/logs/beectl.log" 2>&1 || { tail_log beectl; die "beectl ca issue (client) failed"; }
    "$BEECTL" ca issue --dir "$C/ca" --spiffe-id "$SERVER_ID" \
        --out "$C/server" >>"$WORK/logs/beectl.log" 2>&1 || { tail_log beectl; die "beectl ca issue (server) failed"; }
    local side f
    for side in client server; do
        for f in cert.pem key.pem bundle.pem; do
            [ -s "$C/$side/$f" ] || die "beectl did not write $C/$side/$f"
        done
    done
    # HAProxy takes cert + chain + key in one file; each haproxy gets the same
    # identity as the sidecar in its place (A = client, B = server).
    mkdir -p "$WORK/haproxy-a" "$WORK/haproxy-b"
    cat "$C/client/cert.pem" "$C/client/key.pem" >"$WORK/haproxy-a/client-combined.pem"
    cp "$C/client/bundle.pem" "$WORK/haproxy-a/bundle.pem"
    cat "$C/server/cert.pem" "$C/server/key.pem" >"$WORK/haproxy-b/server-combined.pem"
    cp "$C/server/bundle.pem" "$WORK/haproxy-b/bundle.pem"
    chmod 600 "$WORK"/haproxy-?/*-combined.pem
}

# nginx_config: $WORK/nginx/nginx.conf, the app (nginx on APP_HTTP_PORT)
nginx_config() {
    mkdir -p "$WORK/nginx/tmp"
    render "$D/nginx.conf.in" "$WORK/nginx/nginx.conf" \
        "WORK=$WORK" "APP_HTTP_PORT=$APP_HTTP_PORT" "IDLE_TIMEOUT=$IDLE_TIMEOUT"
}

start_apps() {
    nginx_config
    nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
        >"$WORK/logs/nginx-check.log" 2>&1 || { tail_log nginx-check; die "nginx config rejected"; }
    start_bg nginx pin_load nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
    wait_listen nginx 10 "$APP_HTTP_PORT" || { tail_log nginx; die "nginx did not start"; }
}

# allow_client FILE NAME NAMESPACE: a policy that admits the bench client's identity
# to the workloads of NAMESPACE
allow_client() {
    mkdir -p "$(dirname "$1")"
    cat >"$1" <<EOF
apiVersion: beemesh.io/v1
kind: MeshPolicy
metadata: {name: $2, namespace: $3}
spec:
  action: ALLOW
  rules: [{from: [{identities: ["$CLIENT_ID"]}]}]
EOF
}

# sidecar_config FILE SIDE [KEY=VALUE...]: a beemesh-proxy configuration holding
# SIDE's identity (client or server, from make_identities). Every sidecar
# configuration of the benchmarks is written here. Keys (each optional but inbound):
#   inbound=ADDRESS        the mTLS listener
#   services=LIST          services the inbound serves (a YAML flow list's items)
#   ports=LIST             app ports the inbound forwards to (default: none)
#   route=LISTEN,PORT[,MATCH_NETWORK]  a route to app.default:PORT through the
#                          server sidecar at $ENDPOINT (repeat for more routes)
#   endpoint=ADDRESS       the server sidecar the routes dial (default 127.0.0.1:SC_SERVER_IN)
#   capture=on             the capture listeners (127.0.0.1:15001, 0.0.0.0:15006)
#   policies=DIR  httpPorts=LIST  workload=NAMESPACE (labels app=bench)
#   admin=ADDRESS|off  socket=PATH|off  metrics=ADDRESS|off  record=true|false
#   logLevel=LEVEL         (default warning)
sidecar_config() {
    local file=$1 side=$2 C="$WORK/certs" kv key value
    shift 2
    local -A opt=([logLevel]=warning [ports]="" [endpoint]="127.0.0.1:$SC_SERVER_IN")
    local routes=()
    for kv in "$@"; do
        key=${kv%%=*} value=${kv#*=}
        if [ "$key" = route ]; then routes+=("$value"); else opt[$key]=$value; fi
    done
    [ -n "${opt[inbound]:-}" ] || die "sidecar_config $file: no inbound"
    mkdir -p "$(dirname "$file")"
    {
        echo "identity: {certificate: $C/$side/cert.pem, privateKey: $C/$side/key.pem, trustBundle: $C/$side/bundle.pem}"
        printf 'inbound: {listen: %s%s, ports: [%s]}\n' "${opt[inbound]}" \
            "${opt[services]:+, services: [${opt[services]}]}" "${opt[ports]}"
        if [ "${opt[capture]:-off}" = on ]; then
            echo "capture: {outbound: [127.0.0.1:15001], inbound: [0.0.0.0:15006]}"
        fi
        if [ -n "${opt[policies]:-}" ]; then
            echo "policies: {directory: ${opt[policies]}, httpPorts: [${opt[httpPorts]:-}]}"
        fi
        if [ -n "${opt[workload]:-}" ]; then
            echo "workload: {namespace: ${opt[workload]}, labels: {app: bench}}"
        fi
        if ((${#routes[@]} == 0)); then echo "routes: []"; else echo "routes:"; fi
        local route listen port match
        for route in "${routes[@]}"; do
            IFS=, read -r listen port match <<<"$route"
            echo "  - listen: $listen"
            if [ -n "$match" ]; then echo "    match: [{network: $match, port: $port}]"; fi
            echo "    service: app.default"
            echo "    port: $port"
            echo "    endpoints: [{address: \"${opt[endpoint]}\", identity: $SERVER_ID}]"
        done
        local admin=${opt[admin]:+listen: ${opt[admin]}}
        if [ -n "${opt[socket]:-}" ]; then admin="${admin:+$admin, }socket: ${opt[socket]}"; fi
        if [ -n "$admin" ]; then echo "admin: {$admin}"; fi
        if [ -n "${opt[metrics]:-}" ]; then echo "metrics: {listen: ${opt[metrics]}}"; fi
        if [ -n "${opt[record]:-}" ]; then echo "flows: {record: ${opt[record]}}"; fi
        echo "workers: 1"
        echo "relayEngine: ${BENCH_RELAY_ENGINE:-direct}"
        echo "logLevel: ${opt[logLevel]}"
    } >"$file"
}

# --- measurements -------------------------------------------------------------
# http_ok PORT: one keep-alive GET through PORT answers 200; otherwise prints why
http_ok() {
    local out
    out=$(timeout 20 python3 "$D/hold_conns.py" 127.0.0.1 "$1" 1 0 2>&1) || true
    case $out in
        "READY opened=1 failed=0"*) return 0 ;;
        *)
            printf '%s' "$out" | tail -n 1
            return 1
            ;;
    esac
}

meta() {
    record meta.date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    record meta.machine "$(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
    record meta.commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
    record meta.seconds_per_measurement "$SECS"
    record meta.rounds "$ROUNDS (medians)"
    record meta.open_files_limit "$(ulimit -n)"
}

# meta_tools dataplane|capture: which load generators, apps and proxies measured
meta_tools() {
    if [ "$1" = capture ]; then
        record meta.tools "$(nginx -v 2>&1 | sed 's/^nginx version: //'); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
        record meta.proxy "$PROXY (workers: 1, relayEngine: ${BENCH_RELAY_ENGINE:-direct})"
        return
    fi
    record meta.connections_held "$CONNS"
    record meta.tools "$(haproxy -v | head -n 1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(iperf3 --version | head -n 1 | cut -d' ' -f1-2); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
    record meta.proxy "$PROXY (workers: 1); haproxy nbthread 1"
}

# --- the sidecar pair on 127.0.0.1 ------------------------------------------------
# pair_configs PREFIX RECORD OFFSET IPERF_APP_PORT: $WORK/sidecars/PREFIXserver.yaml
# and PREFIXclient.yaml, a sidecar pair whose own ports are the SC_* ports + OFFSET,
# recording flows and serving metrics (the defaults) unless RECORD is off. The
# server's HTTP ports are PAIR_HTTP_PORTS (default none).
pair_configs() {
    local prefix=$1 off=$3 iperf=$4 S="$WORK/sidecars" recording=true
    local metrics_server=127.0.0.1:$((SC_SERVER_METRICS + off)) metrics_client=127.0.0.1:$((SC_CLIENT_METRICS + off))
    if [ "$2" = off ]; then recording=false metrics_server=off metrics_client=off; fi
    allow_client "$WORK/policies/bench.yaml" bench default
    sidecar_config "$S/${prefix}server.yaml" server inbound="127.0.0.1:$((SC_SERVER_IN + off))" \
        services=app.default ports="$APP_HTTP_PORT, $iperf" policies="$WORK/policies" \
        httpPorts="${PAIR_HTTP_PORTS:-}" admin="127.0.0.1:$((SC_SERVER_ADMIN + off))" \
        socket="$S/${prefix}server-admin.sock" metrics="$metrics_server" record="$recording"
    sidecar_config "$S/${prefix}client.yaml" client inbound="127.0.0.1:$((SC_CLIENT_IN + off))" \
        endpoint="127.0.0.1:$((SC_SERVER_IN + off))" route="127.0.0.1:$((SC_ROUTE_HTTP + off)),$APP_HTTP_PORT" \
        route="127.0.0.1:$((SC_ROUTE_IPERF + off)),$iperf" admin="127.0.0.1:$((SC_CLIENT_ADMIN + off))" \
        socket="$S/${prefix}client-admin.sock" metrics="$metrics_client" record="$recording"
}

# start_pair: the sidecar pair's two processes (sc-server, sc-client); on failure
# records pair.skipped and returns 1
start_pair() {
    if [ -n "$PROXY_NOTE" ] || [ ! -x "$PROXY" ]; then
        record pair.skipped "${PROXY_NOTE:-beemesh-proxy not found at $PROXY}"
        log "sidecar pair SKIPPED: ${PROXY_NOTE:-beemesh-proxy not found at $PROXY}"
        return 1
    fi
    pair_configs "" on 0 "$APP_IPERF_PORT"
    start_bg sc-server pin_proxy "$PROXY" run --config "$WORK/sidecars/server.yaml"
    if ! wait_listen sc-server 20 "$SC_SERVER_IN"; then
        tail_log sc-server
        record pair.skipped "server beemesh-proxy did not start (log: $(tail -n 1 "$WORK/logs/sc-server.log" 2>/dev/null))"
        log "sidecar pair SKIPPED: server beemesh-proxy did not start"
        stop_proc sc-server
        return 1
    fi
    start_bg sc-client pin_proxy "$PROXY" run --config "$WORK/sidecars/client.yaml"
    if ! wait_listen sc-client 20 "$SC_ROUTE_HTTP" "$SC_ROUTE_IPERF"; then
        tail_log sc-client
        record pair.skipped "client beemesh-proxy did not start (log: $(tail -n 1 "$WORK/logs/sc-client.log" 2>/dev/null))"
        log "sidecar pair SKIPPED: client beemesh-proxy did not start"
        stop_proc sc-client
        stop_proc sc-server
        return 1
    fi
    sleep 1
}

stop_pair() {
    alive sc-server || record pair.server.error "server beemesh-proxy died during the run"
    alive sc-client || record pair.client.error "client beemesh-proxy died during the run"
    stop_proc sc-client
    stop_proc sc-server
}
