//! Bytes -> `pb::SchedulerMessage` -> the agent's decoded assignments ->
//! its plan and runtime specs, with the checks of
//! `drover_fuzz::assignment::check`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    drover_fuzz::assignment::check(data);
});
