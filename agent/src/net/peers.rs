//! Host-gw routes to the other nodes: the scheduler sends the full list of
//! every other ready node's task subnet and host address (`Peers`), then
//! only what changes (`partial`: peers added or changed, ids removed), and
//! the agent keeps the whole list ([`known`](Peers::known)) and makes the Drover routes in the node's main table
//! exactly that list (`<peer subnet> via <peer address>`), with
//! [`Netlink::sync_routes`]. Routes Drover did not add are never touched.
//!
//! Routes stay when the scheduler connection drops: the tasks keep running
//! and keep talking to each other. A node that goes down is left out of the
//! next list, and its route goes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_proto::v1 as pb;

use super::{Ipv4Net, NetError, Netlink, PeerRoute};

/// Where the kernel's IPv4 forwarding switch is, for the agent's own
/// network namespace.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Why one peer from the scheduler was not turned into a route.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPeer {
    /// The address is not an IPv4 address.
    #[error("peer {node_id}: address {address:?} is not an IPv4 address")]
    Address {
        /// The peer's node id.
        node_id: String,
        /// What the scheduler sent.
        address: String,
    },
    /// The address cannot be a next hop (loopback, unspecified, multicast
    /// or broadcast): the node registered with an address other nodes
    /// cannot reach it at (`drover agent --address`).
    #[error("peer {node_id}: address {address} cannot be a gateway; give that agent --address with an address other nodes reach it at")]
    Unroutable {
        /// The peer's node id.
        node_id: String,
        /// What the scheduler sent.
        address: Ipv4Addr,
    },
    /// The subnet is not an IPv4 network.
    #[error("peer {node_id}: subnet {subnet:?}: {source}")]
    Subnet {
        /// The peer's node id.
        node_id: String,
        /// What the scheduler sent.
        subnet: String,
        /// Why it does not parse.
        #[source]
        source: drover_model::InvalidNet,
    },
}

/// Why routes to the other nodes could not be synced.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// IPv4 forwarding could not be read or switched on.
    #[error("cannot turn on IPv4 forwarding through {}: {source}", path.display())]
    Forwarding {
        /// The sysctl file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Netlink failed as a whole (socket, route dump).
    #[error(transparent)]
    Net(#[from] NetError),
    /// Some routes could not be added or removed; the first is named.
    #[error("{count} route(s) to other nodes failed, first {route}: {source}")]
    Routes {
        /// How many failed.
        count: usize,
        /// The first that failed.
        route: PeerRoute,
        /// Why.
        #[source]
        source: NetError,
    },
}

/// Converts one wire peer into the route to it.
pub fn peer_route(p: &pb::Peer) -> Result<PeerRoute, InvalidPeer> {
    let via: Ipv4Addr = p.address.trim().parse().map_err(|_| InvalidPeer::Address {
        node_id: p.node_id.clone(),
        address: p.address.clone(),
    })?;
    if via.is_loopback() || via.is_unspecified() || via.is_multicast() || via.is_broadcast() {
        return Err(InvalidPeer::Unroutable {
            node_id: p.node_id.clone(),
            address: via,
        });
    }
    let subnet: Ipv4Net = p
        .subnet
        .trim()
        .parse()
        .map_err(|source| InvalidPeer::Subnet {
            node_id: p.node_id.clone(),
            subnet: p.subnet.clone(),
            source,
        })?;
    Ok(PeerRoute { subnet, via })
}

/// The routes a `Peers` message asks for; peers that cannot be routed
/// (not IPv4, bad subnet, or this node's own subnet) are returned apart.
pub fn desired_routes(
    peers: &pb::Peers,
    own_subnet: Option<Ipv4Net>,
) -> (Vec<PeerRoute>, Vec<InvalidPeer>) {
    let mut routes = Vec::new();
    let mut bad = Vec::new();
    for p in &peers.peers {
        match peer_route(p) {
            Ok(r) if Some(r.subnet) == own_subnet => {
                tracing::warn!(peer = %p.node_id, subnet = %r.subnet, "peer claims this node's own subnet; no route");
            }
            Ok(r) => routes.push(r),
            Err(e) => bad.push(e),
        }
    }
    (routes, bad)
}

/// Turns IPv4 forwarding on through the sysctl file at `path` if it is
/// off. Returns whether it had to. Host-gw needs it: packets from tasks
/// leave through the node, and packets for them arrive through it.
pub fn ensure_forwarding(path: &Path) -> std::io::Result<bool> {
    let now = std::fs::read_to_string(path)?;
    if now.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(path, "1\n")?;
    Ok(true)
}

/// Keeps the node's host-gw routes in line with the scheduler's peer list.
#[derive(Debug)]
pub struct Peers {
    /// The whole list as the scheduler last described it, by node id.
    known: BTreeMap<String, pb::Peer>,
    net: Option<Netlink>,
    ip_forward: PathBuf,
    own_subnet: Option<Ipv4Net>,
    /// The last list asked for, kept to retry after a failure.
    pending: Option<Vec<PeerRoute>>,
    /// No retry before this; doubles after each failure.
    next_try: tokio::time::Instant,
    backoff: Duration,
}

/// First pause before retrying a failed sync; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Default for Peers {
    fn default() -> Self {
        Self::new(PathBuf::from(IP_FORWARD))
    }
}

