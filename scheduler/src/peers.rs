//! The peer list each agent turns into host-gw routes: every other ready
//! node's task subnet and host address.
//!
//! One view per scheduler process, re-read from the store each time the
//! nodes may have changed (a registration, a node lost) and shared by every
//! agent session; each session sends its node the view minus itself when
//! it differs from what it sent last.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// How long a session waits after sending its node peers before it looks
/// at the view again: the views published meanwhile go as one update.
///
/// Why: every view goes to every connected node, so with N nodes connected
/// each new view wakes N sessions and encodes N messages. The refresh
/// already publishes at most one view per [`REFRESH_DEBOUNCE`] plus a read
/// of every node (which grows with the cluster); this bounds what each
/// session sends to one message per interval whatever the refresh does,
/// and a session that is pausing is not woken by a new view at all. A
/// session that was idle sends at once, so a lone change is not delayed.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Every ready node with a subnet, as last read, and how it got there;
/// `None` before the first read.
pub type View = Option<Arc<Snapshot>>;

/// How many past changes a [`Snapshot`] keeps, so that a session that
/// missed a few (the watch keeps only the latest view) still sends only
/// what changed. One that missed more gets the whole list again.
const HISTORY: usize = 32;

/// One change of the peer set: the peers added or changed, and the ids of
/// those that left.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    changed: Vec<pb::Peer>,
    removed: Vec<String>,
}

/// The peer set at one generation, with the changes that led to it. It is
/// built once per read of the store and shared by every session, so that
/// each session costs what its node is sent, not the size of the cluster:
/// with N nodes joining, per-session copies and comparisons of the whole
/// set cost N² per change (1.3 GiB and minutes at 2,000 nodes).
#[derive(Debug, Default)]
pub struct Snapshot {
    generation: u64,
    peers: BTreeMap<String, pb::Peer>,
    /// The changes up to this generation, oldest first; the last one led
    /// from `generation - 1` to `generation`.
    history: VecDeque<Arc<Delta>>,
}

impl Snapshot {
    /// The snapshot after `self` whose peers are `all`, or `None` when
    /// they are the same.
    pub fn next(&self, all: Vec<pb::Peer>) -> Option<Snapshot> {
        let peers: BTreeMap<String, pb::Peer> =
            all.into_iter().map(|p| (p.node_id.clone(), p)).collect();
        let changed: Vec<pb::Peer> = peers
            .values()
            .filter(|p| self.peers.get(&p.node_id) != Some(*p))
            .cloned()
            .collect();
        let removed: Vec<String> = self
            .peers
            .keys()
            .filter(|id| !peers.contains_key(*id))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() && self.generation > 0 {
            return None;
        }
        let mut history = self.history.clone();
        history.push_back(Arc::new(Delta { changed, removed }));
        if history.len() > HISTORY {
            history.pop_front();
        }
        Some(Snapshot {
            generation: self.generation + 1,
            peers,
            history,
        })
    }

    /// This snapshot's generation; the first read is generation 1.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What node `node_id`, last sent generation `since` (`None` before
    /// the first), is sent now: nothing when nothing but itself changed;
    /// the changes alone when it takes them (`partial`) and they are still
    /// in the history; otherwise the whole list.
    pub fn update_for(
        &self,
        node_id: &str,
        since: Option<u64>,
        partial: bool,
    ) -> Option<pb::Peers> {
        let Some(since) = since else {
            return Some(self.whole_for(node_id));
        };
        let behind = usize::try_from(self.generation.saturating_sub(since)).unwrap_or(usize::MAX);
        if behind == 0 {
            return None;
        }
        if behind > self.history.len() {
            return Some(self.whole_for(node_id));
        }
        let (changed, removed) = merge(self.history.range(self.history.len() - behind..), node_id);
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        if !partial {
            return Some(self.whole_for(node_id));
        }
        Some(pb::Peers {
            peers: changed.into_values().cloned().collect(),
            partial: true,
            removed: removed.into_iter().map(str::to_owned).collect(),
        })
    }

