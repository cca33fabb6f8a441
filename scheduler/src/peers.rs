//! The peer list each agent turns into host-gw routes: every other ready
//! node's task subnet and host address.
//!
//! One view per scheduler process, re-read from the store each time the
//! nodes may have changed (a registration, a node lost) and shared by every
//! agent session; each session sends its node the view minus itself when
//! it differs from what it sent last.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::registry::Outbound;
use crate::state::{NodeRecord, NodeStatus};

/// How long a change of the nodes waits for more before the view is read
/// again: a burst of registrations (a cluster starting, a partition
/// healing) then gives a few views instead of one per node, and every
/// view goes to every connected node, so without it the cost of N nodes
/// joining grows with N³.
pub const REFRESH_DEBOUNCE: Duration = Duration::from_millis(200);

/// Every ready node with a subnet, as last read; `None` before the first
/// read.
pub type View = Option<Arc<Vec<pb::Peer>>>;

/// Every ready node that has a subnet, as a peer, with the host part of
/// its address, sorted by node id.
pub fn all_peers<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Vec<pb::Peer> {
    let mut peers: Vec<pb::Peer> = nodes
        .into_iter()
        .filter(|n| n.status == NodeStatus::Ready)
        .filter_map(|n| {
            Some(pb::Peer {
                node_id: n.id.clone(),
                address: host_part(&n.address),
                subnet: n.subnet?.to_string(),
            })
        })
        .collect();
    peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    peers
}

/// What node `node_id` is told: everyone in `all` but itself.
pub fn peers_for(node_id: &str, all: &[pb::Peer]) -> pb::Peers {
    pb::Peers {
        peers: all
            .iter()
            .filter(|p| p.node_id != node_id)
            .cloned()
            .collect(),
        ..Default::default()
    }
}

/// The host of an address that may carry a port: `10.0.0.5:4681` and
/// `[fd00::5]:4681` give `10.0.0.5` and `fd00::5`; anything else is kept.
pub fn host_part(address: &str) -> String {
    let address = address.trim();
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return sa.ip().to_string();
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return ip.to_string();
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            host.to_string()
        }
        _ => address.to_string(),
    }
}

/// The peer view shared by all agent sessions of one scheduler: one store
/// read per change, however many agents are connected.
#[derive(Debug)]
pub struct Peers {
    /// Bumped when the ready nodes (or their addresses or subnets) may
    /// have changed.
    dirty: watch::Sender<u64>,
    /// The view, published by [`refresh`].
    view: Arc<watch::Sender<View>>,
    /// Whether [`refresh`] runs.
    refresher: AtomicBool,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            dirty: watch::Sender::new(0),
            view: Arc::new(watch::Sender::new(None)),
            refresher: AtomicBool::new(false),
        }
    }
}

impl Peers {
    /// Tells every agent session that the peer set may have changed.
    pub fn notify(&self) {
        self.dirty.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver of the view. The first call starts the one task that
    /// keeps it, reading `cluster` (held weakly: the task ends with it) and
    /// retrying after `retry` when the store fails.
    pub fn subscribe(&self, cluster: &Arc<Cluster>, retry: Duration) -> watch::Receiver<View> {
        if !self.refresher.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh(
                Arc::downgrade(cluster),
                self.dirty.subscribe(),
                Arc::clone(&self.view),
                retry,
            ));
        }
        self.view.subscribe()
    }
}

