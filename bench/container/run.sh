#!/bin/sh
# Builds the release binaries and runs the container benchmark (root).
#   bench/container/run.sh [--runs N]
set -eu
cd "$(dirname "$0")/../.."
command -v crun >/dev/null && command -v runc >/dev/null && command -v busybox >/dev/null || {
    echo "needs crun, runc and busybox-static: apt-get install -y crun runc busybox-static" >&2
    exit 1
}
cargo build --release -p drover-cli -p drover-bench-container
exec ./target/release/container-bench --drover ./target/release/drover "$@"