    /// Every peer but `node_id`, as a whole list.
    fn whole_for(&self, node_id: &str) -> pb::Peers {
        pb::Peers {
            peers: self
                .peers
                .values()
                .filter(|p| p.node_id != node_id)
                .cloned()
                .collect(),
            ..Default::default()
        }
    }
}

/// The net effect of `deltas`, applied in order, leaving out `node_id`:
/// the peers added or changed (latest version) and the ids removed.
fn merge<'a>(
    deltas: impl Iterator<Item = &'a Arc<Delta>>,
    node_id: &str,
) -> (BTreeMap<&'a str, &'a pb::Peer>, BTreeSet<&'a str>) {
    let mut changed = BTreeMap::new();
    let mut removed = BTreeSet::new();
    for delta in deltas {
        for p in delta.changed.iter().filter(|p| p.node_id != node_id) {
            removed.remove(p.node_id.as_str());
            changed.insert(p.node_id.as_str(), p);
        }
        for id in delta.removed.iter().filter(|id| *id != node_id) {
            changed.remove(id.as_str());
            removed.insert(id.as_str());
        }
    }
    (changed, removed)
}

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
                    let empty = Snapshot::default();
                    let Some(next) = v.as_deref().unwrap_or(&empty).next(all) else {
                        return false;
                    };
                    *v = Some(Arc::new(next));
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

