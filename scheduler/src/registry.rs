//! The registry of connected agents: one link per node down its
//! `AgentService.Connect` stream, with the session that holds it, and when
//! each node's last stream ended.
//!
//! In memory and per process: the store says which nodes are ready, the
//! registry which of them this scheduler can talk to right now. A node's
//! newer session replaces an older one; an older session ending leaves the
//! newer link alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tonic::Status;

use crate::sync::lock;

/// The stream down to one agent.
pub type Outbound = mpsc::Sender<Result<pb::SchedulerMessage, Status>>;

/// A connected agent's link.
struct Link {
    session: u64,
    tx: Outbound,
    dirty: Arc<Notify>,
}

/// One agent session, as its holder sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Unique in this process.
    pub id: u64,
    /// Notified when the node's assignments may have changed.
    pub dirty: Arc<Notify>,
}

/// The connected agents of one scheduler process.
#[derive(Debug)]
pub struct Registry {
    links: Mutex<HashMap<String, Link>>,
    sessions: AtomicU64,
    /// When each node's stream last ended, for its grace period.
    disconnected: Mutex<HashMap<String, Instant>>,
    /// When this process started (or began leading: [`Registry::restart`]):
    /// a node with no stream to it is only declared down once it has had a
    /// full grace period to connect.
    started: Mutex<Instant>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("session", &self.session)
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            links: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(1),
            disconnected: Mutex::new(HashMap::new()),
            started: Mutex::new(Instant::now()),
        }
    }
}

impl Registry {
    /// Ends every agent's stream with `status` (this scheduler stopped
    /// leading): each agent reconnects, to whoever leads now.
    pub fn close_all(&self, status: &Status) {
        let links: Vec<(String, Outbound)> = lock(&self.links)
            .drain()
            .map(|(node, link)| (node, link.tx))
            .collect();
        for (node_id, tx) in links {
            let status = status.clone();
            tokio::spawn(async move {
                if tx.send(Err(status)).await.is_err() {
                    tracing::debug!(node_id, "agent stream already closed");
                }
            });
        }
    }

    /// Links `node_id` to a new session sending on `tx`, replacing any
    /// older link of the node.
    pub fn connect(&self, node_id: &str, tx: Outbound) -> Session {
        let session = Session {
            id: self.sessions.fetch_add(1, Ordering::Relaxed),
            dirty: Arc::new(Notify::new()),
        };
        lock(&self.links).insert(
            node_id.to_string(),
            Link {
                session: session.id,
                tx,
                dirty: session.dirty.clone(),
            },
        );
        session
    }

    /// Removes the link of a session whose registration failed, if it is
    /// still the node's.
    pub fn abandon(&self, node_id: &str, session: u64) {
        let mut links = lock(&self.links);
        if links.get(node_id).is_some_and(|l| l.session == session) {
            links.remove(node_id);
        }
    }

    /// Removes the link of a session whose stream ended, if it is still the
    /// node's, and starts the node's grace period, counted from when the
    /// node was last heard (`silent_for` ago). Returns whether it was.
    pub fn disconnect(&self, node_id: &str, session: u64, silent_for: Duration) -> bool {
        let mut links = lock(&self.links);
        let current = links.get(node_id).is_some_and(|l| l.session == session);
        if current {
            links.remove(node_id);
            let now = Instant::now();
            let heard = now.checked_sub(silent_for).unwrap_or(now);
            lock(&self.disconnected).insert(node_id.to_string(), heard);
        }
        current
    }

    /// The stream down to `node_id`'s agent, while it is connected.
    pub fn sender(&self, node_id: &str) -> Option<Outbound> {
        lock(&self.links).get(node_id).map(|l| l.tx.clone())
    }

    /// Whether `node_id`'s agent is connected.
    pub fn is_connected(&self, node_id: &str) -> bool {
        lock(&self.links).contains_key(node_id)
    }

    /// Marks the nodes' assignments as changed so their links resend them.
    pub fn wake(&self, nodes: &BTreeSet<String>) {
        let links = lock(&self.links);
        for n in nodes {
            if let Some(link) = links.get(n) {
                link.dirty.notify_one();
            }
        }
    }

    /// Whether `node_id`'s agent is not connected and its latest stream
    /// ended (counted from when it was last heard) at least `grace` ago. A
    /// node that came back and dropped again since an earlier end is not:
    /// its latest end starts a grace period of its own.
    pub fn gone_for(&self, node_id: &str, grace: Duration) -> bool {
        !self.is_connected(node_id)
            && lock(&self.disconnected)
                .get(node_id)
                .is_some_and(|t| t.elapsed() >= grace)
    }

    /// Starts the grace period of every node not connected anew: a
    /// scheduler that begins leading gives agents that served its
    /// predecessor a full grace period to reconnect.
    pub fn restart(&self) {
        *lock(&self.started) = Instant::now();
    }

    /// Whether `node_id` has had no stream for longer than `grace`:
    /// disconnected long enough ago, or never connected to this process
    /// (which has run for longer than `grace`).
    pub fn silent(&self, node_id: &str, grace: Duration) -> bool {
        if lock(&self.started).elapsed() <= grace || self.is_connected(node_id) {
            return false;
        }
        lock(&self.disconnected)
            .get(node_id)
            .is_none_or(|t| t.elapsed() > grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(4);

    #[test]
    fn a_node_that_came_back_and_dropped_again_gets_a_new_grace_period() {
        let r = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        let first = r.connect("n1", tx.clone());
        // Closed for silence: last heard a whole grace period ago.
        assert!(r.disconnect("n1", first.id, GRACE));
        assert!(r.gone_for("n1", GRACE));
        // Back, then a stream that just broke: not gone, whatever the
        // first end's timer says.
        let second = r.connect("n1", tx.clone());
        assert!(!r.gone_for("n1", GRACE));
        assert!(r.disconnect("n1", second.id, Duration::ZERO));
        assert!(!r.gone_for("n1", GRACE));
        // An old session ending late changes nothing.
        let third = r.connect("n1", tx);
        assert!(!r.disconnect("n1", second.id, GRACE));
        assert!(r.is_connected("n1") && !r.gone_for("n1", GRACE));
        assert!(r.disconnect("n1", third.id, Duration::ZERO));
        assert!(r.gone_for("n1", Duration::ZERO));
    }
}
