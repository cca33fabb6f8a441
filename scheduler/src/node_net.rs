//! Node networking on the scheduler side: the task subnet each node gets at
//! registration, and the peer list (every other ready node's subnet and
//! host address) each agent turns into host-gw routes.
//!
//! A subnet is claimed with a `subnets/<cidr>` record created in the same
//! guarded transaction as the node record that names it, and only if the
//! claim is absent: two schedulers racing for one subnet cannot both win.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use drover_proto::v1 as pb;
use drover_store::client::encode;
use drover_store::{Committed, Guard, Kind, Write};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::core::{Core, CoreError, MAX_ATTEMPTS};
use crate::state::{NodeRecord, NodeStatus, SubnetClaim};
use crate::subnet::{self, Cidr};

impl Core {
    /// Records a registering node as ready. What the operator set (drain)
    /// and its task subnet are kept from an earlier record; a node seen for
    /// the first time gets the lowest free subnet of the cluster CIDR.
    /// Returns the record as stored.
    pub(crate) async fn register_node(
        &self,
        reported: &NodeRecord,
    ) -> Result<NodeRecord, CoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut node = reported.clone();
            let wanted = node.subnet.take();
            let old = self.store.get::<NodeRecord>(Kind::Node, &node.id).await?;
            let mut guards = vec![Guard {
                kind: Kind::Node,
                name: node.id.clone(),
                mod_revision: old.as_ref().map(|o| o.mod_revision).unwrap_or(0),
            }];
            let mut writes = Vec::new();
            if let Some(old) = &old {
                node.draining = old.value.draining;
                node.subnet = old.value.subnet;
            }
            if let Some(s) = node.subnet {
                if !self
                    .keep_claim(&node.id, s, &mut guards, &mut writes)
                    .await?
                {
                    node.subnet = None;
                }
            }
            if let Some(wanted) = wanted {
                if self.check_wanted(&node, wanted).await? {
                    self.claim(&node.id, wanted, &mut guards, &mut writes)?;
                    node.subnet = Some(wanted);
                }
            }
            if node.subnet.is_none() {
                let claims = self.store.list::<SubnetClaim>(Kind::Subnet).await?;
                let taken: Vec<Cidr> = claims
                    .items
                    .iter()
                    .filter_map(|c| c.name.parse().ok())
                    .collect();
                let s = subnet::next_free(&self.subnets, &taken).map_err(|source| {
                    CoreError::Subnet {
                        node_id: node.id.clone(),
                        source,
                    }
                })?;
                self.claim(&node.id, s, &mut guards, &mut writes)?;
                node.subnet = Some(s);
            }
            writes.push(Write::Put {
                kind: Kind::Node,
                name: node.id.clone(),
                value: encode(&self.store.key(Kind::Node, &node.id), &node)?,
            });
            if let Committed::Yes(rev) = self.store.commit(&guards, &writes).await? {
                let subnet = node.subnet.map(|s| s.to_string()).unwrap_or_default();
                let new = old.as_ref().and_then(|o| o.value.subnet).is_none();
                tracing::info!(node_id = %node.id, %subnet, new_subnet = new, revision = rev, "node recorded");
                self.notify_peers();
                return Ok(node);
            }
        }
        Err(CoreError::Contended {
            what: format!("node {}", reported.id),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Checks the claim on a subnet the node already holds and guards it. A
    /// missing claim (a record from before claims existed) is re-created.
    /// Returns false when another node holds the claim, which should never
    /// happen: the claim is left alone and the caller cuts a fresh subnet.
    async fn keep_claim(
        &self,
        node_id: &str,
        s: Cidr,
        guards: &mut Vec<Guard>,
        writes: &mut Vec<Write>,
    ) -> Result<bool, CoreError> {
        let name = s.to_string();
        match self.store.get::<SubnetClaim>(Kind::Subnet, &name).await? {
            Some(c) if c.value.node_id == node_id => {
                guards.push(Guard {
                    kind: Kind::Subnet,
                    name,
                    mod_revision: c.mod_revision,
                });
            }
            Some(c) => {
                tracing::error!(node_id, subnet = %s, holder = %c.value.node_id, "node's subnet is claimed by another node; giving it a new one");
                return Ok(false);
            }
            None => self.claim(node_id, s, guards, writes)?,
        }
        if !self.subnets.is_node_subnet(&s) {
            tracing::warn!(node_id, subnet = %s, cluster_cidr = %self.subnets.cluster(), "node keeps a subnet outside the current cluster CIDR");
        }
        Ok(true)
    }

    /// Checks a subnet an agent asks for (`drover agent --subnet`) against
    /// what `node` (as read back, with its old subnet if any) holds, the
    /// cluster CIDR and every other node's claim. Returns true when the
    /// subnet is free and must be claimed, false when the node holds it
    /// already.
    async fn check_wanted(&self, node: &NodeRecord, wanted: Cidr) -> Result<bool, CoreError> {
        let refuse = |reason: String| CoreError::SubnetRefused {
            node_id: node.id.clone(),
            wanted,
            reason,
        };
        match node.subnet {
            Some(have) if have == wanted => return Ok(false),
            Some(have) => {
                return Err(refuse(format!(
                    "the node already has subnet {have}; start the agent with --subnet {have} \
                     or without --subnet"
                )))
            }
            None => {}
        }
        // Only whole node subnets: then two claims overlap exactly when
        // they are the same key, which the claim's create-if-absent guard
        // settles even between two schedulers.
        if !self.subnets.is_node_subnet(&wanted) {
            return Err(refuse(format!(
                "it is not a /{} subnet inside the cluster CIDR {} (--cluster-cidr, --node-prefix)",
                self.subnets.node_prefix(),
                self.subnets.cluster()
            )));
        }
        let claims = self.store.list::<SubnetClaim>(Kind::Subnet).await?;
        for c in &claims.items {
            let Ok(taken) = c.name.parse::<Cidr>() else {
                continue;
            };
            if taken.overlaps(&wanted) && c.value.node_id != node.id {
                return Err(refuse(format!(
                    "it overlaps {taken}, the subnet of node {}",
                    c.value.node_id
                )));
            }
        }
        Ok(true)
    }

    /// Adds the create-if-absent claim of `s` for `node_id`.
    fn claim(
        &self,
        node_id: &str,
        s: Cidr,
        guards: &mut Vec<Guard>,
        writes: &mut Vec<Write>,
    ) -> Result<(), CoreError> {
        let name = s.to_string();
        let claim = SubnetClaim {
            node_id: node_id.to_string(),
        };
        guards.push(Guard {
            kind: Kind::Subnet,
            name: name.clone(),
            mod_revision: 0,
        });
        writes.push(Write::Put {
            kind: Kind::Subnet,
            name: name.clone(),
            value: encode(&self.store.key(Kind::Subnet, &name), &claim)?,
        });
        Ok(())
    }

    /// Tells every agent session that the peer set may have changed.
    pub(crate) fn notify_peers(&self) {
        self.peers.dirty.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Starts the one task that keeps [`PeerState`]'s view, if not yet
    /// running. It holds the core weakly and ends with it.
    fn ensure_peer_refresher(self: &Arc<Self>) {
        if self.peers.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(refresh_peers(
            Arc::downgrade(self),
            self.peers.dirty.subscribe(),
        ));
    }

    /// What `Registered` tells a node about its network.
    pub(crate) fn registered_net(&self, node: &NodeRecord) -> (String, String) {
        (
            node.subnet.map(|s| s.to_string()).unwrap_or_default(),
            self.subnets.cluster().to_string(),
        )
    }
}

/// Every ready node that has a subnet, as a peer, with the host part of
/// its address, sorted by node id.
pub(crate) fn all_peers<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Vec<pb::Peer> {
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
pub(crate) fn peers_for(node_id: &str, all: &[pb::Peer]) -> pb::Peers {
    pb::Peers {
        peers: all
            .iter()
            .filter(|p| p.node_id != node_id)
            .cloned()
            .collect(),
    }
}

/// The host of an address that may carry a port: `10.0.0.5:4681` and
/// `[fd00::5]:4681` give `10.0.0.5` and `fd00::5`; anything else is kept.
pub(crate) fn host_part(address: &str) -> String {
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
pub(crate) struct PeerState {
    /// Bumped when the ready nodes (or their addresses or subnets) may
    /// have changed.
    dirty: watch::Sender<u64>,
    /// Every ready node with a subnet, as last read; `None` before the
    /// first read.
    view: watch::Sender<Option<Arc<Vec<pb::Peer>>>>,
    /// Whether [`refresh_peers`] runs.
    refresher: AtomicBool,
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState {
            dirty: watch::Sender::new(0),
            view: watch::Sender::new(None),
            refresher: AtomicBool::new(false),
        }
    }
}

/// Re-reads the nodes each time they may have changed and publishes the
/// peer view when it differs. Ends when the core is dropped.
async fn refresh_peers(core: Weak<Core>, mut dirty: watch::Receiver<u64>) {
    loop {
        // Marked before the read: a change during it triggers another pass.
        dirty.mark_unchanged();
        let Some(c) = core.upgrade() else { return };
        match c.nodes().await {
            Ok(nodes) => {
                let all = all_peers(nodes.iter().map(|n| &n.value));
                c.peers.view.send_if_modified(|v| {
                    if v.as_deref() == Some(&all) {
                        return false;
                    }
                    *v = Some(Arc::new(all));
                    true
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read nodes for the peer lists; retrying");
                let wait = c.timing.heartbeat;
                drop(c);
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        drop(c);
        if dirty.changed().await.is_err() {
            return;
        }
    }
}

/// Sends the node its peers when the session starts and again each time
/// the set changes, until the session ends.
pub(crate) async fn push_peers(
    core: Arc<Core>,
    node_id: String,
    tx: tokio::sync::mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
    ended: CancellationToken,
) {
    core.ensure_peer_refresher();
    let mut view = core.peers.view.subscribe();
    drop(core);
    let mut last: Option<pb::Peers> = None;
    loop {
        let current = view.borrow_and_update().clone();
        if let Some(all) = current {
            let peers = peers_for(&node_id, &all);
            if last.as_ref() != Some(&peers) {
                tracing::debug!(node_id = %node_id, peers = peers.peers.len(), "sending peers");
                let msg = pb::SchedulerMessage {
                    msg: Some(pb::scheduler_message::Msg::Peers(peers.clone())),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                last = Some(peers);
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::job::Resources;

    fn node(id: &str, address: &str, status: NodeStatus, subnet: Option<&str>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            hostname: id.into(),
            address: address.into(),
            status,
            draining: false,
            resources: Resources {
                cpu_millis: 1000,
                memory_mb: 1024,
            },
            attributes: BTreeMap::new(),
            last_seen_unix_ms: 0,
            agent_version: String::new(),
            subnet: subnet.map(|s| s.parse().expect("valid subnet")),
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
