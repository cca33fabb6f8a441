//! The node's rtnetlink connection: bridge, per-allocation veth pairs.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::proto::Connection;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use tokio::task::JoinHandle;

use super::error::netlink_errno;
use super::{Ipv4Net, NetError, Netns};

/// The name of an allocation's interface inside its namespace.
pub const CONTAINER_IF: &str = "eth0";

/// `lo` has this index in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// The node's bridge, as [`Netlink::ensure_bridge`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Interface name, e.g. `drover0`.
    pub name: String,
    /// Interface index in the host namespace.
    pub index: u32,
    /// The bridge's address: the allocations' gateway and the node's DNS.
    pub ip: Ipv4Addr,
    /// Prefix length of the node subnet.
    pub prefix: u8,
}

/// One allocation's veth pair: how its namespace is wired to the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    /// Name of the host end of the veth pair (at most 15 bytes); see
    /// [`host_if_name`].
    pub host_if: String,
    /// The allocation's address on `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of the node subnet.
    pub prefix: u8,
    /// Default gateway inside the namespace: the bridge's address.
    pub gateway: Ipv4Addr,
}

impl Veth {
    fn validate(&self) -> Result<(), NetError> {
        check_if_name(&self.host_if)?;
        let net = Ipv4Net::new(self.ip, self.prefix)?;
        if !net.contains(self.gateway) {
            return Err(NetError::invalid(
                "gateway",
                self.gateway.to_string(),
                format!("not inside {}/{}", self.ip, self.prefix),
            ));
        }
        if self.ip == self.gateway || self.ip == net.network() || self.ip == net.broadcast() {
            return Err(NetError::invalid(
                "allocation address",
                self.ip.to_string(),
                "is the gateway, network or broadcast address",
            ));
        }
        Ok(())
    }
}

/// The host-side veth name for an allocation: `dv` and 12 hex digits of a
/// hash of the id, so it fits the kernel's 15-byte limit and is the same
/// after an agent restart.
pub fn host_if_name(alloc_id: &str) -> String {
    format!("dv{:012x}", fnv64(alloc_id) & 0xffff_ffff_ffff)
}

/// FNV-1a, 64 bit: stable across releases, unlike std's hasher.
fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn check_if_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(NetError::invalid(
            "interface name",
            name,
            "must be 1 to 15 printable bytes without '/', ':' or spaces",
        ))
    }
}

/// An rtnetlink socket opened by [`Netlink::open_here`] on a helper thread,
/// not yet driven by the runtime.
pub(crate) struct Unstarted {
    conn: Connection<RouteNetlinkMessage>,
    handle: Handle,
    label: String,
}

impl std::fmt::Debug for Unstarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unstarted")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Unstarted {
    /// Spawns the connection on the current runtime: the socket is usable.
    pub(crate) fn start(self) -> Netlink {
        Netlink {
            handle: self.handle,
            conn: tokio::spawn(self.conn),
            label: self.label,
        }
    }
}

