#!/bin/sh
# Builds the release binaries and runs the submit -> running benchmark (root).
#   bench/scheduler/run.sh [--jobs N]
set -eu
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p drover-cli -p drover-bench-scheduler
exec "$target/release/scheduler-bench" --drover "$target/release/drover" "$@"
