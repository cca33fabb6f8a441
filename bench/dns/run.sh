#!/bin/sh
# Installs dnsperf and knot if missing, builds the benchmark in release
# mode and runs it (as root: apt-get; the benchmark itself needs no root).
#   bench/dns/run.sh [dns-bench arguments]   e.g. --runs 5 --secs 10
set -eu
cd "$(dirname "$0")/../.."
bash -c '. deploy/deps.sh; drover_install_bench_deps'
cargo build --release -p drover-bench-dns
exec "${CARGO_TARGET_DIR:-target}/release/dns-bench" "$@"
