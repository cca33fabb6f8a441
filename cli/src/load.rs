//! Flags bounding what clients hold open at the scheduler (`drover
//! scheduler`, `drover dev`); see `drover_scheduler::load`.

use anyhow::{bail, Result};
use clap::Args;
use drover_scheduler::load::{
    LoadLimits, DEFAULT_CALLS_PER_CONNECTION, DEFAULT_STREAMS_PER_CLIENT,
    DEFAULT_STREAMS_PER_CONNECTION,
};

/// What one client may hold open at the scheduler.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Long-lived streams (`drover logs`, `drover exec`, job watches) one
    /// client may hold at once; one more is refused (RESOURCE_EXHAUSTED).
    /// A client is its certificate's name under mutual TLS, else its IP
    /// address.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STREAMS_PER_CLIENT)]
    max_streams_per_client: usize,
    /// Concurrent calls on one HTTP/2 connection (its
    /// MAX_CONCURRENT_STREAMS setting); more wait in the client.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STREAMS_PER_CONNECTION)]
    max_streams_per_connection: u32,
    /// Calls of one connection handled at once (a streaming call until its
    /// answer starts); more wait in the scheduler, so that one client's
    /// burst leaves room for other clients' calls.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CALLS_PER_CONNECTION)]
    max_calls_per_connection: usize,
}

impl LoadArgs {
    /// The limits, checked.
    pub fn limits(&self) -> Result<LoadLimits> {
        if self.max_streams_per_client == 0 {
            bail!("--max-streams-per-client must be at least 1");
        }
        if self.max_streams_per_connection == 0 {
            bail!("--max-streams-per-connection must be at least 1");
        }
        if self.max_calls_per_connection == 0 {
            bail!("--max-calls-per-connection must be at least 1");
        }
        Ok(LoadLimits {
            streams_per_client: self.max_streams_per_client,
            streams_per_connection: self.max_streams_per_connection,
            calls_per_connection: self.max_calls_per_connection,
        })
    }
}
