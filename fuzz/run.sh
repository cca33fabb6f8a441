#!/bin/sh
# Fuzzes, one after the other, with libFuzzer (one job each):
#   jobfile     bytes -> TOML -> job -> validation -> wire/store/schedule
#   assignment  bytes -> SchedulerMessage -> the agent's assignments ->
#               its plan and runtime specs
# (see src/jobfile.rs and src/assignment.rs).
#   fuzz/run.sh [SECONDS] [TARGET...]     (default 600, both targets)
# Each input may take at most 10 s (a hang) and 512 MiB (RSS, or one
# allocation: an allocation over a bound). Needs the nightly toolchain,
# cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler. Crashes land
# in fuzz/artifacts/TARGET/; copy one to fuzz/regressions/TARGET/ so that
# `cargo test -p drover-tests --test fuzz_corpus` replays it on stable.
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-jobfile assignment}
command -v cargo-fuzz >/dev/null || {
    echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2
    exit 1
}
(cd .. && cargo test -p drover-tests --test fuzz_corpus -- --ignored --exact write_seed_corpus)
# cargo-fuzz looks for the binaries in fuzz/target unless told.
target_dir=${CARGO_TARGET_DIR:+--target-dir=$CARGO_TARGET_DIR/fuzz}
for t in $targets; do
    dict=""
    [ -f "$t.dict" ] && dict="-dict=$t.dict"
    # shellcheck disable=SC2086
    cargo +nightly fuzz run $target_dir "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=512 \
        -max_len=16384 $dict -print_final_stats=1
done
