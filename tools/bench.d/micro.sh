#!/usr/bin/env bash
# micro: the in-process micro-benchmarks (Benchmarks/, ordo-one's package-benchmark).
#
#   tools/bench micro           run them all and print package-benchmark's table
#   tools/bench micro --check   run them and compare with Benchmarks/Thresholds/ (at
#                               p90): exits 1 on a regression beyond the tolerances of
#                               Benchmarks/Sources/BenchmarkSupport/MicroThresholds.swift
#   tools/bench micro --update  run them and store their p90s as the new Thresholds/
#
# Policy decisions (indexed and the linear-scan baseline) and reloads with 10,000
# rules; the mesh preface, the DHT's wire frames and a sidecar's configuration
# (parse and encode). Each reports wall-clock time, throughput and allocations per
# iteration. Builds the Benchmarks package in release (its own
# .build), even with BENCH_SKIP_BUILD=1.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# package-benchmark reads and writes the thresholds in ./Thresholds
cd "$ROOT/Benchmarks"
benchmark=(swift package)
bench_begin
case ${1:-} in
    "")
        run_fg "${benchmark[@]}" benchmark --no-progress || die "the micro-benchmarks failed"
        ;;
    --check)
        # package-benchmark ends with "The baseline 'Current_run' is EQUAL to / BETTER
        # than / WORSE than the defined thresholds" (the plugin's exit status is 1 for
        # both of the last two)
        run_fg "${benchmark[@]}" benchmark thresholds check --no-progress >"$WORK/check.log" 2>&1 || true
        cat "$WORK/check.log"
        if grep -q "is WORSE than the defined thresholds" "$WORK/check.log"; then
            die "micro-benchmarks regressed beyond their thresholds; see the table above"
        elif grep -q "is BETTER than the defined thresholds" "$WORK/check.log"; then
            log "micro-benchmarks improved beyond their thresholds: consider tools/bench micro --update"
        elif grep -q "is EQUAL to the defined thresholds" "$WORK/check.log"; then
            log "micro-benchmarks within their thresholds"
        else
            die "the threshold check did not run (see above)"
        fi
        ;;
    --update)
        run_fg "${benchmark[@]}" --allow-writing-to-package-directory benchmark thresholds update --no-progress ||
            die "thresholds update failed"
        log "updated Benchmarks/Thresholds/: commit them with the change that moved them"
        ;;
    *) die "usage: tools/bench micro [--check|--update]" ;;
esac
