//! The agent's networking, put together: the node's bridge and isolation
//! rules ([`NodeNetwork::init`]), each allocation's namespace, veth,
//! address and `/etc` files ([`NodeNetwork::setup`],
//! [`NodeNetwork::teardown`]), the sweep of what a crash left
//! ([`NodeNetwork::reconcile`]) and the removal of it all when the node
//! leaves ([`cleanup_node`]).
//!
//! Where things live, for an agent with data directory `D`:
//!
//! - `D/net/subnet`: the node's task subnet, so that an agent restarted
//!   without its scheduler keeps it; `D/net/ipam.json`: the address book;
//!   `D/net/resolv.conf` and `D/net/allocs/<alloc>/hosts`: what the tasks
//!   see as `/etc/resolv.conf` (one for the node: it names the bridge,
//!   where the node's DNS answers, searches `service.<zone>` with
//!   `ndots:1`; [`files::task_resolv_conf`]) and `/etc/hosts`
//!   (bind-mounted read-only).
//! - `/run/drover/<hash of D>/netns/<alloc>`: the allocations' named
//!   network namespaces ([`netns_dir_for`]). Under `/run` (a tmpfs) because
//!   namespaces do not survive a reboot either; keyed by the data directory
//!   so two agents on one machine (the multi-host tests) never collide.
//! - host veth `dv<hash of alloc id>` ([`super::host_if_name`]), on the
//!   bridge; the nftables table `drover-<node id>` ([`super::firewall`]):
//!   tasks reach the node only on its DNS port, and through the node only
//!   the cluster CIDR (when the scheduler sends one).
//!
//! IPv4 forwarding (`net.ipv4.ip_forward`) is switched on in the agent's
//! own network namespace at init: host-gw routing between nodes needs it,
//! and it is what every container host does. It is left on by
//! [`cleanup_node`]: other software on the host may rely on it by then.
//!
//! Every step is idempotent, so a crash anywhere is repaired by running the
//! same step again: [`NodeNetwork::setup`] of an allocation whose tasks
//! still run reuses its namespace, address and veth; a fresh one first
//! removes whatever a half-done earlier attempt left.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;

use super::ipam::{Ipam, IpamError};
use super::link::Unstarted;
use super::{
    files, firewall, host_if_name, Bridge, Ipv4Net, NetError, Netlink, Netns, NetnsDir, Veth,
};
use crate::runtime::TaskNetwork;

/// The bridge name when none is configured.
pub const DEFAULT_BRIDGE: &str = "drover0";

/// How an allocation is networked (decoded from its group's `network`).
pub use crate::assignment::NetworkMode;

/// An allocation's network as set up: what its tasks join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocNetwork {
    /// The mode it was set up for.
    pub mode: NetworkMode,
    /// Its address on the node bridge (bridge mode only).
    pub ip: Option<Ipv4Addr>,
    /// What goes into each of its tasks' specs.
    pub task: TaskNetwork,
}

/// Where an agent keeps its networking state and what it names things.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The node bridge's name.
    pub bridge: String,
    /// `<data_dir>/net`: subnet, IPAM file, per-allocation `/etc` files.
    pub state_dir: PathBuf,
    /// The named network namespaces; see [`netns_dir_for`].
    pub netns_dir: PathBuf,
    /// The nftables table of this agent ([`firewall::table_name`]).
    pub table: String,
    /// The sysctl file that switches IPv4 forwarding.
    pub ip_forward: PathBuf,
    /// The cluster CIDR all node subnets are cut from (the scheduler's
    /// `Registered.cluster_cidr`): what tasks may reach through the node
    /// ([`firewall`]). `None` leaves forwarded traffic unfiltered.
    pub cluster_cidr: Option<Ipv4Net>,
    /// The service-discovery zone (`Registered.dns_zone`): the tasks'
    /// resolv.conf searches `service.<zone>`.
    pub dns_zone: String,
}

impl NetConfig {
    /// The layout for an agent with data directory `data_dir`, bridge
    /// `bridge` and node id `node_id` (see the module docs).
    pub fn for_agent(data_dir: &Path, bridge: &str, node_id: &str) -> Self {
        Self {
            bridge: bridge.to_string(),
            state_dir: data_dir.join("net"),
            netns_dir: netns_dir_for(data_dir),
            table: firewall::table_name(node_id),
            ip_forward: PathBuf::from(super::peers::IP_FORWARD),
            cluster_cidr: None,
            dns_zone: drover_model::skydns::DEFAULT_ZONE.to_owned(),
        }
    }

