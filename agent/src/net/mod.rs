//! Node networking: the per-node bridge, one veth and one address per
//! allocation, IPAM, routes to other nodes' subnets, and the
//! `/etc/resolv.conf` and `/etc/hosts` a container gets.
//!
//! Everything speaks rtnetlink and syscalls directly; no `ip`, `brctl` or
//! `iptables` process is ever started. The pieces:
//!
//! - [`Netlink`]: an rtnetlink connection in the node's (host) network
//!   namespace. It creates the bridge ([`Netlink::ensure_bridge`]), attaches
//!   an allocation's namespace to it ([`Netlink::attach`], [`Netlink::detach`])
//!   and keeps the host-gw routes to other nodes ([`Netlink::sync_routes`]).
//! - [`Netns`] and [`NetnsDir`]: open network namespaces (by path, e.g.
//!   `/proc/<pid>/ns/net`, or by fd), and create persistent named ones as
//!   bind mounts under a run directory (`/run/drover/netns` by default).
//! - [`ipam::Ipam`]: the node's address book, persisted with atomic writes.
//! - [`files`]: pure renderers for `resolv.conf` and `hosts`.
//!
//! The runtime that creates a container's namespaces can hand the network
//! namespace over by path or fd; [`Netlink::attach`] only needs a [`Netns`].
//!
//! One allocation, start to end (errors elided):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use drover_agent::net::{files, host_if_name, ipam::Ipam, Netlink, NetnsDir, Veth};
//! let subnet = "10.89.3.0/24".parse()?;
//! let mut ipam = Ipam::open("/run/drover/ipam.json", subnet)?;
//! let node = Netlink::connect()?; // in the node's namespace
//! let bridge = node.ensure_bridge("drover0", ipam.gateway(), 24).await?;
//! let netns_dir = NetnsDir::new(drover_agent::net::DEFAULT_NETNS_DIR);
//!
//! let netns = netns_dir.create("alloc-1")?; // or Netns::open("/proc/<pid>/ns/net")
//! let ip = ipam.allocate("alloc-1")?;
//! let alloc = Veth { host_if: host_if_name("alloc-1"), ip, prefix: 24, gateway: bridge.ip };
//! node.attach(&bridge, &netns, &alloc).await?;
//! let resolv = files::task_resolv_conf(bridge.ip, "drover.internal")?;
//! let hosts = files::hosts("alloc-1", ip, &[])?;
//! files::write_etc(std::path::Path::new("/path/to/rootfs/etc"), &resolv, &hosts)?;
//!
//! node.detach(&alloc.host_if).await?;
//! drop(netns);
//! netns_dir.remove("alloc-1")?;
//! ipam.release("alloc-1")?;
//! # Ok(()) }
//! ```
//!
//! The agent drives all of this through [`wiring::NodeNetwork`] (bridge,
//! forwarding, isolation, per-allocation setup and teardown, crash
//! reconciliation); [`firewall`] keeps tasks away from the node's own
//! services; [`peers`] keeps the host-gw routes to the other nodes.
//!
//! One name per concept:
//!
//! | name | what |
//! |---|---|
//! | [`Netlink`] | an rtnetlink connection inside one network namespace |
//! | [`wiring::NodeNetwork`] | the node's networking as a whole: bridge, IPAM, firewall, state |
//! | [`Veth`] | how one allocation's veth pair is wired to the bridge |
//! | [`wiring::AllocNetwork`] | an allocation's network as set up: mode, address, what its tasks join |
//! | [`crate::runtime::TaskNetwork`] | the part of it a task's spec carries (namespace and `/etc` files) |
//!
//! Why no trait seam around netlink here (style habit 2): what could go wrong
//! lives in the kernel's answers (ordering, `EEXIST`, namespaces), which a
//! double would only restate. The pure parts (IPAM, route planning, file
//! rendering, names) are unit tested; the netlink parts are tested for real
//! inside network namespaces that the root-only tests create
//! (`tests/tests/net.rs`).

mod error;
pub mod files;
pub mod firewall;
pub mod ipam;
mod link;
mod netns;
pub mod peers;
mod routes;
pub mod wiring;

/// The one IPv4 network type, shared with the scheduler.
pub use drover_model::Ipv4Net;
pub use error::NetError;
pub use link::{host_if_name, Bridge, Netlink, Veth, CONTAINER_IF};
pub use netns::{Netns, NetnsDir, DEFAULT_NETNS_DIR};
pub use routes::{plan_routes, PeerRoute, RouteChanges, RoutePlan, RTPROT_DROVER};
/// The rtnetlink crate [`Netlink::handle`] speaks, for requests this module
/// does not wrap.
pub use rtnetlink;