/// Sends the node its peers when the session starts and again each time
/// the set changes (only the changes to an agent that takes `partial`
/// ones), at most once per [`PUSH_INTERVAL`], until the session ends.
pub async fn push(
    mut view: watch::Receiver<View>,
    node_id: String,
    tx: Outbound,
    ended: CancellationToken,
    partial: bool,
) {
    let mut sent: Option<u64> = None;
    loop {
        let current = view.borrow_and_update().clone();
        if let Some(snapshot) = current {
            if let Some(update) = snapshot.update_for(&node_id, sent, partial) {
                tracing::debug!(node_id = %node_id, peers = update.peers.len(), removed = update.removed.len(), partial = update.partial, "sending peers");
                let msg = pb::SchedulerMessage {
                    msg: Some(pb::scheduler_message::Msg::Peers(update)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                sent = Some(snapshot.generation());
                // Let the next views gather; they go as one update.
                tokio::select! {
                    () = tokio::time::sleep(PUSH_INTERVAL) => continue,
                    () = ended.cancelled() => return,
                    () = tx.closed() => return,
                }
            }
            sent = Some(snapshot.generation());
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

    fn snapshot(peers: &[pb::Peer]) -> Snapshot {
        Snapshot::default()
            .next(peers.to_vec())
            .expect("a first snapshot")
    }

    #[test]
    fn an_agent_taking_changes_gets_the_whole_list_once_then_only_changes() {
        let (a, b, c) = (
            peer("a", "10.0.1.0/24"),
            peer("b", "10.0.2.0/24"),
            peer("c", "10.0.3.0/24"),
        );
        let first = snapshot(&[a.clone(), b.clone()]);
        let whole = first.update_for("a", None, true).expect("an update");
        assert!(!whole.partial);
        assert_eq!(whole.peers, std::slice::from_ref(&b));
        // c joins, b leaves: one entry and one id, not the list.
        let second = first
            .next(vec![a.clone(), c.clone()])
            .expect("a changed view");
        let g = first.generation();
        let next = second.update_for("a", Some(g), true).expect("an update");
        assert!(next.partial);
        assert_eq!(next.peers, std::slice::from_ref(&c));
        assert_eq!(next.removed, ["b"]);
        // Nothing changed: no new snapshot, nothing sent.
        assert!(second.next(vec![a.clone(), c.clone()]).is_none());
        assert_eq!(
            second.update_for("a", Some(second.generation()), true),
            None
        );
        // An agent that does not take changes gets whole lists.
        let whole = second.update_for("a", Some(g), false).expect("an update");
        assert!(!whole.partial);
        assert_eq!(whole.peers, std::slice::from_ref(&c));
    }

    #[test]
    fn a_node_is_not_told_about_itself_and_missed_changes_are_merged() {
        let (a, b) = (peer("a", "10.0.1.0/24"), peer("b", "10.0.2.0/24"));
        let first = snapshot(std::slice::from_ref(&a));
        // Only a itself changed (moved subnet): a is sent nothing.
        let moved = peer("a", "10.0.9.0/24");
        let second = first.next(vec![moved.clone()]).expect("a changed view");
        assert_eq!(second.update_for("a", Some(1), true), None);
        // b joins, then leaves, then c joins: a session still at 1
        // hears only of c, and that b is gone.
        let c = peer("c", "10.0.3.0/24");
        let third = second
            .next(vec![moved.clone(), b.clone()])
            .expect("b joined");
        let fourth = third.next(vec![moved.clone()]).expect("b left");
        let fifth = fourth
            .next(vec![moved.clone(), c.clone()])
            .expect("c joined");
        let got = fifth.update_for("a", Some(1), true).expect("an update");
        assert_eq!(got.peers, std::slice::from_ref(&c));
        assert_eq!(got.removed, ["b"]);
        // b's own session, last sent at 3, hears that c joined.
        let got = fifth.update_for("b", Some(3), true).expect("an update");
        assert_eq!(got.peers, std::slice::from_ref(&c));
        assert!(got.removed.is_empty());
        // A session further behind than the history gets the whole list.
        let mut last = fifth;
        for i in 0..HISTORY {
            let extra = peer(&format!("x{i}"), "10.1.0.0/24");
            last = last
                .next(vec![moved.clone(), c.clone(), extra])
                .expect("a changed view");
        }
        let got = last.update_for("a", Some(1), true).expect("an update");
        assert!(!got.partial);
        assert_eq!(got.peers.len(), 2);
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
        let got = snapshot(&all_peers(&nodes))
            .update_for("a", None, true)
            .expect("a first update");
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

    #[tokio::test(start_paused = true)]
    async fn views_published_while_a_session_pauses_go_as_one_update() {
        let me = peer("me", "10.0.0.0/24");
        let mut all = vec![me.clone()];
        let mut last = Arc::new(snapshot(&all));
        let view = watch::Sender::new(Some(last.clone()));
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let ended = CancellationToken::new();
        let _stop = ended.clone().drop_guard();
        tokio::spawn(push(view.subscribe(), "me".into(), tx, ended.clone(), true));
        let first = rx.recv().await.expect("the first list");
        let Some(pb::scheduler_message::Msg::Peers(first)) = first.expect("no error").msg else {
            panic!("peers first");
        };
        assert!(!first.partial && first.peers.is_empty());

        // 100 joins, each a view of its own, one a millisecond: all within
        // the pause that followed the first list.
        for i in 0..100 {
            all.push(peer(&format!("x{i:03}"), "10.1.0.0/24"));
            last = Arc::new(last.next(all.clone()).expect("a changed view"));
            view.send_replace(Some(last.clone()));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(PUSH_INTERVAL * 4).await;
        let mut updates = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Some(pb::scheduler_message::Msg::Peers(p)) = m.expect("no error").msg {
                updates.push(p);
            }
        }
        assert!(
            (1..=2).contains(&updates.len()),
            "{} updates for 100 views",
            updates.len()
        );
        let ids: BTreeSet<String> = updates
            .iter()
            // Partial, or (more views than the history keeps) whole.
            .inspect(|u| assert!(u.removed.is_empty(), "{u:?}"))
            .flat_map(|u| u.peers.iter().map(|p| p.node_id.clone()))
            .collect();
        assert_eq!(ids.len(), 100);
        assert!(!ids.contains("me"));
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
