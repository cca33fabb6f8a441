#!/bin/sh
# Fuzzes the DNS request path (bytes -> parse -> answer -> fit -> encode,
# over UDP and TCP; see src/lib.rs) with libFuzzer, one job.
#   dns/fuzz/run.sh [SECONDS]        (default 600)
# Needs the nightly toolchain, cargo-fuzz (`cargo install cargo-fuzz`) and
# a C++ compiler. Crashes land in dns/fuzz/artifacts/answer/; copy one to
# dns/fuzz/regressions/ so that `cargo test -p drover-dns --test
# fuzz_corpus` replays it on stable.
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
command -v cargo-fuzz >/dev/null || {
    echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2
    exit 1
}
(cd ../.. && cargo test -p drover-dns --test fuzz_corpus -- --ignored --exact write_seed_corpus)
exec cargo +nightly fuzz run answer corpus/answer -- \
    -max_total_time="$secs" -timeout=10 -dict=dns.dict -print_final_stats=1
