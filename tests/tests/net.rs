//! Root-only tests of the node networking library (`drover_agent::net`).
//!
//! Nothing here touches the machine's own network: each test makes a "host"
//! network namespace of its own and runs the library inside it (a thread
//! that entered it, with a current-thread tokio runtime), so the bridge,
//! veths and routes all live and die in namespaces the test created. Traffic
//! goes only between addresses inside those namespaces. A [`TestHost`]
//! guard removes every namespace (and with them every interface and route)
//! even when a test fails.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::net::files::{self, SERVICE_SEARCH_DOMAIN};
use drover_agent::net::ipam::Ipam;
use drover_agent::net::rtnetlink::packet_route::address::AddressAttribute;
use drover_agent::net::rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use drover_agent::net::{
    host_if_name, Bridge, Ipv4Net, NetError, Netlink, Netns, NetnsDir, PeerRoute, Veth,
    RTPROT_DROVER,
};
use tempfile::TempDir;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

const BRIDGE: &str = "drover0";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn subnet() -> Ipv4Net {
    "10.89.1.0/24".parse().expect("valid subnet")
}

fn gateway() -> Ipv4Addr {
    Ipv4Addr::new(10, 89, 1, 1)
}

/// A unique suffix per test in this run: pid and a counter.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One test's world: a private "host" network namespace, a directory for
/// allocation namespaces, and IPAM state, all removed on drop.
struct TestHost {
    host_dir: NetnsDir,
    allocs: Arc<NetnsDir>,
    host: Option<Netns>,
    tmp: TempDir,
}

impl TestHost {
    fn new() -> Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the networking tests need root (network namespaces, mounts)"
        );
        let tmp = tempfile::Builder::new()
            .prefix(&format!("drover-net-{}-", unique()))
            .tempdir()
            .context("temp dir")?;
        let host_dir = NetnsDir::new(tmp.path().join("host-netns"));
        let allocs = Arc::new(NetnsDir::new(tmp.path().join("netns")));
        let mut me = Self {
            host_dir,
            allocs,
            host: None,
            tmp,
        };
        me.host = Some(me.host_dir.create("host").context("create host netns")?);
        Ok(me)
    }

    fn host(&self) -> &Netns {
        self.host
            .as_ref()
            .expect("host netns exists while the guard lives")
    }

    fn ipam_path(&self) -> PathBuf {
        self.tmp.path().join("ipam.json")
    }

    /// Runs `f` on a thread inside the host namespace, with a
    /// current-thread runtime.
    fn block_on<Fut, R>(&self, fut: Fut) -> R
    where
        Fut: Future<Output = R> + Send,
        R: Send,
    {
        self.host()
            .run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(fut)
            })
            .expect("enter the host netns")
    }

    /// `ip ARGS` run inside the namespace mounted at `ns`.
    fn ip(&self, ns: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .arg("ip")
            .args(args)
            .output()
            .context("run nsenter ip")?;
        ensure!(
            out.status.success(),
            "ip {args:?} in {}: {}",
            ns.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn host_ip(&self, args: &[&str]) -> Result<String> {
        self.ip(&self.host_dir.path("host"), args)
    }

    /// Mount entries under this test's directory (namespace bind mounts).
    fn mounts(&self) -> usize {
        let root = self.tmp.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&root))
            .count()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Allocation namespaces first, then the host namespace: its bridge,
        // veths and routes go with it.
        if let Err(e) = self.allocs.remove_all() {
            eprintln!("cleanup: {e}");
        }
        self.host = None;
        if let Err(e) = self.host_dir.remove_all() {
            eprintln!("cleanup: {e}");
        }
    }
}

fn alloc_net(alloc_id: &str, ip: Ipv4Addr) -> Veth {
    Veth {
        host_if: host_if_name(alloc_id),
        ip,
        prefix: 24,
        gateway: gateway(),
    }
}

/// Binds a listener in `ns` and returns it (it stays in `ns`).
fn listen_in(ns: &Netns, ip: Ipv4Addr) -> Result<TcpListener> {
    Ok(ns.run(|| TcpListener::bind((ip, 0)))??)
}

/// Connects from inside `ns` to `to`, sends `msg`, returns the reply.
fn talk_from(ns: &Netns, to: SocketAddr, msg: &[u8]) -> Result<Vec<u8>> {
    let mut stream = ns
        .run(|| TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))?
        .with_context(|| format!("connect to {to} from {}", ns.label()))?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.write_all(msg)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// Accepts `n` connections, echoes each one's bytes back prefixed with