    fn ipam_path(&self) -> PathBuf {
        self.state_dir.join("ipam.json")
    }

    fn subnet_path(&self) -> PathBuf {
        self.state_dir.join("subnet")
    }

    fn files_dir(&self, alloc_id: &str) -> PathBuf {
        self.state_dir.join("allocs").join(alloc_id)
    }

    /// The node's `resolv.conf`, the same for every allocation (the
    /// bridge's address and the service search domain), bind-mounted
    /// read-only into each: written once at init, not per allocation.
    fn resolv_path(&self) -> PathBuf {
        self.state_dir.join("resolv.conf")
    }
}

/// `/run/drover/<16 hex digits of a hash of data_dir>/netns`: the netns
/// directory of the agent whose data directory is `data_dir`.
pub fn netns_dir_for(data_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    PathBuf::from(format!("/run/drover/{h:016x}/netns"))
}

/// Writes the node's resolv.conf for tasks (see [`files::task_resolv_conf`])
/// unless it already says that.
fn write_resolv_conf(cfg: &NetConfig, bridge: Ipv4Addr, zone: &str) -> Result<(), NetError> {
    let resolv = files::task_resolv_conf(bridge, zone)?;
    let path = cfg.resolv_path();
    if fs::read_to_string(&path).is_ok_and(|have| have == resolv) {
        return Ok(());
    }
    files::write_atomic(&path, &resolv, false)
}

/// The subnet this node keeps from an earlier start, if any.
pub fn saved_subnet(cfg: &NetConfig) -> Result<Option<Ipv4Net>, NetError> {
    let path = cfg.subnet_path();
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().parse()?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetError::sys("read", path.display().to_string(), e)),
    }
}

/// The node's networking, once its bridge is up.
#[derive(Debug)]
pub struct NodeNetwork {
    cfg: NetConfig,
    node: Netlink,
    bridge: Bridge,
    ipam: Mutex<Ipam>,
    netns: NetnsDir,
}

