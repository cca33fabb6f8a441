//! Host-gw routes to other nodes' subnets.
//!
//! Every route Drover adds carries its own routing protocol number
//! ([`RTPROT_DROVER`]), so a sync can tell its routes from everyone else's
//! and only ever touches its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use super::error::netlink_errno;
use super::{Ipv4Net, NetError, Netlink};

/// The routing protocol number that marks routes Drover added
/// (`ip route show proto 68`). Unassigned in iproute2's `rt_protos`.
pub const RTPROT_DROVER: u8 = 0x44;

/// A route to another node's task subnet via that node's host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRoute {
    /// The other node's task subnet.
    pub subnet: Ipv4Net,
    /// The other node's host address, reachable on a local link.
    pub via: Ipv4Addr,
}

impl From<(Ipv4Net, Ipv4Addr)> for PeerRoute {
    fn from((subnet, via): (Ipv4Net, Ipv4Addr)) -> Self {
        Self { subnet, via }
    }
}

impl std::fmt::Display for PeerRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.subnet, self.via)
    }
}

/// What a sync has to do, worked out without touching the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to add.
    pub add: Vec<PeerRoute>,
    /// Drover routes whose gateway changed: `(old, new)`.
    pub change: Vec<(PeerRoute, PeerRoute)>,
    /// Drover routes no longer wanted.
    pub remove: Vec<PeerRoute>,
}

/// Compares the Drover routes present with those wanted. When `desired`
/// names a subnet twice, the first entry wins.
pub fn plan_routes(current: &[PeerRoute], desired: &[PeerRoute]) -> RoutePlan {
    let mut want: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
    for r in desired {
        want.entry(r.subnet).or_insert(r.via);
    }
    let mut kept: BTreeSet<Ipv4Net> = BTreeSet::new();
    let mut stale = Vec::new();
    for r in current {
        // Of several routes to one subnet, keep one that is right.
        if want.get(&r.subnet) == Some(&r.via) && kept.insert(r.subnet) {
            continue;
        }
        stale.push(*r);
    }
    let mut plan = RoutePlan::default();
    for (subnet, via) in want {
        if kept.contains(&subnet) {
            continue;
        }
        let new = PeerRoute { subnet, via };
        match stale.iter().position(|s| s.subnet == subnet) {
            Some(i) => plan.change.push((stale.remove(i), new)),
            None => plan.add.push(new),
        }
    }
    plan.remove = stale;
    plan
}

/// What [`Netlink::sync_routes`] did.
#[derive(Debug, Default)]
pub struct RouteChanges {
    /// Routes added.
    pub added: Vec<PeerRoute>,
    /// Routes whose gateway was changed (the new route).
    pub changed: Vec<PeerRoute>,
    /// Routes removed.
    pub removed: Vec<PeerRoute>,
    /// Wanted routes not added because a route Drover does not own already
    /// covers the same subnet with the same metric; that route was left alone.
    pub conflicts: Vec<PeerRoute>,
    /// Routes that could not be added or removed, with why.
    pub failed: Vec<(PeerRoute, NetError)>,
}