impl Peers {
    /// Routes in the calling process's network namespace; `ip_forward` is
    /// the sysctl file to switch forwarding on with ([`IP_FORWARD`]).
    pub fn new(ip_forward: PathBuf) -> Self {
        Self {
            net: None,
            ip_forward,
            own_subnet: None,
            known: BTreeMap::new(),
            pending: None,
            next_try: tokio::time::Instant::now(),
            backoff: MIN_BACKOFF,
        }
    }

    /// Records this node's own subnet (from `Registered`), so that no route
    /// is ever made to it through another node.
    pub fn set_own_subnet(&mut self, subnet: &str) {
        self.own_subnet = match subnet.trim() {
            "" => None,
            s => match s.parse() {
                Ok(net) => Some(net),
                Err(error) => {
                    tracing::warn!(subnet = s, %error, "scheduler sent an unusable subnet for this node");
                    None
                }
            },
        };
    }

    /// The whole peer list after `update`: the list itself, or when
    /// partial, the known list with its peers put and its ids removed.
    pub fn known(&mut self, update: &pb::Peers) -> pb::Peers {
        if !update.partial {
            self.known.clear();
        }
        for id in &update.removed {
            self.known.remove(id);
        }
        for p in &update.peers {
            self.known.insert(p.node_id.clone(), p.clone());
        }
        pb::Peers {
            peers: self.known.values().cloned().collect(),
            ..Default::default()
        }
    }

    /// Makes the node's Drover routes exactly those the peer list after
    /// `update` asks for. Failures are logged and the list is kept for
    /// [`Peers::retry`].
    pub async fn apply(&mut self, update: &pb::Peers) {
        let peers = self.known(update);
        let (routes, bad) = desired_routes(&peers, self.own_subnet);
        for e in &bad {
            tracing::warn!(error = %e, "peer left without a route");
        }
        self.pending = Some(routes);
        // A new list is tried at once, whatever happened to the last one.
        self.backoff = MIN_BACKOFF;
        self.try_sync().await;
    }

    /// Tries again to apply the last list if the previous try failed and
    /// its backoff has passed. Cheap to call often (the agent's poll tick).
    pub async fn retry(&mut self) {
        if self.pending.is_some() && tokio::time::Instant::now() >= self.next_try {
            self.try_sync().await;
        }
    }