/// `ok:`, and returns the peers' addresses.
fn serve(listener: TcpListener, n: usize) -> std::thread::JoinHandle<Result<Vec<Ipv4Addr>>> {
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..n {
            let (mut s, peer) = listener.accept()?;
            s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            s.write_all(b"ok:")?;
            s.write_all(&buf)?;
            match peer {
                SocketAddr::V4(p) => peers.push(*p.ip()),
                SocketAddr::V6(p) => bail!("unexpected IPv6 peer {p}"),
            }
        }
        Ok(peers)
    })
}

/// The IPv4 addresses on `eth0` and the default gateway, read over netlink
/// inside `ns`.
async fn inside_view(ns: &Netns) -> Result<(Vec<(Ipv4Addr, u8)>, Option<Ipv4Addr>)> {
    let nl = Netlink::connect_in(ns).await?;
    let eth0 = nl
        .link_by_name("eth0")
        .await?
        .context("no eth0 inside")?
        .header
        .index;
    let addrs: Vec<_> = Box::pin(
        nl.handle()
            .address()
            .get()
            .set_link_index_filter(eth0)
            .execute(),
    )
    .collect::<Result<Vec<_>, _>>()
    .await?
    .into_iter()
    .filter(|a| a.header.index == eth0)
    .filter_map(|a| {
        a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some((*ip, a.header.prefix_len)),
            _ => None,
        })
    })
    .collect();
    let routes: Vec<_> = Box::pin(
        nl.handle()
            .route()
            .get(drover_agent::net::rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute(),
    )
    .collect::<Result<Vec<_>, _>>()
    .await?;
    let default_gw = routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0 && r.header.table == 254)
        .find_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            })
        });
    Ok((addrs, default_gw))
}