impl NodeNetwork {
    /// Brings the node's networking up for `subnet`: the address book, the
    /// bridge with the subnet's first host address, IPv4 forwarding, the
    /// isolation rules and the namespace directory. Persists the subnet.
    ///
    /// When the address book still holds allocations in another subnet
    /// (the scheduler changed its mind while tasks run), the old subnet is
    /// kept until they are gone: renumbering running tasks is not possible.
    pub async fn init(cfg: NetConfig, subnet: Ipv4Net) -> Result<Self, NetError> {
        let netns = NetnsDir::new(&cfg.netns_dir);
        let ipam = match load_ipam(&cfg, subnet)? {
            Some(ipam) => ipam,
            None => rebuild_ipam(&cfg, subnet, live_addresses(&netns).await?)?,
        };
        let subnet = ipam.subnet();
        fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| NetError::sys("create", cfg.state_dir.display().to_string(), e))?;
        write_file(&cfg.subnet_path(), &format!("{subnet}\n"))?;
        let node = Netlink::connect()?;
        let bridge = node
            .ensure_bridge(&cfg.bridge, ipam.gateway(), subnet.prefix())
            .await?;
        write_resolv_conf(&cfg, bridge.ip, &cfg.dns_zone)?;
        super::peers::ensure_forwarding(&cfg.ip_forward)
            .map_err(|e| NetError::sys("enable", cfg.ip_forward.display().to_string(), e))?;
        firewall::apply(
            &cfg.table,
            &bridge.name,
            bridge.ip,
            subnet,
            cfg.cluster_cidr,
        )?;
        netns.init()?;
        tracing::info!(bridge = %bridge.name, ip = %bridge.ip, %subnet, table = %cfg.table, "node network ready");
        Ok(Self {
            cfg,
            node,
            bridge,
            ipam: Mutex::new(ipam),
            netns,
        })
    }

    /// The node subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.lock_ipam().subnet()
    }

    /// The bridge (its address is the tasks' gateway and DNS server).
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Rewrites the tasks' resolv.conf for the service-discovery `zone`
    /// when it says another (the scheduler was restarted with another
    /// zone). Tasks started from now on see it; running ones keep the file
    /// they have (a bind mount of the one replaced).
    pub fn set_dns_zone(&self, zone: &str) -> Result<(), NetError> {
        write_resolv_conf(&self.cfg, self.bridge.ip, zone)
    }

    fn lock_ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        // A panic while holding it cannot leave the book half-changed: every
        // change is written before the in-memory state moves.
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets up the network of allocation `alloc_id` for `mode`, its hosts
    /// file naming it `hostname`. With `fresh` (none of its tasks exists
    /// yet) leftovers of an earlier attempt are removed first; otherwise
    /// (re-adopted after an agent restart) what exists is kept, so the
    /// running tasks keep their address and connections.
    pub async fn setup(
        &self,
        alloc_id: &str,
        hostname: &str,
        mode: NetworkMode,
        fresh: bool,
    ) -> Result<AllocNetwork, NetError> {
        if mode == NetworkMode::Host {
            return Ok(AllocNetwork {
                mode,
                ip: None,
                task: TaskNetwork::default(),
            });
        }
        // A veth is only ever made after its address is recorded, and the
        // address is released last: without any state there is no veth.
        if fresh && self.has_state(alloc_id) {
            self.teardown(alloc_id).await?;
        }
        let ns_path = self.netns.path(alloc_id);
        let rt = tokio::runtime::Handle::current();
        // Run by a thread of its own, which ends inside the namespace: the
        // namespace (created, or reopened for a re-adopted allocation) and
        // an rtnetlink socket in it, opened there without another thread.
        let in_netns = || -> Result<(Netns, Unstarted), NetError> {
            let netns = if is_netns_mount(&ns_path) {
                let netns = self.netns.open(alloc_id)?;
                netns.enter_current_thread()?;
                netns
            } else {
                // A plain file where a namespace was mounted: left by a
                // reboot (the namespace died with the kernel) where /run
                // is no tmpfs.
                self.netns.remove(alloc_id)?;
                self.netns.create_on_this_thread(alloc_id)?
            };
            let inside = Netlink::open_here(&rt, ns_path.display().to_string())?;
            Ok((netns, inside))
        };
        if mode == NetworkMode::None {
            let (_netns, inside) = on_netns_thread(&ns_path, in_netns, || Ok(()))?.0;
            inside.start().set_loopback_up().await?;
            return Ok(AllocNetwork {
                mode,
                ip: None,
                task: TaskNetwork {
                    netns: Some(ns_path),
                    resolv_conf: None,
                    hosts: None,
                },
            });
        }
        // The namespace (kernel work) and the address and hosts file (file
        // writes) do not depend on each other: both at once.
        let hosts_path = self.cfg.files_dir(alloc_id).join("hosts");
        let ((netns, inside), ip) = on_netns_thread(&ns_path, in_netns, || {
            let ip = self.lock_ipam().allocate(alloc_id)?;
            let hosts =
                files::hosts(hostname, ip, &[]).or_else(|_| files::hosts(alloc_id, ip, &[]))?;
            files::write_atomic(&hosts_path, &hosts, true)?;
            Ok(ip)
        })?;
        let inside = inside.start();
        let alloc = Veth {
            host_if: host_if_name(alloc_id),
            ip,
            prefix: self.bridge.prefix,
            gateway: self.bridge.ip,
        };
        // Fresh, the veth cannot exist (see above); re-adopted, one that
        // exists is kept with the connections through it.
        if fresh || self.node.link_by_name(&alloc.host_if).await?.is_none() {
            self.node
                .attach_with(&self.bridge, &netns, &inside, &alloc)
                .await?;
        }
        tracing::info!(alloc_id = %alloc_id, %ip, host_if = %alloc.host_if, "allocation network ready");
        Ok(AllocNetwork {
            mode,
            ip: Some(ip),
            task: TaskNetwork {
                netns: Some(ns_path),
                resolv_conf: Some(self.cfg.resolv_path()),
                hosts: Some(hosts_path),
            },
        })
    }

    /// Whether anything of `alloc_id`'s network exists (address, namespace
    /// or files): cheap, no netlink.
    pub fn has_state(&self, alloc_id: &str) -> bool {
        self.lock_ipam().get(alloc_id).is_some()
            || self.netns.path(alloc_id).exists()
            || self.cfg.files_dir(alloc_id).exists()
    }

    /// Removes `alloc_id`'s network: host veth (its peer goes with it),
    /// namespace, files, address. Idempotent; the address is released last,
    /// so it is never handed out while the veth holding it may exist.
    pub async fn teardown(&self, alloc_id: &str) -> Result<(), NetError> {
        let host_if = host_if_name(alloc_id);
        let detached = self.node.detach(&host_if).await?;
        let removed = self.netns.remove(alloc_id)?;
        let dir = self.cfg.files_dir(alloc_id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NetError::sys("remove", dir.display().to_string(), e)),
        }
        let released = self.lock_ipam().release(alloc_id)?;
        if detached || removed || released.is_some() {
            tracing::info!(alloc_id = %alloc_id, ip = ?released, "allocation network removed");
        }
        Ok(())
    }

    /// Removes every namespace, veth on the bridge, address and file
    /// belonging to an allocation not in `keep` (those with tasks on disk):
    /// what an agent that crashed between starting and stopping an
    /// allocation left. Returns the allocation ids cleaned up.
    pub async fn reconcile(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let mut gone: BTreeSet<String> = BTreeSet::new();
        gone.extend(self.netns.list()?.into_iter().filter(|n| !keep.contains(n)));
        gone.extend(
            self.lock_ipam()
                .allocations()
                .map(|(id, _)| id.to_string())
                .filter(|id| !keep.contains(id)),
        );
        if let Ok(entries) = fs::read_dir(self.cfg.state_dir.join("allocs")) {
            gone.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|id| !keep.contains(id)),
            );
        }
        for id in &gone {
            self.teardown(id).await?;
        }
        // Veths on the bridge whose allocation is unknown (its namespace
        // and address already gone).
        let wanted: BTreeSet<String> = keep.iter().map(|id| host_if_name(id)).collect();
        for name in bridge_ports(&self.node, self.bridge.index).await? {
            if name.starts_with("dv") && !wanted.contains(&name) {
                tracing::info!(host_if = %name, "removing veth of an unknown allocation");
                self.node.detach(&name).await?;
            }
        }
        if !gone.is_empty() {
            tracing::info!(
                count = gone.len(),
                "removed networks of allocations no longer on disk"
            );
        }
        Ok(gone.into_iter().collect())
    }
}