impl Netlink {
    /// The IPv4 routes in the main table that Drover added.
    pub async fn drover_routes(&self) -> Result<Vec<PeerRoute>, NetError> {
        let all: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink("dump routes", self.label.clone(), e))?;
        Ok(all.iter().filter_map(peer_route_of).collect())
    }

    /// Makes the Drover routes in the main table exactly `peers`: adds the
    /// missing ones, changes those whose gateway moved, deletes the rest.
    /// Routes Drover did not add are never touched. Keeps going past a
    /// route that fails; see [`RouteChanges::failed`].
    pub async fn sync_routes(&self, peers: &[PeerRoute]) -> Result<RouteChanges, NetError> {
        let plan = plan_routes(&self.drover_routes().await?, peers);
        let mut done = RouteChanges::default();
        for r in plan.remove {
            match self.del_route(&r).await {
                Ok(()) => done.removed.push(r),
                Err(e) => done.failed.push((r, e)),
            }
        }
        for (old, new) in plan.change {
            let res = match self.del_route(&old).await {
                Ok(()) => self.add_route(&new).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => done.changed.push(new),
                Err(e) => done.failed.push((new, e)),
            }
        }
        for r in plan.add {
            match self.add_route(&r).await {
                Ok(()) => done.added.push(r),
                Err(e) if e.errno() == Some(libc::EEXIST) => {
                    tracing::warn!(route = %r, "a route Drover does not own covers this subnet; leaving it");
                    done.conflicts.push(r);
                }
                Err(e) => done.failed.push((r, e)),
            }
        }
        if !(done.added.is_empty() && done.changed.is_empty() && done.removed.is_empty()) {
            tracing::info!(
                added = done.added.len(),
                changed = done.changed.len(),
                removed = done.removed.len(),
                failed = done.failed.len(),
                "node routes synced"
            );
        }
        Ok(done)
    }

    async fn add_route(&self, r: &PeerRoute) -> Result<(), NetError> {
        self.handle
            .route()
            .add(route_message(r))
            .execute()
            .await
            .map_err(|e| NetError::netlink("add route", format!("{r} in {}", self.label), e))
    }

    async fn del_route(&self, r: &PeerRoute) -> Result<(), NetError> {
        // The protocol in the request makes the kernel match only our route.
        match self.handle.route().del(route_message(r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(NetError::netlink(
                "delete route",
                format!("{r} in {}", self.label),
                e,
            )),
        }
    }
}

fn route_message(r: &PeerRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.subnet.network(), r.subnet.prefix())
        .gateway(r.via)
        .protocol(RouteProtocol::Other(RTPROT_DROVER))
        .build()
}

fn peer_route_of(msg: &RouteMessage) -> Option<PeerRoute> {
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || msg.header.protocol != RouteProtocol::Other(RTPROT_DROVER)
        || msg.header.kind != RouteType::Unicast
    {
        return None;
    }
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let via = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let subnet = Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(PeerRoute { subnet, via })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(subnet: &str, via: [u8; 4]) -> PeerRoute {
        PeerRoute {
            subnet: subnet.parse().expect("valid subnet"),
            via: Ipv4Addr::from(via),
        }
    }

    #[test]
    fn plans_adds_changes_and_removals() {
        let current = [
            r("10.89.1.0/24", [192, 0, 2, 1]),
            r("10.89.2.0/24", [192, 0, 2, 2]),
            r("10.89.3.0/24", [192, 0, 2, 3]),
        ];
        let desired = [
            r("10.89.2.0/24", [192, 0, 2, 2]),
            r("10.89.3.0/24", [192, 0, 2, 9]),
            r("10.89.4.0/24", [192, 0, 2, 4]),
        ];
        let plan = plan_routes(&current, &desired);
        assert_eq!(plan.add, vec![r("10.89.4.0/24", [192, 0, 2, 4])]);
        assert_eq!(
            plan.change,
            vec![(
                r("10.89.3.0/24", [192, 0, 2, 3]),
                r("10.89.3.0/24", [192, 0, 2, 9])
            )]
        );
        assert_eq!(plan.remove, vec![r("10.89.1.0/24", [192, 0, 2, 1])]);
    }

    #[test]
    fn nothing_to_do_when_in_sync() {
        let routes = [r("10.89.1.0/24", [192, 0, 2, 1])];
        assert_eq!(plan_routes(&routes, &routes), RoutePlan::default());
    }

    #[test]
    fn empty_desired_removes_all_and_duplicates_collapse() {
        let current = [
            r("10.89.1.0/24", [192, 0, 2, 1]),
            r("10.89.1.0/24", [192, 0, 2, 7]),
        ];
        let plan = plan_routes(&current, &[]);
        assert_eq!(plan.remove.len(), 2);
        let plan = plan_routes(
            &current,
            &[
                r("10.89.1.0/24", [192, 0, 2, 1]),
                r("10.89.1.0/24", [192, 0, 2, 5]),
            ],
        );
        assert_eq!(plan.remove, vec![r("10.89.1.0/24", [192, 0, 2, 7])]);
        assert!(plan.add.is_empty() && plan.change.is_empty());
    }
}
