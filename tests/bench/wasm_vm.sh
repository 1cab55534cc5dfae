#!/usr/bin/env bash
# tests/bench/wasm_vm.sh: what creating Wasm VMs costs weir.
#
# 1. `wasm_vm_create_us`: the `wasm_vm_bench` example starts and drops N VMs of a filter one
#    after the other (instantiation and the root context's start) and prints their mean, p50,
#    p99 and max in microseconds.
# 2. `start_ms`: weir started on a config with the filter, from an empty compiled-module cache
#    and again with the cache it left (the cache's hit and miss counters of the second start).
# 3. `reload_ms` / `first_request_after_reload_ms`: weir serves a direct response through the
#    same filter; the config file's filter configuration is changed and `POST /reload` sent
#    (answered once every worker runs the new snapshot, with its new VMs), then one request is
#    timed (curl's time_total). Repeated BENCH_RELOADS times; the median, mean and max are printed,
#    with a request at rest for comparison.
#
# Environment (all optional):
#   WEIR_BIN          weir binary (default <target>/release/weir)
#   WASM_VM_BENCH_BIN the example (default <target>/release/examples/wasm_vm_bench)
#   BENCH_WASM        the filter (default <target>/wasm32-wasip1/wasm-filter/header_manipulation.wasm)
#   BENCH_VMS         VMs the example starts (default 500)
#   BENCH_RELOADS     reloads timed (default 20; 1..200)
#   BENCH_CONCURRENCY weir's --concurrency (default 2)
# Exit status: 0, or 1 when a step failed.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEIR_BIN="${WEIR_BIN:-$TARGET_DIR/release/weir}"
WASM_VM_BENCH_BIN="${WASM_VM_BENCH_BIN:-$TARGET_DIR/release/examples/wasm_vm_bench}"
BENCH_WASM="${BENCH_WASM:-$TARGET_DIR/wasm32-wasip1/wasm-filter/header_manipulation.wasm}"
BENCH_VMS="${BENCH_VMS:-500}"
BENCH_RELOADS="${BENCH_RELOADS:-20}"
BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-2}"
[[ "$BENCH_RELOADS" =~ ^[0-9]+$ ]] && ((BENCH_RELOADS >= 1 && BENCH_RELOADS <= 200)) || {
  echo "BENCH_RELOADS must be 1..200" >&2
  exit 1
}
for f in "$WEIR_BIN" "$WASM_VM_BENCH_BIN" "$BENCH_WASM"; do
  [[ -e "$f" ]] || { echo "missing: $f" >&2; exit 1; }
done

WORK="$(mktemp -d)"
WEIR_PID=""
cleanup() {
  if [[ -n "$WEIR_PID" ]]; then kill "$WEIR_PID" 2>/dev/null || true; wait "$WEIR_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Each run starts from an empty compiled-module cache, so load_ms is a compile.
echo "== wasm VM creation ($BENCH_VMS VMs of $(basename "$BENCH_WASM"))"
WEIR_WASM_CACHE_DIR="$WORK/cache-example" timeout 300 "$WASM_VM_BENCH_BIN" "$BENCH_WASM" \
  "$BENCH_VMS" '{"request": {"set": {"x-env": "bench"}}}' 2>"$WORK/example.log" || { cat "$WORK/example.log" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
ADMIN="$(free_port)"
write_config() { # $1: the value the filter sets as x-env
  cat >"$WORK/weir.yaml.tmp" <<YAML
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ADMIN } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: $PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "ok" } }
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                root_id: bench
                vm_config:
                  vm_id: bench
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: "$BENCH_WASM" } }
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"response": {"set": {"x-env": "$1"}}}'
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
YAML
  mv "$WORK/weir.yaml.tmp" "$WORK/weir.yaml"
}

# Starts weir on the config with the cache in $WORK/cache (its pid in WEIR_PID); sets
# STARTED_MS to the ms until it answered. Not in a subshell: WEIR_PID must reach cleanup.
start_weir() {
  local t0 t1
  t0="$(date +%s%N)"
  "$WEIR_BIN" -c "$WORK/weir.yaml" --concurrency "$BENCH_CONCURRENCY" --log-level warn \
    --reload-interval-ms 0 --wasm-cache-dir "$WORK/cache" >"$WORK/weir.log" 2>&1 &
  WEIR_PID=$!
  for _ in $(seq 1 2000); do
    if ! kill -0 "$WEIR_PID" 2>/dev/null; then break; fi
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/"; then
      t1="$(date +%s%N)"
      STARTED_MS=$(((t1 - t0) / 1000000))
      return 0
    fi
    sleep 0.005
  done
  echo "weir did not start:" >&2
  cat "$WORK/weir.log" >&2
  return 1
}
stop_weir() {
  kill "$WEIR_PID" 2>/dev/null || true
  wait "$WEIR_PID" 2>/dev/null || true
  WEIR_PID=""
}
cache_stats() {
  curl -s "http://127.0.0.1:$ADMIN/stats/prometheus" |
    awk '/^weir_wasm_cache_(hit|miss)_total / { printf "%s=%s ", $1, $2 }'
}

write_config v0
start_weir
cold="$STARTED_MS"
stop_weir
start_weir
warm="$STARTED_MS"
echo "== start until the first answer (--concurrency $BENCH_CONCURRENCY, one filter)"
echo "start_ms cold_cache=$cold warm_cache=$warm (warm: $(cache_stats))"

# One request: its time in ms, after checking the filter set x-env to $1.
timed_request() {
  local out
  out="$(curl -s -D - -o /dev/null -m 10 -w 'time=%{time_total}\n' "http://127.0.0.1:$PORT/")" || return 1
  grep -qi "^x-env: $1" <<<"$out" || { echo "the filter did not answer with x-env: $1" >&2; return 1; }
  awk -F= '/^time=/ { printf "%.3f\n", $2 * 1000 }' <<<"$out"
}

timed_request v0 >/dev/null
rest="$(timed_request v0)"
reloads=()
firsts=()
for i in $(seq 1 "$BENCH_RELOADS"); do
  write_config "v$i"
  reload="$(curl -s -o "$WORK/reload.json" -m 30 -w '%{time_total}' -X POST "http://127.0.0.1:$ADMIN/reload")"
  grep -q '"success"' "$WORK/reload.json" || { echo "reload $i failed: $(cat "$WORK/reload.json")" >&2; exit 1; }
  reloads+=("$(awk -v t="$reload" 'BEGIN { printf "%.3f", t * 1000 }')")
  firsts+=("$(timed_request "v$i")")
done
stats() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1; s += $1 } END {
    printf "p50=%.2f mean=%.2f max=%.2f n=%d", v[int((NR + 1) / 2)], s / NR, v[NR], NR }'
}
echo "== reload and the first request after it (--concurrency $BENCH_CONCURRENCY)"
echo "reload_ms $(stats "${reloads[@]}")"
echo "first_request_after_reload_ms $(stats "${firsts[@]}") (a request at rest: ${rest} ms)"
