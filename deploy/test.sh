#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks
# formatting and lints, builds everything and runs every test (root needed:
# the e2e tests create namespaces, cgroups and processes, and clean up).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/deps.sh
drover_install_deps

if [ "$(id -u)" != 0 ]; then
  echo "error: the test suite creates namespaces and cgroups; run it as root" >&2
  exit 1
fi

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
