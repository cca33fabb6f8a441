//! Bounded load at the scheduler's edge: what one client may hold open at
//! once, so that a burst or a careless script cannot take the memory and
//! the tasks that everyone else's calls need.
//!
//! - Per connection, HTTP/2's `SETTINGS_MAX_CONCURRENT_STREAMS`
//!   ([`LoadLimits::streams_per_connection`]): calls beyond it wait in the
//!   client until one ends (no refusal; gRPC clients queue them); and of
//!   those, how many are handled at once
//!   ([`LoadLimits::calls_per_connection`]; a streaming call counts until
//!   its answer starts): the rest wait in the server, so that a burst on
//!   a few connections leaves room for a probe on another.
//! - Per client, the long-lived streams (`drover logs`, `drover exec`,
//!   `JobService.Watch`): each holds a relay queue and a task here, and on
//!   the node a file reader or a process; one more than
//!   [`LoadLimits::streams_per_client`] is refused with
//!   `RESOURCE_EXHAUSTED`, naming the limit and the flag that sets it. A
//!   client is the name in its certificate under mutual TLS, else its IP
//!   address (every local client of `drover dev` is one client).
//! - Messages: [`drover_proto::MAX_MESSAGE_BYTES`] both ways on every
//!   service (see [`crate::service`]).
//!
//! Per node, the agent bounds log streams and exec sessions itself (its
//! policy's `[sessions]`); its refusals reach the client as
//! `RESOURCE_EXHAUSTED` too ([`crate::relay`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::access::{Caller, Kind};
use crate::sync::lock;

/// Default of [`LoadLimits::streams_per_client`].
pub const DEFAULT_STREAMS_PER_CLIENT: usize = 256;
/// Default of [`LoadLimits::streams_per_connection`].
pub const DEFAULT_STREAMS_PER_CONNECTION: u32 = 256;
/// Default of [`LoadLimits::calls_per_connection`]: with 1,000 status
/// calls in flight over four connections, a probe on a fifth answered in
/// ~0.4 s instead of ~3 s without it (debug build, `tests/tests/load_dev.rs`).
pub const DEFAULT_CALLS_PER_CONNECTION: usize = 32;

/// The scheduler's bounds on what clients hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Long-lived streams (logs, exec, job watch) one client may hold
    /// (`--max-streams-per-client`).
    pub streams_per_client: usize,
    /// Concurrent calls on one HTTP/2 connection; more wait in the client
    /// (`--max-streams-per-connection`).
    pub streams_per_connection: u32,
    /// Calls of one connection handled at once, a streaming call until its
    /// answer starts; more wait in the server (`--max-calls-per-connection`).
    pub calls_per_connection: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            streams_per_client: DEFAULT_STREAMS_PER_CLIENT,
            streams_per_connection: DEFAULT_STREAMS_PER_CONNECTION,
            calls_per_connection: DEFAULT_CALLS_PER_CONNECTION,
        }
    }
}

/// Open long-lived streams by client, and the limits in force.
#[derive(Debug)]
pub struct Load {
    streams_per_client: AtomicUsize,
    streams_per_connection: AtomicU32,
    calls_per_connection: AtomicUsize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for Load {
    fn default() -> Self {
        let limits = LoadLimits::default();
        Load {
            streams_per_client: AtomicUsize::new(limits.streams_per_client),
            streams_per_connection: AtomicU32::new(limits.streams_per_connection),
            calls_per_connection: AtomicUsize::new(limits.calls_per_connection),
            open: Arc::default(),
        }
    }
}

/// One admitted stream of one client: freed when dropped.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    client: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl Load {
    /// Puts `limits` in force (for streams opened from now on; HTTP/2's
    /// for servers started from now on).
    pub fn set_limits(&self, limits: LoadLimits) {
        self.streams_per_client
            .store(limits.streams_per_client, Ordering::Relaxed);
        self.streams_per_connection
            .store(limits.streams_per_connection, Ordering::Relaxed);
        self.calls_per_connection
            .store(limits.calls_per_connection, Ordering::Relaxed);
    }

    /// The limits in force.
    pub fn limits(&self) -> LoadLimits {
        LoadLimits {
            streams_per_client: self.streams_per_client.load(Ordering::Relaxed),
            streams_per_connection: self.streams_per_connection.load(Ordering::Relaxed),
            calls_per_connection: self.calls_per_connection.load(Ordering::Relaxed),
        }
    }

    /// Admits one more long-lived stream (`what`: "log stream") of
    /// `client`, or refuses it naming the limit and how to raise it.
    pub fn admit(&self, client: &str, what: &str) -> Result<Slot, Status> {
        let limit = self.streams_per_client.load(Ordering::Relaxed);
        let mut open = lock(&self.open);
        let n = open.entry(client.to_owned()).or_insert(0);
        if *n >= limit {
            tracing::warn!(%client, limit, %what, "stream refused: the client holds as many as allowed");
            return Err(Status::resource_exhausted(format!(
                "{what} refused: client {client} already holds {limit} open streams \
                 (logs, exec, job watch), the scheduler's limit: end one, or raise \
                 `drover scheduler --max-streams-per-client` (also a flag of `drover dev`)"
            )));
        }
        *n += 1;
        Ok(Slot {
            open: Arc::clone(&self.open),
            client: client.to_owned(),
        })
    }

    /// Streams `client` holds open now.
    pub fn open_streams(&self, client: &str) -> usize {
        lock(&self.open).get(client).copied().unwrap_or(0)
    }
}

/// Who `req` counts against: the certificate's name under mutual TLS,
/// else the peer's IP address.
pub fn client_of<T>(req: &tonic::Request<T>) -> String {
    match req.extensions().get::<Caller>() {
        Some(c) if c.kind != Kind::Loopback => c.name.clone(),
        _ => req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string()),
    }
}

/// `stream`, holding `slot` until it is dropped.
pub fn holding<S>(stream: S, slot: Slot) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
{
    stream.map(move |item| {
        let _held = &slot;
        item
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_per_client_and_frees_on_drop() {
        let load = Load::default();
        load.set_limits(LoadLimits {
            streams_per_client: 2,
            ..LoadLimits::default()
        });
        let a = load.admit("10.0.0.1", "log stream").unwrap();
        let _b = load.admit("10.0.0.1", "log stream").unwrap();
        let refused = load.admit("10.0.0.1", "exec session").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("holds 2 open streams"));
        assert!(refused.message().contains("--max-streams-per-client"));
        // Another client has its own budget.
        let _c = load.admit("vera", "log stream").unwrap();
        drop(a);
        assert_eq!(load.open_streams("10.0.0.1"), 1);
        let _d = load.admit("10.0.0.1", "log stream").unwrap();
    }

    #[tokio::test]
    async fn a_held_slot_is_freed_with_its_stream() {
        let load = Load::default();
        let slot = load.admit("c", "job watch").unwrap();
        let s = holding(futures::stream::iter([1, 2]), slot);
        assert_eq!(load.open_streams("c"), 1);
        assert_eq!(s.collect::<Vec<_>>().await, vec![1, 2]);
        assert_eq!(load.open_streams("c"), 0);
    }
}