/// An rtnetlink connection in one network namespace (the node's, for the
/// agent). Dropping it closes the connection.
#[derive(Debug)]
pub struct Netlink {
    pub(super) handle: Handle,
    conn: JoinHandle<()>,
    pub(super) label: String,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Netlink {
    /// Connects in the calling thread's network namespace. Must be called
    /// inside a tokio runtime, which drives the connection.
    pub fn connect() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::sys("open rtnetlink socket", "current netns", e))?;
        Ok(Self {
            handle,
            conn: tokio::spawn(conn),
            label: "current netns".into(),
        })
    }

    /// Connects inside `netns`. The socket is opened on a short-lived thread
    /// that enters the namespace; the caller's thread does not move.
    pub async fn connect_in(netns: &Netns) -> Result<Self, NetError> {
        let ns = netns.try_clone()?;
        let label = netns.label().to_string();
        let rt = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_label = label.clone();
        std::thread::Builder::new()
            .name("drover-netns".into())
            .spawn(move || {
                let res = ns
                    .enter_current_thread()
                    .and_then(|()| Netlink::open_here(&rt, thread_label));
                let _ = tx.send(res);
            })
            .map_err(|e| NetError::sys("spawn netns thread for", label.clone(), e))?;
        let unstarted = rx.await.map_err(|_| NetError::Thread {
            op: "open rtnetlink socket",
            target: label.clone(),
        })??;
        Ok(unstarted.start())
    }

    /// Opens an rtnetlink socket in the calling thread's network namespace,
    /// registered with `rt`'s reactor but not driven yet: for a helper
    /// thread that is inside an allocation's namespace (and is no runtime
    /// worker). [`Unstarted::start`], on the runtime, makes it usable.
    pub(crate) fn open_here(
        rt: &tokio::runtime::Handle,
        label: String,
    ) -> Result<Unstarted, NetError> {
        // The socket registers with the runtime's reactor.
        let _guard = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::sys("open rtnetlink socket in", label.clone(), e))?;
        Ok(Unstarted {
            conn,
            handle,
            label,
        })
    }

    /// The underlying rtnetlink handle, for requests this module does not
    /// wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The link called `name`, if there is one.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink(
                "get link",
                format!("{name} in {}", self.label),
                e,
            )),
        }
    }

    /// Creates the bridge `name` if absent (reusing it if present), gives it
    /// exactly the IPv4 address `ip/prefix` and sets it up.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<Bridge, NetError> {
        check_if_name(name)?;
        Ipv4Net::new(ip, prefix)?;
        let link = match self.link_by_name(name).await? {
            Some(link) => link,
            None => {
                let add = self
                    .handle
                    .link()
                    .add(
                        LinkBridge::new(name)
                            .address(bridge_mac(name).to_vec())
                            .build(),
                    )
                    .execute()
                    .await;
                match add {
                    Ok(()) => {}
                    // Someone made it between our look-up and add: reuse it.
                    Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(NetError::netlink("add bridge", name, e)),
                }
                self.link_by_name(name)
                    .await?
                    .ok_or_else(|| NetError::NotFound {
                        what: "bridge",
                        name: name.into(),
                    })?
            }
        };
        if link_kind(&link) != Some(InfoKind::Bridge) {
            return Err(NetError::invalid(
                "bridge",
                name,
                "an interface of that name exists and is not a bridge",
            ));
        }
        let index = link.header.index;
        let mut have = false;
        for addr in self.ipv4_addrs(index, name).await? {
            let (a, p) = addr_of(&addr);
            if a == Some(ip) && p == prefix {
                have = true;
            } else {
                self.handle
                    .address()
                    .del(addr)
                    .execute()
                    .await
                    .map_err(|e| NetError::netlink("delete stale bridge address", name, e))?;
            }
        }
        if !have {
            self.handle
                .address()
                .add(index, IpAddr::V4(ip), prefix)
                .execute()
                .await
                .map_err(|e| {
                    NetError::netlink("add bridge address", format!("{ip}/{prefix} on {name}"), e)
                })?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::netlink("set bridge up", name, e))?;
        tracing::debug!(bridge = name, %ip, prefix, index, "bridge ready");
        Ok(Bridge {
            name: name.into(),
            index,
            ip,
            prefix,
        })
    }

    async fn ipv4_addrs(&self, index: u32, name: &str) -> Result<Vec<AddressMessage>, NetError> {
        let all: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink("list addresses", name, e))?;
        Ok(all
            .into_iter()
            .filter(|a| a.header.index == index && addr_of(a).0.is_some())
            .collect())
    }

    /// The IPv4 addresses on the interface `name` (none when there is no
    /// such interface).
    pub(crate) async fn ipv4_addrs_of(&self, name: &str) -> Result<Vec<Ipv4Addr>, NetError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(Vec::new());
        };
        let label = format!("{name} in {}", self.label);
        Ok(self
            .ipv4_addrs(link.header.index, &label)
            .await?
            .iter()
            .filter_map(|a| addr_of(a).0)
            .collect())
    }

    /// Deletes the bridge `name`. Returns false when there was none.
    pub async fn remove_bridge(&self, name: &str) -> Result<bool, NetError> {
        self.delete_link(name, "delete bridge").await
    }

    /// Wires the allocation's namespace `netns` to `bridge`: a veth pair
    /// whose host end `alloc.host_if` is enslaved to the bridge and up, and
    /// whose peer is created directly inside `netns` as `eth0` (creating it
    /// there is far cheaper than moving it), addressed `alloc.ip`, up, with
    /// `lo` up and a default route via `alloc.gateway`.
    ///
    /// On failure nothing is left behind: the host end is deleted again,
    /// which takes the peer with it.
    pub async fn attach(
        &self,
        bridge: &Bridge,
        netns: &Netns,
        alloc: &Veth,
    ) -> Result<(), NetError> {
        alloc.validate()?;
        // The veth and the socket inside the namespace do not depend on each
        // other: make them at the same time.
        let (added, inside) = tokio::join!(
            self.add_veth(bridge, netns, alloc),
            Netlink::connect_in(netns)
        );
        added?;
        self.configure_or_undo(netns, inside, alloc).await
    }

    /// [`Netlink::attach`] with `inside`, a connection already open inside
    /// `netns` (made by the thread that created the namespace, which saves
    /// a thread).
    pub(crate) async fn attach_with(
        &self,
        bridge: &Bridge,
        netns: &Netns,
        inside: &Netlink,
        alloc: &Veth,
    ) -> Result<(), NetError> {
        alloc.validate()?;
        self.add_veth(bridge, netns, alloc).await?;
        self.configure_or_undo(netns, Ok(inside), alloc).await
    }

    /// The veth pair: host end on the bridge and up, `eth0` in `netns`.
    async fn add_veth(&self, bridge: &Bridge, netns: &Netns, alloc: &Veth) -> Result<(), NetError> {
        let host_if = alloc.host_if.as_str();
        // The peer cannot be set up in the same request: a veth refuses to
        // open (ENOTCONN) before its pair is complete.
        let peer = LinkUnspec::new_with_name(CONTAINER_IF)
            .setns_by_fd(netns.as_fd().as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_if)
            .controller(bridge.index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle.link().add(veth).execute().await.map_err(|e| {
            let target = format!(
                "{host_if} (peer {CONTAINER_IF} in {}) on bridge {}",
                netns.label(),
                bridge.name
            );
            NetError::netlink("add veth", target, e)
        })
    }

    /// Configures `eth0` through `inside`; on failure deletes the veth again.
    async fn configure_or_undo<N: std::borrow::Borrow<Netlink>>(
        &self,
        netns: &Netns,
        inside: Result<N, NetError>,
        alloc: &Veth,
    ) -> Result<(), NetError> {
        let host_if = alloc.host_if.as_str();
        let result = match inside {
            Ok(inside) => inside.borrow().configure_eth0(alloc).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if let Err(undo) = self
                .delete_link(host_if, "delete veth after failed attach")
                .await
            {
                tracing::warn!(host_if, error = %undo, "could not undo a failed attach");
            }
            return Err(e);
        }
        tracing::debug!(host_if, ip = %alloc.ip, netns = netns.label(), "allocation attached");
        Ok(())
    }

    /// Inside an allocation's namespace: address and route on `eth0`, `lo` up.
    async fn configure_eth0(&self, alloc: &Veth) -> Result<(), NetError> {
        let eth0 = self
            .link_by_name(CONTAINER_IF)
            .await?
            .ok_or_else(|| NetError::NotFound {
                what: "interface",
                name: format!("{CONTAINER_IF} in {}", self.label),
            })?
            .header
            .index;
        let label = &self.label;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(alloc.gateway)
            .output_interface(eth0)
            .build();
        // One socket, and the kernel handles its requests one after the
        // other in the order sent, so they can all be in flight at once:
        // `eth0` is up and addressed before the route needs it.
        let eth0_up = self.set_up(eth0, format!("{CONTAINER_IF} in {label}"));
        let address = async {
            let req = self
                .handle
                .address()
                .add(eth0, IpAddr::V4(alloc.ip), alloc.prefix);
            req.execute().await.map_err(|e| {
                let target = format!("{}/{} on {CONTAINER_IF} in {label}", alloc.ip, alloc.prefix);
                NetError::netlink("add address", target, e)
            })
        };
        let lo_up = self.set_up(LOOPBACK_INDEX, format!("lo in {label}"));
        let default_route = async {
            self.handle.route().add(route).execute().await.map_err(|e| {
                let target = format!("via {} in {label}", alloc.gateway);
                NetError::netlink("add default route", target, e)
            })
        };
        // `futures::join!` polls in the order written, so requests go out in it.
        let (a, b, c, d) = futures::join!(eth0_up, address, lo_up, default_route);
        a.and(b).and(c).and(d)
    }

    /// Sets `lo` up in this connection's namespace (for a namespace with
    /// no other interface: `network = "none"`).
    pub async fn set_loopback_up(&self) -> Result<(), NetError> {
        self.set_up(LOOPBACK_INDEX, format!("lo in {}", self.label))
            .await
    }

    /// Sets the link with index `index` (named `what` in errors) up.
    async fn set_up(&self, index: u32, what: String) -> Result<(), NetError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::netlink("set up", what, e))
    }

    /// Deletes the allocation's host veth `host_if`; its peer inside the
    /// namespace goes with it. Returns false when it did not exist.
    pub async fn detach(&self, host_if: &str) -> Result<bool, NetError> {
        check_if_name(host_if)?;
        self.delete_link(host_if, "delete veth").await
    }

    async fn delete_link(&self, name: &str, op: &'static str) -> Result<bool, NetError> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(NetError::netlink(
                op,
                format!("{name} in {}", self.label),
                e,
            )),
        }
    }
}

