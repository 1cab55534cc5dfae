#!/usr/bin/env bash
# tests/bench/scaling.sh: weir with 1, 2, 4, ... workers, each run pinned to its own cores with
# the load generators and the upstream on the others, printing req/s and the proxy's CPU per
# request for each worker count (`make bench-scaling`). Made for a many-core machine (the
# project's 16-core device machine); on 2 cores it runs 1 worker only.
#
# Environment (all optional): SCALING_TESTS (default "wrk_h1 h2load_h2c tunnel_bulk"),
# SCALING_MAX_WORKERS (default: half the CPUs, rounded down, at least 1), BENCH_SECONDS, and
# anything else tests/bench/run.sh reads.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CPUS=$(nproc)
MAX=${SCALING_MAX_WORKERS:-$((CPUS / 2))}
((MAX >= 1)) || MAX=1
TESTS=${SCALING_TESTS:-wrk_h1 h2load_h2c tunnel_bulk}
OUT="$TARGET_DIR/bench/scaling-$(date -u +%Y%m%dT%H%M%SZ).tsv"
mkdir -p "$(dirname "$OUT")"
printf 'workers\ttest\trps\tunit\tcpu_us_per_request\n' >"$OUT"

workers=1
while ((workers <= MAX)); do
    # The proxy on CPUs 0..workers-1; clients and upstreams on the rest (at least one CPU).
    proxy_cpus="0-$((workers - 1))"
    client_cpus="$workers-$((CPUS - 1))"
    ((workers < CPUS)) || client_cpus="$((CPUS - 1))"
    client_threads=$((CPUS - workers))
    ((client_threads >= 1)) || client_threads=1
    echo "[scaling] $workers worker(s) on CPUs $proxy_cpus; clients on $client_cpus ($client_threads threads)" >&2
    BENCH_TARGETS=weir BENCH_TESTS="$TESTS" BENCH_WORKERS=$workers \
        BENCH_PROXY_CPUS=$proxy_cpus BENCH_CLIENT_CPUS=$client_cpus \
        BENCH_CLIENT_THREADS=$client_threads BENCH_CONNS=$((client_threads * 4 > 2 ? client_threads * 4 : 2)) \
        "$BENCH_DIR/run.sh" >"$TARGET_DIR/bench/scaling-$workers.log" 2>&1 || true
    awk -F'\t' -v w="$workers" 'NR > 1 && $2 == "weir" {print w "\t" $1 "\t" $4 "\t" $5 "\t" $8}' \
        "$TARGET_DIR/bench/latest.tsv" >>"$OUT"
    workers=$((workers * 2))
done

echo
printf '%-8s %-12s %12s %-8s %10s\n' workers test rate unit 'cpu us/rq'
awk -F'\t' 'NR > 1 {printf "%-8s %-12s %12s %-8s %10s\n", $1, $2, $3, $4, ($5 == "" ? "-" : $5)}' "$OUT"
echo "results: $OUT"