/// Re-reads the nodes each time they may have changed (at most once per
/// [`REFRESH_DEBOUNCE`]) and publishes the peer view when it differs.
/// Ends when the cluster is dropped.
async fn refresh(
    cluster: Weak<Cluster>,
    mut dirty: watch::Receiver<u64>,
    view: Arc<watch::Sender<View>>,
    retry: Duration,
) {
    loop {
        // Marked before the read: a change during it triggers another pass.
        dirty.mark_unchanged();
        let Some(c) = cluster.upgrade() else { return };
        let nodes = c.nodes().await;
        drop(c);
        match nodes {
            Ok(nodes) => {
                let all = all_peers(nodes.iter().map(|n| &n.value));
                view.send_if_modified(|v| {
                    if v.as_deref() == Some(&all) {
                        return false;
                    }
                    *v = Some(Arc::new(all));
                    true
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read nodes for the peer lists; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        }
        if dirty.changed().await.is_err() {
            return;
        }
        // Let a burst of changes settle; they are all in the next read.
        tokio::time::sleep(REFRESH_DEBOUNCE).await;
    }
}

/// What to send a node whose last message left it with `last` (by node
/// id; `None` before the first), now that its peers are `now`: the whole
/// list first or when `partial` is off, then only what changed; `None`
/// when nothing did. With N nodes joining, whole lists would cost every
/// node N entries per change, N² bytes per node in all.
pub fn update_for(
    last: Option<&BTreeMap<String, pb::Peer>>,
    now: &pb::Peers,
    partial: bool,
) -> Option<pb::Peers> {
    let Some(last) = last.filter(|_| partial) else {
        let same = last.is_some_and(|l| {
            l.len() == now.peers.len() && now.peers.iter().all(|p| l.get(&p.node_id) == Some(p))
        });
        return (!same).then(|| now.clone());
    };
    let changed: Vec<pb::Peer> = now
        .peers
        .iter()
        .filter(|p| last.get(&p.node_id) != Some(*p))
        .cloned()
        .collect();
    let ids: BTreeSet<&str> = now.peers.iter().map(|p| p.node_id.as_str()).collect();
    let removed: Vec<String> = last
        .keys()
        .filter(|id| !ids.contains(id.as_str()))
        .cloned()
        .collect();
    (!changed.is_empty() || !removed.is_empty()).then_some(pb::Peers {
        peers: changed,
        partial: true,
        removed,
    })
}

/// Sends the node its peers when the session starts and again each time
/// the set changes (only the changes to an agent that takes `partial`
/// ones), until the session ends.
pub async fn push(
    mut view: watch::Receiver<View>,
    node_id: String,
    tx: Outbound,
    ended: CancellationToken,
    partial: bool,
) {
    let mut last: Option<BTreeMap<String, pb::Peer>> = None;
    loop {
        let current = view.borrow_and_update().clone();
        if let Some(all) = current {
            let peers = peers_for(&node_id, &all);
            if let Some(update) = update_for(last.as_ref(), &peers, partial) {
                tracing::debug!(node_id = %node_id, peers = update.peers.len(), removed = update.removed.len(), partial = update.partial, "sending peers");
                let msg = pb::SchedulerMessage {
                    msg: Some(pb::scheduler_message::Msg::Peers(update)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                last = Some(
                    peers
                        .peers
                        .into_iter()
                        .map(|p| (p.node_id.clone(), p))
                        .collect(),
                );
            }
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            _ = ended.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, subnet: &str) -> pb::Peer {
        pb::Peer {
            node_id: id.into(),
            address: "192.0.2.1".into(),
            subnet: subnet.into(),
        }
    }

    fn list(peers: &[pb::Peer]) -> pb::Peers {
        pb::Peers {
            peers: peers.to_vec(),
            ..Default::default()
        }
    }

    fn by_id(peers: &[pb::Peer]) -> BTreeMap<String, pb::Peer> {
        peers
            .iter()
            .map(|p| (p.node_id.clone(), p.clone()))
            .collect()
    }

    #[test]
    fn an_agent_taking_changes_gets_the_whole_list_once_then_only_changes() {
        let (a, b, c) = (
            peer("a", "10.0.1.0/24"),
            peer("b", "10.0.2.0/24"),
            peer("c", "10.0.3.0/24"),
        );
        let first = update_for(None, &list(&[a.clone(), b.clone()]), true).expect("an update");
        assert!(!first.partial);
        assert_eq!(first.peers.len(), 2);
        // c joins, b leaves: one entry and one id, not the list.
        let now = list(&[a.clone(), c.clone()]);
        let next =
            update_for(Some(&by_id(&[a.clone(), b.clone()])), &now, true).expect("an update");
        assert!(next.partial);
        assert_eq!(next.peers, std::slice::from_ref(&c));
        assert_eq!(next.removed, ["b"]);
        // Nothing changed: nothing sent.
        assert_eq!(
            update_for(Some(&by_id(&[a.clone(), c.clone()])), &now, true),
            None
        );
        // An agent that does not take changes gets whole lists.
        let whole = update_for(Some(&by_id(&[a.clone(), b])), &now, false).expect("an update");
        assert!(!whole.partial);
        assert_eq!(whole.peers, [a.clone(), c.clone()]);
        assert_eq!(update_for(Some(&by_id(&[a, c])), &now, false), None);
    }

    fn node(id: &str, address: &str, status: NodeStatus, subnet: Option<&str>) -> NodeRecord {
        NodeRecord {
            subnet: subnet.map(|s| s.parse().expect("valid subnet")),
            ..crate::testkit::node(id, address, status)
        }
    }

    #[test]
    fn peers_are_other_ready_nodes_with_subnets() {
        let nodes = [
            node(
                "c",
                "198.18.0.12:4681",
                NodeStatus::Ready,
                Some("10.89.2.0/24"),
            ),
            node("a", "198.18.0.10", NodeStatus::Ready, Some("10.89.0.0/24")),
            node("b", "198.18.0.11", NodeStatus::Ready, Some("10.89.1.0/24")),
            node("d", "198.18.0.13", NodeStatus::Down, Some("10.89.3.0/24")),
            node("e", "198.18.0.14", NodeStatus::Ready, None),
        ];
        let got = peers_for("a", &all_peers(&nodes));
        let want = vec![
            pb::Peer {
                node_id: "b".into(),
                address: "198.18.0.11".into(),
                subnet: "10.89.1.0/24".into(),
            },
            pb::Peer {
                node_id: "c".into(),
                address: "198.18.0.12".into(),
                subnet: "10.89.2.0/24".into(),
            },
        ];
        assert_eq!(got.peers, want);
    }

    #[test]
    fn host_part_strips_ports_only() {
        assert_eq!(host_part("10.0.0.5:4681"), "10.0.0.5");
        assert_eq!(host_part("10.0.0.5"), "10.0.0.5");
        assert_eq!(host_part("[fd00::5]:4681"), "fd00::5");
        assert_eq!(host_part("fd00::5"), "fd00::5");
        assert_eq!(host_part("node-a.example:4681"), "node-a.example");
        assert_eq!(host_part("node-a.example"), "node-a.example");
    }
}