/// Whether a network namespace is mounted at `path` (nsfs).
fn is_netns_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// The names of the interfaces enslaved to the bridge with index `bridge`.
async fn bridge_ports(node: &Netlink, bridge: u32) -> Result<Vec<String>, NetError> {
    let links: Vec<_> = node
        .handle()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("dump links", "current netns", e))?;
    Ok(links
        .iter()
        .filter(|l| {
            l.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == bridge))
        })
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        })
        .collect())
}

/// What [`cleanup_node`] removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Network namespaces unmounted.
    pub namespaces: usize,
    /// Veths deleted.
    pub veths: usize,
    /// Whether the bridge was there and is deleted.
    pub bridge: bool,
    /// Drover routes deleted.
    pub routes: usize,
    /// Whether the nftables table was there and is deleted.
    pub table: bool,
}

/// Removes everything of the node's networking that `cfg` names: every
/// allocation namespace, the veths on the bridge, the bridge, the routes
/// Drover added ([`super::RTPROT_DROVER`]), the nftables table, and the
/// state directory (subnet, IPAM, files). For node removal
/// (`drover agent --cleanup`), after the tasks are stopped. Keeps going
/// past failures and returns the first one.
///
/// Routes are told apart from other software's by their protocol number
/// only, not by agent: with `routes` false they are left alone (a test
/// harness whose agents share the machine's namespace with others).
pub async fn cleanup_node(cfg: &NetConfig, routes: bool) -> Result<CleanupReport, NetError> {
    let mut report = CleanupReport::default();
    let mut first_err: Option<NetError> = None;
    let mut note = |r: Result<(), NetError>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "cleanup step failed");
            first_err.get_or_insert(e);
        }
    };
    let netns = NetnsDir::new(&cfg.netns_dir);
    note(netns.list().map(|l| report.namespaces = l.len()));
    note(netns.remove_all());
    if let Some(parent) = cfg.netns_dir.parent() {
        let _ = fs::remove_dir(parent);
    }
    let node = Netlink::connect()?;
    if let Some(bridge) = node.link_by_name(&cfg.bridge).await? {
        let ports = bridge_ports(&node, bridge.header.index).await;
        match ports {
            Ok(ports) => {
                for name in ports.iter().filter(|n| n.starts_with("dv")) {
                    match node.detach(name).await {
                        Ok(true) => report.veths += 1,
                        Ok(false) => {}
                        Err(e) => note(Err(e)),
                    }
                }
            }
            Err(e) => note(Err(e)),
        }
        match node.remove_bridge(&cfg.bridge).await {
            Ok(b) => report.bridge = b,
            Err(e) => note(Err(e)),
        }
    }
    if routes {
        match node.sync_routes(&[]).await {
            Ok(done) => {
                report.routes = done.removed.len();
                for (r, e) in done.failed {
                    tracing::warn!(route = %r, error = %e, "cannot remove route");
                    note(Err(e));
                }
            }
            Err(e) => note(Err(e)),
        }
    }
    match firewall::remove(&cfg.table) {
        Ok(t) => report.table = t,
        Err(e) => note(Err(e)),
    }
    match fs::remove_dir_all(&cfg.state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => note(Err(NetError::sys(
            "remove",
            cfg.state_dir.display().to_string(),
            e,
        ))),
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Opens the address book for `subnet`, or keeps the old subnet while
/// allocations hold addresses in it; an empty book of another subnet is
/// replaced. `None` when there is no usable book: missing (a first start,
/// or lost), or unreadable (torn by a power loss: it is not fsync'd, see
/// [`super::ipam`]), which is then moved aside to `ipam.json.unreadable`.
/// The caller rebuilds it from the namespaces that exist
/// ([`live_addresses`], [`rebuild_ipam`]).
fn load_ipam(cfg: &NetConfig, subnet: Ipv4Net) -> Result<Option<Ipam>, NetError> {
    let path = cfg.ipam_path();
    match path.try_exists() {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return Err(NetError::sys("look for", path.display().to_string(), e)),
    }
    match Ipam::open(&path, subnet) {
        Err(IpamError::SubnetMismatch { found, .. }) => {
            let old = Ipam::open(&path, found)?;
            if !old.is_empty() {
                tracing::error!(wanted = %subnet, kept = %found, live = old.len(), "the node subnet changed while allocations hold addresses; keeping the old subnet until they end");
                return Ok(Some(old));
            }
            drop(old);
            fs::remove_file(&path)
                .map_err(|e| NetError::sys("remove", path.display().to_string(), e))?;
            Ok(Some(Ipam::open(&path, subnet)?))
        }
        Err(IpamError::Corrupt { reason, .. }) => {
            let aside = path.with_extension("json.unreadable");
            fs::rename(&path, &aside)
                .map_err(|e| NetError::sys("move aside", path.display().to_string(), e))?;
            tracing::error!(path = %path.display(), moved_to = %aside.display(), %reason, "the address book is unreadable (torn by a power loss?); rebuilding it from the allocations' namespaces");
            Ok(None)
        }
        other => Ok(Some(other?)),
    }
}

/// A new address book for `subnet` holding `live` (see [`live_addresses`]);
/// what cannot be kept is reported.
fn rebuild_ipam(
    cfg: &NetConfig,
    subnet: Ipv4Net,
    live: Vec<(String, Ipv4Addr)>,
) -> Result<Ipam, NetError> {
    let (ipam, skipped) = Ipam::rebuild(cfg.ipam_path(), subnet, live)?;
    for n in skipped {
        tracing::error!(alloc_id = %n.alloc_id, ip = %n.ip, %subnet, reason = %n.reason, "a live address is not kept in the rebuilt address book");
    }
    if !ipam.is_empty() {
        tracing::warn!(count = ipam.len(), path = %cfg.ipam_path().display(), "address book rebuilt from the allocations' namespaces");
    }
    Ok(ipam)
}

/// The IPv4 address on `eth0` of every allocation namespace mounted in
/// `netns`, by allocation id (namespaces are named after allocations): the
/// addresses that are live. Empty after a reboot, when no namespace is
/// (a namespace file that is no mount is a dead one).
async fn live_addresses(netns: &NetnsDir) -> Result<Vec<(String, Ipv4Addr)>, NetError> {
    let mut live = Vec::new();
    for name in netns.list()? {
        if !is_netns_mount(&netns.path(&name)) {
            continue;
        }
        let ns = netns.open(&name)?;
        let inside = Netlink::connect_in(&ns).await?;
        for ip in inside.ipv4_addrs_of(super::CONTAINER_IF).await? {
            live.push((name.clone(), ip));
        }
    }
    Ok(live)
}

/// Runs `in_netns` on a new thread (named `drover-netns`, so that it may
/// end inside another namespace) and `here` on the calling thread at the
/// same time; both results, or the first error.
fn on_netns_thread<A: Send, B>(
    ns_path: &Path,
    in_netns: impl FnOnce() -> Result<A, NetError> + Send,
    here: impl FnOnce() -> Result<B, NetError>,
) -> Result<(A, B), NetError> {
    let label = || ns_path.display().to_string();
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("drover-netns".into())
            .spawn_scoped(s, in_netns)
            .map_err(|e| NetError::sys("spawn netns thread for", label(), e))?;
        let here = here();
        let there = thread.join().unwrap_or_else(|_| {
            Err(NetError::Thread {
                op: "create netns",
                target: label(),
            })
        });
        Ok((there?, here?))
    })
}

