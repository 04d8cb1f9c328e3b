#!/usr/bin/env bash
# Benchmarks: the one command that prints every performance figure as a table.
#
#   ./bench.sh                      # everything (a few minutes on 2 cores)
#   BENCH_SKIP_SUITE=1 ./bench.sh   # leave out the four full-suite runs
#
# It builds the release binaries the benchmark starts as processes (csi-driver,
# csi-sanity), then runs harness/benches/performance.rs. Nothing asserts a time; the
# table shows each figure beside its target. As root, the node steps mount for real.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -p csi-driver -p csi-sanity --bins
exec cargo bench -p csi-sanity --bench performance "$@"
