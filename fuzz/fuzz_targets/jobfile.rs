//! Bytes -> TOML -> `pb::Job` -> validated `JobSpec` -> wire, store and
//! schedule, with the checks of `drover_fuzz::jobfile::check`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    drover_fuzz::jobfile::check(data);
});
