//! Bytes -> parse -> answer from the index -> fit -> encode, over UDP and
//! TCP, with the checks of `drover_dns_fuzz::check`.

#![no_main]

use std::sync::LazyLock;

use drover_dns::handler::Handler;
use libfuzzer_sys::fuzz_target;

static HANDLER: LazyLock<Handler> = LazyLock::new(drover_dns_fuzz::handler);

fuzz_target!(|data: &[u8]| {
    drover_dns_fuzz::check(&HANDLER, data);
});