    async fn try_sync(&mut self) {
        let Some(routes) = self.pending.take() else {
            return;
        };
        match self.sync(&routes).await {
            Ok(()) => self.backoff = MIN_BACKOFF,
            Err(error) => {
                // The connection may be what failed; open a fresh one next time.
                self.net = None;
                tracing::warn!(%error, peers = routes.len(), retry_in_ms = self.backoff.as_millis() as u64, "cannot sync routes to other nodes");
                self.pending = Some(routes);
                self.next_try = tokio::time::Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn sync(&mut self, routes: &[PeerRoute]) -> Result<(), PeersError> {
        if !routes.is_empty() {
            let turned_on =
                ensure_forwarding(&self.ip_forward).map_err(|source| PeersError::Forwarding {
                    path: self.ip_forward.clone(),
                    source,
                })?;
            if turned_on {
                tracing::info!(path = %self.ip_forward.display(), "IPv4 forwarding turned on for host-gw routes");
            }
        }
        let net = match &self.net {
            Some(n) => n,
            None => self.net.insert(Netlink::connect()?),
        };
        let done = net.sync_routes(routes).await?;
        for r in &done.added {
            tracing::info!(route = %r, "route to peer added");
        }
        for r in &done.changed {
            tracing::info!(route = %r, "route to peer changed");
        }
        for r in &done.removed {
            tracing::info!(route = %r, "route to peer removed");
        }
        let count = done.failed.len();
        if let Some((route, source)) = done.failed.into_iter().next() {
            return Err(PeersError::Routes {
                count,
                route,
                source,
            });
        }
        Ok(())
    }

    /// Removes every route Drover added (for `drover agent --cleanup`).
    pub async fn remove_all(&mut self) -> Result<(), NetError> {
        self.pending = None;
        let net = match &self.net {
            Some(n) => n,
            None => self.net.insert(Netlink::connect()?),
        };
        net.sync_routes(&[]).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, address: &str, subnet: &str) -> pb::Peer {
        pb::Peer {
            node_id: id.into(),
            address: address.into(),
            subnet: subnet.into(),
        }
    }

    #[test]
    fn peers_become_routes_and_bad_ones_are_named() {
        let peers = pb::Peers {
            peers: vec![
                peer("b", "198.18.0.11", "10.89.1.0/24"),
                peer("c", "node-c.example", "10.89.2.0/24"),
                peer("d", "198.18.0.13", "10.89.3.7/24"),
                peer("e", "198.18.0.14", "10.89.0.0/24"),
                peer("f", "127.0.0.1", "10.89.5.0/24"),
            ],
            ..Default::default()
        };
        let own = "10.89.0.0/24".parse().ok();
        let (routes, bad) = desired_routes(&peers, own);
        assert_eq!(
            routes,
            vec![PeerRoute {
                subnet: "10.89.1.0/24".parse().expect("valid"),
                via: Ipv4Addr::new(198, 18, 0, 11),
            }]
        );
        assert_eq!(bad.len(), 3);
        assert!(bad[0].to_string().contains("node-c.example"), "{}", bad[0]);
        assert!(bad[1].to_string().contains("10.89.3.7/24"), "{}", bad[1]);
        assert!(bad[2].to_string().contains("--address"), "{}", bad[2]);
    }

    #[test]
    fn partial_updates_are_merged_into_the_known_list() {
        let mut p = Peers::default();
        let full = p.known(&pb::Peers {
            peers: vec![
                peer("b", "198.18.0.11", "10.89.1.0/24"),
                peer("c", "198.18.0.12", "10.89.2.0/24"),
            ],
            ..Default::default()
        });
        assert_eq!(full.peers.len(), 2);
        // c leaves, d joins, b moves.
        let merged = p.known(&pb::Peers {
            peers: vec![
                peer("d", "198.18.0.13", "10.89.3.0/24"),
                peer("b", "198.18.0.21", "10.89.1.0/24"),
            ],
            partial: true,
            removed: vec!["c".into()],
        });
        let ids: Vec<(&str, &str)> = merged
            .peers
            .iter()
            .map(|x| (x.node_id.as_str(), x.address.as_str()))
            .collect();
        assert_eq!(ids, [("b", "198.18.0.21"), ("d", "198.18.0.13")]);
        // A whole list replaces what was known.
        let again = p.known(&pb::Peers {
            peers: vec![peer("e", "198.18.0.14", "10.89.4.0/24")],
            ..Default::default()
        });
        assert_eq!(again.peers.len(), 1);
        assert_eq!(again.peers[0].node_id, "e");
    }

    #[test]
    fn forwarding_is_switched_on_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ip_forward");
        std::fs::write(&path, "0\n").expect("write");
        assert!(ensure_forwarding(&path).expect("first"));
        assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), "1");
        assert!(!ensure_forwarding(&path).expect("second"));
        assert!(ensure_forwarding(&dir.path().join("missing")).is_err());
    }
}