fn link_kind(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

fn addr_of(msg: &AddressMessage) -> (Option<Ipv4Addr>, u8) {
    let ip = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
            Some(*ip)
        }
        _ => None,
    });
    (ip, msg.header.prefix_len)
}

/// A fixed, locally administered MAC for the bridge, so it does not change
/// to that of the lowest-numbered port as allocations come and go (which
/// would make every container's ARP entry for the gateway stale).
fn bridge_mac(name: &str) -> [u8; 6] {
    let h = fnv64(name).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_if_names_fit_and_are_stable() {
        let a = host_if_name("3f2a-alloc-0001");
        assert_eq!(a, host_if_name("3f2a-alloc-0001"));
        assert_ne!(a, host_if_name("3f2a-alloc-0002"));
        assert!(a.len() <= 15);
        assert!(check_if_name(&a).is_ok());
    }

    #[test]
    fn interface_names_are_checked() {
        for bad in ["", "a-name-that-is-too-long", "a b", "a/b", "a:b"] {
            assert!(check_if_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alloc_net_is_checked() {
        let ok = Veth {
            host_if: "dv1".into(),
            ip: Ipv4Addr::new(10, 89, 1, 5),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 89, 1, 1),
        };
        assert!(ok.validate().is_ok());
        let outside = Veth {
            gateway: Ipv4Addr::new(10, 89, 2, 1),
            ..ok.clone()
        };
        assert!(outside.validate().is_err());
        let broadcast = Veth {
            ip: Ipv4Addr::new(10, 89, 1, 255),
            ..ok
        };
        assert!(broadcast.validate().is_err());
    }

    #[test]
    fn bridge_mac_is_local_unicast() {
        let mac = bridge_mac("drover0");
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(mac, bridge_mac("drover0"));
    }
}
