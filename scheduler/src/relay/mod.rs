//! Relays between a CLI's stream and an agent's: `drover logs` ([`logs`])
//! and `drover exec` ([`exec`]), side by side; `drover node images`'
//! question and answer ([`images`]); and from the store to every
//! agent, the service-discovery records ([`dns`], with its own flow
//! control described there).
//!
//! Both ride the node's one `Connect` stream, which also carries its
//! heartbeats and statuses, so neither ever waits on a client: each request
//! has a bounded queue towards its client, filled with `try_send`, and a
//! client that does not keep up is told so and its request ended. Data from
//! a node that does not serve the request is dropped: one node's agent must
//! not write into (or end) another node's stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tonic::Status;

use crate::registry::{Outbound, Registry};
use crate::state::AllocRecord;
use crate::sync::lock;

pub mod dns;
pub mod exec;
pub mod images;
pub mod logs;

/// An open request: which node serves it.
trait Served {
    fn node_id(&self) -> &str;
}

/// Open requests by id, shared with the tasks that serve them.
struct Table<S> {
    open: Arc<Mutex<HashMap<u64, S>>>,
    next: AtomicU64,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table {
            open: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(1),
        }
    }
}

impl<S: Served> Table<S> {
    /// Opens a request; returns its id.
    fn insert(&self, sink: S) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, sink);
        id
    }

    /// Closes a request; returns it if it was open.
    fn remove(&self, id: u64) -> Option<S> {
        lock(&self.open).remove(&id)
    }

    /// Closes every request `node_id` serves and returns them.
    fn take_node(&self, node_id: &str) -> Vec<S> {
        let mut open = lock(&self.open);
        let ids: Vec<u64> = open
            .iter()
            .filter(|(_, s)| s.node_id() == node_id)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| open.remove(&id)).collect()
    }
}

/// The stream to the agent of the node holding `alloc`, or why there is
/// none (`hint` completes the message).
fn agent_for(registry: &Registry, alloc: &AllocRecord, hint: &str) -> Result<Outbound, Status> {
    registry.sender(&alloc.node_id).ok_or_else(|| {
        Status::unavailable(format!(
            "node {} holding allocation {} is not connected{hint}",
            alloc.node_id, alloc.id
        ))
    })
}