fn write_file(path: &Path, content: &str) -> Result<(), NetError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).map_err(|e| NetError::sys("write", tmp.display().to_string(), e))?;
    fs::set_permissions(
        &tmp,
        std::os::unix::fs::PermissionsExt::from_mode(crate::private_fs::PRIVATE_FILE_MODE),
    )
    .map_err(|e| NetError::sys("chmod 0600", tmp.display().to_string(), e))?;
    fs::rename(&tmp, path).map_err(|e| NetError::sys("rename", path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_dirs_differ_per_data_dir() {
        let a = netns_dir_for(Path::new("/var/lib/drover/a"));
        let b = netns_dir_for(Path::new("/var/lib/drover/b"));
        assert_ne!(a, b);
        assert!(a.starts_with("/run/drover"));
        assert_eq!(a, netns_dir_for(Path::new("/var/lib/drover/a")));
    }

    #[test]
    fn subnet_is_persisted_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = NetConfig::for_agent(dir.path(), "drover0", "n1");
        assert_eq!(saved_subnet(&cfg).expect("read"), None);
        fs::create_dir_all(&cfg.state_dir).expect("mkdir");
        write_file(&cfg.subnet_path(), "10.89.3.0/24\n").expect("write");
        assert_eq!(
            saved_subnet(&cfg).expect("read"),
            Some("10.89.3.0/24".parse().expect("valid"))
        );
    }

    fn open_ipam(cfg: &NetConfig, subnet: Ipv4Net) -> Result<Ipam, NetError> {
        match load_ipam(cfg, subnet)? {
            Some(ipam) => Ok(ipam),
            None => rebuild_ipam(cfg, subnet, Vec::new()),
        }
    }

    #[test]
    fn an_empty_book_of_another_subnet_is_replaced_a_live_one_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = NetConfig::for_agent(dir.path(), "drover0", "n1");
        let a: Ipv4Net = "10.89.1.0/24".parse().expect("valid");
        let b: Ipv4Net = "10.89.2.0/24".parse().expect("valid");
        let mut ipam = open_ipam(&cfg, a).expect("open");
        ipam.allocate("x").expect("allocate");
        drop(ipam);
        assert_eq!(open_ipam(&cfg, b).expect("open").subnet(), a);
        let mut ipam = open_ipam(&cfg, a).expect("open");
        ipam.release("x").expect("release");
        drop(ipam);
        assert_eq!(open_ipam(&cfg, b).expect("open").subnet(), b);
    }

    #[test]
    fn an_unreadable_book_is_moved_aside_and_rebuilt_from_live_addresses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = NetConfig::for_agent(dir.path(), "drover0", "n1");
        let net: Ipv4Net = "10.89.1.0/24".parse().expect("valid");
        let mut ipam = open_ipam(&cfg, net).expect("open");
        let a = ipam.allocate("a").expect("allocate");
        ipam.allocate("b").expect("allocate");
        drop(ipam);
        let whole = fs::read(cfg.ipam_path()).expect("read");
        // What a power loss may leave, the file not being fsync'd.
        for torn in [&b""[..], &whole[..whole.len() / 3], &[0u8; 40][..]] {
            fs::write(cfg.ipam_path(), torn).expect("write");
            assert!(
                load_ipam(&cfg, net).expect("no error").is_none(),
                "{torn:?} is to be rebuilt"
            );
            assert!(!cfg.ipam_path().exists());
            let aside = fs::read(cfg.state_dir.join("ipam.json.unreadable")).expect("kept");
            assert_eq!(aside, torn, "moved aside for inspection");
            // Say "a" is still live (the agent crashed, then the file broke).
            let mut ipam = rebuild_ipam(&cfg, net, vec![("a".into(), a)]).expect("rebuild");
            assert_eq!(ipam.get("a"), Some(a));
            assert_ne!(ipam.allocate("c").expect("allocate"), a);
            drop(ipam);
            assert_eq!(
                load_ipam(&cfg, net).expect("read").map(|i| i.len()),
                Some(2)
            );
        }
        // Missing: rebuilt as well (from nothing, after a reboot).
        fs::remove_file(cfg.ipam_path()).expect("remove");
        assert!(load_ipam(&cfg, net).expect("no error").is_none());
    }
}