fn count_lines(s: &str) -> usize {
    s.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn two_allocations_talk_over_the_bridge() -> Result<()> {
    let t = TestHost::new()?;
    let ns_a = t.allocs.create("a")?;
    let ns_b = t.allocs.create("b")?;
    let mut ipam = Ipam::open(t.ipam_path(), subnet())?;
    let ip_a = ipam.allocate("alloc-a")?;
    let ip_b = ipam.allocate("alloc-b")?;
    ensure!(ip_a != ip_b && ip_a != gateway() && ip_b != gateway());

    let bridge = t.block_on(async {
        let net = Netlink::connect()?;
        let bridge = net.ensure_bridge(BRIDGE, gateway(), 24).await?;
        // A second call reuses it.
        let again = net.ensure_bridge(BRIDGE, gateway(), 24).await?;
        ensure!(
            again == bridge,
            "bridge recreated: {bridge:?} then {again:?}"
        );
        net.attach(&bridge, &ns_a, &alloc_net("alloc-a", ip_a))
            .await?;
        net.attach(&bridge, &ns_b, &alloc_net("alloc-b", ip_b))
            .await?;
        anyhow::Ok(bridge)
    })?;

    // State, as `ip` sees it.
    let br = t.host_ip(&["-o", "-4", "addr", "show", "dev", BRIDGE])?;
    ensure!(br.contains("10.89.1.1/24"), "bridge address: {br}");
    let ports = t.host_ip(&["-o", "link", "show", "master", BRIDGE])?;
    for id in ["alloc-a", "alloc-b"] {
        ensure!(
            ports.contains(&host_if_name(id)),
            "{id} not on the bridge: {ports}"
        );
    }
    ensure!(count_lines(&ports) == 2, "bridge ports: {ports}");
    for (name, ip) in [("a", ip_a), ("b", ip_b)] {
        let ns = t.allocs.path(name);
        let addr = t.ip(&ns, &["-o", "-4", "addr", "show", "dev", "eth0"])?;
        ensure!(addr.contains(&format!("{ip}/24")), "{name} eth0: {addr}");
        let route = t.ip(&ns, &["route", "show", "default"])?;
        ensure!(
            route.contains("via 10.89.1.1 dev eth0"),
            "{name} route: {route}"
        );
        let lo = t.ip(&ns, &["-o", "link", "show", "lo"])?;
        ensure!(lo.contains("UP"), "{name} lo: {lo}");
        let links = t.ip(&ns, &["-o", "link", "show"])?;
        ensure!(count_lines(&links) == 2, "{name} links: {links}");
    }

    // TCP from b to a, over the bridge.
    let listener = listen_in(&ns_a, ip_a)?;
    let port = listener.local_addr()?.port();
    let server = serve(listener, 1);
    let reply = talk_from(&ns_b, SocketAddr::from((ip_a, port)), b"hello from b")?;
    let peers = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(
        reply == b"ok:hello from b",
        "reply {:?}",
        String::from_utf8_lossy(&reply)
    );
    ensure!(peers == [ip_b], "peer was {peers:?}, not {ip_b}");

    // resolv.conf and hosts for the allocation.
    let etc = t.tmp.path().join("etc-a");
    std::fs::create_dir_all(&etc)?;
    files::write_etc(
        &etc,
        &files::resolv_conf(bridge.ip, &[SERVICE_SEARCH_DOMAIN], &[])?,
        &files::hosts("alloc-a", ip_a, &[])?,
    )?;
    ensure!(std::fs::read_to_string(etc.join("resolv.conf"))?.contains("nameserver 10.89.1.1\n"));

    // Detach: the host veth and its peer are gone, nothing else changes.
    t.block_on(async {
        let net = Netlink::connect()?;
        ensure!(
            net.detach(&host_if_name("alloc-a")).await?,
            "detach found no veth"
        );
        ensure!(
            !net.detach(&host_if_name("alloc-a")).await?,
            "second detach found one"
        );
        anyhow::Ok(())
    })?;
    ipam.release("alloc-a")?;
    let links_a = t.ip(&t.allocs.path("a"), &["-o", "link", "show"])?;
    ensure!(
        count_lines(&links_a) == 1 && links_a.contains("lo"),
        "a after detach: {links_a}"
    );
    let ports = t.host_ip(&["-o", "link", "show", "master", BRIDGE])?;
    ensure!(
        count_lines(&ports) == 1,
        "bridge ports after detach: {ports}"
    );

    t.block_on(async {
        let net = Netlink::connect()?;
        ensure!(net.remove_bridge(BRIDGE).await?, "bridge missing");
        ensure!(!net.remove_bridge(BRIDGE).await?, "bridge still there");
        anyhow::Ok(())
    })?;
    let bridges = t.host_ip(&["-o", "link", "show", "type", "bridge"])?;
    ensure!(bridges.trim().is_empty(), "bridges left: {bridges}");
    Ok(())
}

#[test]
fn hundred_parallel_allocations_get_distinct_working_addresses() -> Result<()> {
    const N: usize = 100;
    let t = TestHost::new()?;
    let ipam = Arc::new(Mutex::new(Ipam::open(t.ipam_path(), subnet())?));
    let mut namespaces = Vec::new();
    for i in 0..N {
        namespaces.push(t.allocs.create(&format!("p{i}"))?);
    }
    let started = Instant::now();
    let ips: Vec<Ipv4Addr> = t.block_on(async {
        let net = Arc::new(Netlink::connect()?);
        let bridge: Arc<Bridge> = Arc::new(net.ensure_bridge(BRIDGE, gateway(), 24).await?);
        let mut set = JoinSet::new();
        for (i, ns) in namespaces.iter().enumerate() {
            let (net, bridge, ipam) = (net.clone(), bridge.clone(), ipam.clone());
            let ns = ns.try_clone()?;
            set.spawn(async move {
                let id = format!("par-{i}");
                let ip = ipam.lock().expect("ipam lock").allocate(&id)?;
                net.attach(&bridge, &ns, &alloc_net(&id, ip)).await?;
                anyhow::Ok((i, ip))
            });
        }
        let mut ips = vec![Ipv4Addr::UNSPECIFIED; N];
        while let Some(done) = set.join_next().await {
            let (i, ip) = done??;
            ips[i] = ip;
        }
        // Each namespace, seen from inside: its address and its route.
        for (ns, ip) in namespaces.iter().zip(&ips) {
            let (addrs, gw) = inside_view(ns).await?;
            ensure!(
                addrs == [(*ip, 24)],
                "{}: addresses {addrs:?}, want {ip}/24",
                ns.label()
            );
            ensure!(gw == Some(gateway()), "{}: default via {gw:?}", ns.label());
        }
        anyhow::Ok(ips)
    })?;
    let attach_time = started.elapsed();
    let distinct: BTreeSet<_> = ips.iter().collect();
    ensure!(
        distinct.len() == N,
        "only {} distinct addresses",
        distinct.len()
    );
    ensure!(ips
        .iter()
        .all(|ip| subnet().contains(*ip) && *ip != gateway()));

    // Every allocation reaches the host side of the bridge from its own
    // address: a listener on the bridge IP in the host namespace.
    let listener = listen_in(t.host(), gateway())?;
    let port = listener.local_addr()?.port();
    let server = serve(listener, N);
    for (i, ns) in namespaces.iter().enumerate() {
        let reply = talk_from(
            ns,
            SocketAddr::from((gateway(), port)),
            format!("{i}").as_bytes(),
        )?;
        ensure!(
            reply == format!("ok:{i}").as_bytes(),
            "allocation {i}: reply {reply:?}"
        );
    }
    let peers = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(peers == ips, "peers did not come from their own addresses");

    let veths = t.host_ip(&["-o", "link", "show", "type", "veth"])?;
    ensure!(count_lines(&veths) == N, "{} veths", count_lines(&veths));
    eprintln!("{N} parallel attaches took {attach_time:?}");
    Ok(())
}

#[test]
fn five_hundred_cycles_leave_nothing_behind() -> Result<()> {
    const CYCLES: usize = 500;
    const WORKERS: usize = 4;
    let t = TestHost::new()?;
    let ipam = Arc::new(Mutex::new(Ipam::open(t.ipam_path(), subnet())?));
    t.allocs.init()?;
    let mounts_before = t.mounts();
    t.block_on(async {
        Netlink::connect()?
            .ensure_bridge(BRIDGE, gateway(), 24)
            .await?;
        anyhow::Ok(())
    })?;
    let routes_before = t.host_ip(&["-4", "route", "show", "table", "all"])?;
    let started = Instant::now();
    t.block_on(async {
        let net = Arc::new(Netlink::connect()?);
        let bridge = Arc::new(net.ensure_bridge(BRIDGE, gateway(), 24).await?);
        let mut set = JoinSet::new();
        for w in 0..WORKERS {
            let (net, bridge, ipam) = (net.clone(), bridge.clone(), ipam.clone());
            let dir = t.allocs.clone();
            set.spawn(async move {
                for c in (w..CYCLES).step_by(WORKERS) {
                    let id = format!("cycle-{c}");
                    let name = format!("c{c}");
                    let ns = dir.create(&name)?;
                    let ip = ipam.lock().expect("ipam lock").allocate(&id)?;
                    let spec = alloc_net(&id, ip);
                    net.attach(&bridge, &ns, &spec).await?;
                    ensure!(
                        net.detach(&spec.host_if).await?,
                        "{id}: veth vanished early"
                    );
                    drop(ns);
                    ensure!(dir.remove(&name)?, "{name}: namespace vanished early");
                    ensure!(ipam.lock().expect("ipam lock").release(&id)? == Some(ip));
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed();

    // Counted: veths, namespaces (files and mounts), routes, IPAM entries.
    let veths = t.host_ip(&["-o", "link", "show", "type", "veth"])?;
    ensure!(count_lines(&veths) == 0, "veths left: {veths}");
    let ports = t.host_ip(&["-o", "link", "show", "master", BRIDGE])?;
    ensure!(count_lines(&ports) == 0, "bridge ports left: {ports}");
    let left = t.allocs.list()?;
    ensure!(left.is_empty(), "namespaces left: {left:?}");
    ensure!(
        t.mounts() == mounts_before,
        "mounts: {} before, {} after",
        mounts_before,
        t.mounts()
    );
    let routes_after = t.host_ip(&["-4", "route", "show", "table", "all"])?;
    ensure!(
        routes_after == routes_before,
        "routes changed:\n{routes_before}\n---\n{routes_after}"
    );
    ensure!(
        ipam.lock().expect("ipam lock").is_empty(),
        "IPAM entries left"
    );
    let reopened = Ipam::open(t.ipam_path(), subnet())?;
    ensure!(reopened.is_empty(), "IPAM entries left on disk");
    eprintln!("{CYCLES} attach/detach cycles took {elapsed:?}");
    Ok(())
}

#[test]
fn route_sync_touches_only_drover_routes() -> Result<()> {
    let t = TestHost::new()?;
    let r = |s: &str, last: u8| PeerRoute {
        subnet: s.parse().expect("valid subnet"),
        via: Ipv4Addr::new(10, 89, 1, last),
    };
    t.block_on(async {
        let net = Netlink::connect()?;
        // A bridge left with another address is re-addressed, not duplicated.
        let old = net
            .ensure_bridge(BRIDGE, Ipv4Addr::new(10, 89, 7, 1), 24)
            .await?;
        let new = net.ensure_bridge(BRIDGE, gateway(), 24).await?;
        ensure!(old.index == new.index, "bridge recreated");
        anyhow::Ok(())
    })?;
    let addrs = t.host_ip(&["-o", "-4", "addr", "show", "dev", BRIDGE])?;
    ensure!(
        count_lines(&addrs) == 1 && addrs.contains("10.89.1.1/24"),
        "bridge addresses: {addrs}"
    );
    // Someone else's route, which no sync may touch.
    t.host_ip(&[
        "route",
        "add",
        "10.200.0.0/24",
        "via",
        "10.89.1.250",
        "proto",
        "static",
    ])?;
    let foreign = t.host_ip(&["route", "show", "10.200.0.0/24"])?;

    let first = t.block_on(async {
        let net = Netlink::connect()?;
        anyhow::Ok(
            net.sync_routes(&[r("10.89.2.0/24", 2), r("10.89.3.0/24", 3)])
                .await?,
        )
    })?;
    ensure!(
        first.added.len() == 2 && first.failed.is_empty(),
        "{first:?}"
    );
    let ours = t.host_ip(&["route", "show", "proto", &RTPROT_DROVER.to_string()])?;
    ensure!(ours.contains("10.89.2.0/24 via 10.89.1.2"), "{ours}");
    ensure!(ours.contains("10.89.3.0/24 via 10.89.1.3"), "{ours}");

    let second = t.block_on(async {
        let net = Netlink::connect()?;
        let changes = net
            .sync_routes(&[
                r("10.89.3.0/24", 33),
                r("10.89.4.0/24", 4),
                r("10.200.0.0/24", 5),
            ])
            .await?;
        // In sync now: nothing to do.
        let again = net
            .sync_routes(&[
                r("10.89.3.0/24", 33),
                r("10.89.4.0/24", 4),
                r("10.200.0.0/24", 5),
            ])
            .await?;
        ensure!(again.added.is_empty() && again.removed.is_empty() && again.changed.is_empty());
        anyhow::Ok(changes)
    })?;
    ensure!(second.removed == [r("10.89.2.0/24", 2)], "{second:?}");
    ensure!(second.changed == [r("10.89.3.0/24", 33)], "{second:?}");
    ensure!(second.added == [r("10.89.4.0/24", 4)], "{second:?}");
    ensure!(second.conflicts == [r("10.200.0.0/24", 5)], "{second:?}");
    ensure!(
        t.host_ip(&["route", "show", "10.200.0.0/24"])? == foreign,
        "foreign route changed"
    );

    let bad = t.block_on(async {
        let net = Netlink::connect()?;
        // 192.0.2.1 is not on any link of the test host: refused, and named.
        let unreachable = PeerRoute {
            subnet: "10.89.9.0/24".parse()?,
            via: Ipv4Addr::new(192, 0, 2, 1),
        };
        let changes = net.sync_routes(&[unreachable]).await?;
        anyhow::Ok(changes)
    })?;
    ensure!(bad.removed.len() == 2, "{bad:?}");
    ensure!(bad.failed.len() == 1, "{bad:?}");
    let msg = bad.failed[0].1.to_string();
    ensure!(
        msg.contains("add route") && msg.contains("10.89.9.0/24 via 192.0.2.1"),
        "{msg}"
    );

    let last = t.block_on(async { anyhow::Ok(Netlink::connect()?.sync_routes(&[]).await?) })?;
    ensure!(last.failed.is_empty(), "{last:?}");
    let ours = t.host_ip(&["route", "show", "proto", &RTPROT_DROVER.to_string()])?;
    ensure!(ours.trim().is_empty(), "drover routes left: {ours}");
    ensure!(
        t.host_ip(&["route", "show", "10.200.0.0/24"])? == foreign,
        "foreign route changed"
    );
    Ok(())
}

#[test]
fn failed_attach_leaves_nothing_and_names_what_failed() -> Result<()> {
    let t = TestHost::new()?;
    let ns = t.allocs.create("a")?;
    let err = t.block_on(async {
        let net = Netlink::connect()?;
        let bridge = net.ensure_bridge(BRIDGE, gateway(), 24).await?;
        net.attach(
            &bridge,
            &ns,
            &alloc_net("first", Ipv4Addr::new(10, 89, 1, 10)),
        )
        .await?;
        // The namespace has an eth0 already: the second veth cannot be made.
        let second = net
            .attach(
                &bridge,
                &ns,
                &alloc_net("second", Ipv4Addr::new(10, 89, 1, 11)),
            )
            .await;
        anyhow::Ok(second.expect_err("second attach into one namespace must fail"))
    })?;
    let msg = err.to_string();
    ensure!(matches!(err, NetError::Netlink { .. }), "{err:?}");
    ensure!(
        msg.contains(&host_if_name("second")) && msg.contains("add veth"),
        "{msg}"
    );
    let veths = t.host_ip(&["-o", "link", "show", "type", "veth"])?;
    ensure!(
        count_lines(&veths) == 1 && veths.contains(&host_if_name("first")),
        "{veths}"
    );

    // A gateway outside the subnet is refused before anything is made.
    let err = t.block_on(async {
        let net = Netlink::connect()?;
        let bridge = net.ensure_bridge(BRIDGE, gateway(), 24).await?;
        let mut spec = alloc_net("third", Ipv4Addr::new(10, 89, 1, 12));
        spec.gateway = Ipv4Addr::new(10, 89, 2, 1);
        anyhow::Ok(
            net.attach(&bridge, &ns, &spec)
                .await
                .expect_err("bad gateway"),
        )
    })?;
    ensure!(matches!(err, NetError::Invalid { .. }), "{err:?}");
    let veths = t.host_ip(&["-o", "link", "show", "type", "veth"])?;
    ensure!(count_lines(&veths) == 1, "{veths}");

    // A name that is taken by something that is not a bridge.
    t.host_ip(&[
        "link",
        "add",
        "notabridge",
        "type",
        "veth",
        "peer",
        "name",
        "nab-peer",
    ])?;
    let err = t.block_on(async {
        let net = Netlink::connect()?;
        anyhow::Ok(
            net.ensure_bridge("notabridge", gateway(), 24)
                .await
                .expect_err("not a bridge"),
        )
    })?;
    ensure!(err.to_string().contains("notabridge"), "{err}");
    Ok(())
}

#[test]
fn attaches_a_namespace_given_by_proc_path() -> Result<()> {
    /// Kills the child by pid when dropped.
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let t = TestHost::new()?;
    // A process in a network namespace of its own, as the runtime makes.
    let child = Kill(
        Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .spawn()?,
    );
    let pid = child.0.id();
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    while std::fs::read_link(&path)? == ours {
        ensure!(
            Instant::now() < deadline,
            "child {pid} never entered a new netns"
        );
        std::thread::yield_now();
    }
    let ns = Netns::open(&path)?;
    let ip = Ipv4Addr::new(10, 89, 1, 20);
    t.block_on(async {
        let net = Netlink::connect()?;
        let bridge = net.ensure_bridge(BRIDGE, gateway(), 24).await?;
        net.attach(&bridge, &ns, &alloc_net("by-pid", ip)).await?;
        let (addrs, gw) = inside_view(&ns).await?;
        ensure!(
            addrs == [(ip, 24)] && gw == Some(gateway()),
            "{addrs:?} {gw:?}"
        );
        ensure!(net.detach(&host_if_name("by-pid")).await?);
        anyhow::Ok(())
    })?;
    let links = t.ip(&path, &["-o", "link", "show"])?;
    ensure!(
        count_lines(&links) == 1,
        "left in the child's netns: {links}"
    );
    Ok(())
}

#[test]
fn netns_dir_creates_lists_and_removes() -> Result<()> {
    let t = TestHost::new()?;
    let before = t.mounts();
    let a = t.allocs.create("one")?;
    ensure!(
        t.allocs.create("one").is_err(),
        "created the same name twice"
    );
    let _b = t.allocs.create("two")?;
    ensure!(t.allocs.list()? == ["one", "two"]);
    let ino = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    ensure!(
        ino(&t.allocs.path("one"))? != ino(&t.allocs.path("two"))?,
        "same namespace twice"
    );
    let reopened = t.allocs.open("one")?;
    ensure!(reopened.label().ends_with("one"));
    drop((a, reopened));
    ensure!(t.allocs.remove("one")?);
    ensure!(!t.allocs.remove("one")?);
    ensure!(t.allocs.list()? == ["two"]);
    ensure!(t.allocs.create("../escape").is_err());
    ensure!(t.mounts() > before, "namespace mounts not visible");
    Ok(())
}
