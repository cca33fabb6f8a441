//! Node networking: the per-node bridge, one veth and one address per
//! allocation, IPAM, routes to other nodes' subnets, and the
//! `/etc/resolv.conf` and `/etc/hosts` a container gets.
//!
//! Everything speaks rtnetlink and syscalls directly; no `ip`, `brctl` or
//! `iptables` process is ever started. The pieces:
//!
//! - [`NodeNet`]: an rtnetlink connection in the node's (host) network
//!   namespace. It creates the bridge ([`NodeNet::ensure_bridge`]), attaches
//!   an allocation's namespace to it ([`NodeNet::attach`], [`NodeNet::detach`])
//!   and keeps the host-gw routes to other nodes ([`NodeNet::sync_routes`]).
//! - [`Netns`] and [`NetnsDir`]: open network namespaces (by path, e.g.
//!   `/proc/<pid>/ns/net`, or by fd), and create persistent named ones as
//!   bind mounts under a run directory (`/run/drover/netns` by default).
//! - [`ipam::Ipam`]: the node's address book, persisted with atomic writes.
//! - [`files`]: pure renderers for `resolv.conf` and `hosts`.
//!
//! The runtime that creates a container's namespaces can hand the network
//! namespace over by path or fd; [`NodeNet::attach`] only needs a [`Netns`].
//!
//! Why no trait seam around netlink here (style habit 2): what could go wrong
//! lives in the kernel's answers (ordering, `EEXIST`, namespaces), which a
//! double would only restate. The pure parts (IPAM, route planning, file
//! rendering, names) are unit tested; the netlink parts are tested for real
//! inside network namespaces that the root-only tests create
//! (`tests/tests/net.rs`).

mod error;
pub mod files;
pub mod ipam;
mod ipnet;
mod link;
mod netns;
mod routes;

pub use error::NetError;
pub use ipnet::Ipv4Net;
pub use link::{host_if_name, AllocNet, Bridge, NodeNet, CONTAINER_IF};
pub use netns::{Netns, NetnsDir, DEFAULT_NETNS_DIR};
pub use routes::{plan_routes, PeerRoute, RouteChanges, RoutePlan, RTPROT_DROVER};
/// The rtnetlink crate [`NodeNet::handle`] speaks, for requests this module
/// does not wrap.
pub use rtnetlink;
