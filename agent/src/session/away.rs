//! How long the agent has been without its scheduler, and what that asks
//! of the allocations whose group has a disconnect policy.
//!
//! The clock starts when the agent starts (it has heard nothing yet) and
//! when a session ends; it stops when the scheduler answers a new
//! registration. A partitioned link is noticed by HTTP/2 keepalive
//! ([`KEEPALIVE_EVERY`], [`KEEPALIVE_TIMEOUT`]), so the clock starts at
//! most their sum after the scheduler was last heard.

use std::time::{Duration, Instant};

use crate::allocs::Allocs;

/// How often the agent pings the scheduler's connection.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the disconnect policies are looked at while away.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Since when the scheduler has been lost, if it is.
#[derive(Debug)]
pub struct Away {
    since: Option<Instant>,
}

impl Away {
    /// Away from the start: nothing has been heard yet.
    pub fn new() -> Away {
        Away {
            since: Some(Instant::now()),
        }
    }

    /// The scheduler answered a registration.
    pub fn back(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                away_ms = since.elapsed().as_millis() as u64,
                "scheduler reached again"
            );
        }
    }

    /// The session ended: the clock starts, unless it runs already.
    pub fn lost(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// Stops the allocations whose group's disconnect policy is due.
    pub async fn enforce(&self, allocs: &mut Allocs) {
        if let Some(since) = self.since {
            allocs.stop_disconnected(since.elapsed()).await;
        }
    }
}
