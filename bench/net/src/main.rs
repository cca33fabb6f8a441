//! Times what the agent adds for networking per allocation — namespace,
//! IPAM, veth pair with the peer made inside the namespace, address, `lo`
//! up, default route, `resolv.conf` and `hosts` — over N allocations, beside
//! the same setup done with `ip` commands in the same run.
//!
//! Root only. Everything happens inside a "host" network namespace this
//! program creates (so no bridge is made in the machine's own namespace) and
//! is removed before it exits, also on error. No traffic is sent.
//!
//! A third row times the same work as the agent really does it, through
//! `drover_agent::net::wiring::NodeNetwork::setup` (which also clears what
//! a crashed earlier attempt may have left, checks for an existing veth and
//! allocates the address): the per-allocation cost of the wired path.
//!
//! `cargo run --release -p drover-bench-net -- [N] [--no-ip]` (default 100).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::net::files::{self, SERVICE_SEARCH_DOMAIN};
use drover_agent::net::ipam::Ipam;
use drover_agent::net::wiring::{NetConfig, NetworkMode, NodeNetwork};
use drover_agent::net::{host_if_name, Bridge, Ipv4Net, Netlink, NetnsDir, Veth};

const BRIDGE: &str = "drover0";

/// Removes what the run made, in order, even when it fails.
struct Cleanup {
    allocs: NetnsDir,
    agent: NetnsDir,
    host: NetnsDir,
    ip_netns: Vec<String>,
    made_run_netns: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.ip_netns {
            if Path::new("/run/netns").join(name).exists() {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
        if self.made_run_netns
            && Path::new("/run/netns")
                .read_dir()
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        {
            let _ = nix::mount::umount2("/run/netns", nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir("/run/netns");
        }
        if let Err(e) = self.allocs.remove_all() {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = self.agent.remove_all() {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = self.host.remove_all() {
            eprintln!("cleanup: {e}");
        }
    }
}

#[derive(Default)]
struct Samples {
    netns: Vec<Duration>,
    ipam: Vec<Duration>,
    attach: Vec<Duration>,
    files: Vec<Duration>,
    total: Vec<Duration>,
    total_ipam: Vec<Duration>,
    ip_total: Vec<Duration>,
    agent: Vec<Duration>,
    agent_teardown: Vec<Duration>,
    teardown: Vec<Duration>,
    detach: Vec<Duration>,
    netns_remove: Vec<Duration>,
    ip_teardown: Vec<Duration>,
}

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().context("N must be a number")?,
        None => 100,
    };
    // `--no-ip`: only Drover's path (to see it without `ip` processes
    // running in between).
    let with_ip = std::env::args().nth(2).as_deref() != Some("--no-ip");
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root: it creates network namespaces"
    );
    ensure!(
        (1..=120).contains(&n),
        "N must be 1..=120 (two allocations per round in one /24)"
    );
    let tmp = tempfile::Builder::new()
        .prefix(&format!("drover-bench-net-{}-", std::process::id()))
        .tempdir()?;
    let mut cleanup = Cleanup {
        allocs: NetnsDir::new(tmp.path().join("netns")),
        agent: NetnsDir::new(tmp.path().join("agent-netns")),
        host: NetnsDir::new(tmp.path().join("host-netns")),
        ip_netns: Vec::new(),
        made_run_netns: !Path::new("/run/netns").exists(),
    };
    let host = cleanup.host.create("host")?;
    let allocs = &cleanup.allocs;
    let ip_names: Vec<String> = (0..n)
        .map(|i| format!("drvb-{}-{i}", std::process::id()))
        .collect();
    cleanup.ip_netns = ip_names.clone();
    let etc_root = tmp.path().join("etc");
    let samples = host.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(run(n, with_ip, allocs, &ip_names, tmp.path(), &etc_root))
    })??;
    drop(cleanup);
    print_table(n, &samples);
    Ok(())
}

async fn run(
    n: usize,
    with_ip: bool,
    allocs: &NetnsDir,
    ip_names: &[String],
    tmp: &Path,
    etc_root: &Path,
) -> Result<Samples> {
    let subnet: Ipv4Net = "10.89.1.0/24".parse()?;
    let net = Netlink::connect()?;
    let bridge = net
        .ensure_bridge(BRIDGE, Ipv4Addr::new(10, 89, 1, 1), 24)
        .await?;
    let mut ipam = Ipam::open(tmp.join("ipam.json"), subnet)?;
    let mut s = Samples::default();
    allocs.init()?;
    let mut held = Vec::new();
    // One path after the other: interleaved, each would pay for the
    // kernel work the other leaves behind (the `ip` processes' exits,
    // deferred namespace work), which measures neither.
    for i in 0..n {
        let (netns, id) =
            drover_setup(&net, &bridge, allocs, &mut ipam, etc_root, i, &mut s).await?;
        held.push((netns, id));
    }
    // The agent's own path, on a bridge and subnet of its own (bridge,
    // forwarding and firewall table are set up once, outside the timing).
    let agent = NodeNetwork::init(
        NetConfig {
            bridge: "drover1".into(),
            state_dir: tmp.join("agent-net"),
            netns_dir: tmp.join("agent-netns"),
            table: "drover-bench".into(),
            ip_forward: "/proc/sys/net/ipv4/ip_forward".into(),
            cluster_cidr: Some("10.89.0.0/16".parse()?),
            dns_zone: "drover.internal".into(),
        },
        "10.89.2.0/24".parse()?,
    )
    .await?;
    for i in 0..n {
        let id = format!("agent-{i}");
        let t = Instant::now();
        agent.setup(&id, &id, NetworkMode::Bridge, true).await?;
        s.agent.push(t.elapsed());
    }
    if with_ip {
        for (i, name) in ip_names.iter().enumerate() {
            ip_setup(&bridge, &mut ipam, etc_root, name, i, &mut s)?;
        }
    }
    for (i, (netns, id)) in held.into_iter().enumerate() {
        let t = Instant::now();
        drop(netns);
        ensure!(
            net.detach(&host_if_name(&id)).await?,
            "veth of {id} missing"
        );
        let t1 = Instant::now();
        ensure!(allocs.remove(&format!("b{i}"))?, "netns b{i} missing");
        let t2 = Instant::now();
        ipam.release(&id)?;
        s.teardown.push(t.elapsed());
        s.detach.push(t1 - t);
        s.netns_remove.push(t2 - t1);
        if !with_ip {
            continue;
        }
        let t = Instant::now();
        ip(&["link", "del", &format!("vb{i}")])?;
        ip(&["netns", "del", &ip_names[i]])?;
        ipam.release(&format!("ip-{i}"))?;
        s.ip_teardown.push(t.elapsed());
    }
    for i in 0..n {
        let t = Instant::now();
        agent.teardown(&format!("agent-{i}")).await?;
        s.agent_teardown.push(t.elapsed());
    }
    ensure!(ipam.is_empty(), "IPAM entries left");
    net.remove_bridge(BRIDGE).await?;
    net.remove_bridge("drover1").await?;
    drover_agent::net::firewall::remove("drover-bench")?;
    Ok(s)
}

async fn drover_setup(
    net: &Netlink,
    bridge: &Bridge,
    allocs: &NetnsDir,
    ipam: &mut Ipam,
    etc_root: &Path,
    i: usize,
    s: &mut Samples,
) -> Result<(drover_agent::net::Netns, String)> {
    let id = format!("bench-{i}");
    let etc = etc_root.join(&id);
    std::fs::create_dir_all(&etc)?;
    let t0 = Instant::now();
    let netns = allocs.create(&format!("b{i}"))?;
    let t1 = Instant::now();
    let ip = ipam.allocate(&id)?;
    let t2 = Instant::now();
    let spec = Veth {
        host_if: host_if_name(&id),
        ip,
        prefix: bridge.prefix,
        gateway: bridge.ip,
    };
    net.attach(bridge, &netns, &spec).await?;
    let t3 = Instant::now();
    write_etc(&etc, bridge.ip, &id, ip)?;
    let t4 = Instant::now();
    s.netns.push(t1 - t0);
    s.ipam.push(t2 - t1);
    s.attach.push(t3 - t2);
    s.files.push(t4 - t3);
    s.total.push((t1 - t0) + (t3 - t2) + (t4 - t3));
    s.total_ipam.push(t4 - t0);
    Ok((netns, id))
}

fn ip_setup(
    bridge: &Bridge,
    ipam: &mut Ipam,
    etc_root: &Path,
    ns: &str,
    i: usize,
    s: &mut Samples,
) -> Result<()> {
    let id = format!("ip-{i}");
    let etc = etc_root.join(&id);
    std::fs::create_dir_all(&etc)?;
    let veth = format!("vb{i}");
    let addr = ipam.allocate(&id)?;
    let t0 = Instant::now();
    ip(&["netns", "add", ns])?;
    let cidr = format!("{addr}/{}", bridge.prefix);
    let gw = bridge.ip.to_string();
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["link", "set", &veth, "master", &bridge.name, "up"])?;
    ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &gw])?;
    write_etc(&etc, bridge.ip, &id, addr)?;
    s.ip_total.push(t0.elapsed());
    Ok(())
}

fn write_etc(etc: &Path, dns: Ipv4Addr, id: &str, ip: Ipv4Addr) -> Result<()> {
    let resolv = files::resolv_conf(dns, &[SERVICE_SEARCH_DOMAIN], files::TASK_RESOLVER_OPTIONS)?;
    let hosts = files::hosts(id, ip, &[])?;
    files::write_etc(etc, &resolv, &hosts)?;
    Ok(())
}

/// Runs `ip ARGS` in the calling thread's network namespace.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn stats(v: &[Duration]) -> (f64, f64, f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        let idx = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(idx).copied().unwrap_or(f64::NAN)
    };
    (
        pick(0.5),
        pick(0.95),
        ms.first().copied().unwrap_or(f64::NAN),
        ms.last().copied().unwrap_or(f64::NAN),
    )
}

#[allow(clippy::print_stdout)] // the table is this program's output
fn print_table(n: usize, s: &Samples) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "per-allocation network setup, N = {n} (ms); load average at the end: {}\n",
        load.join(" ")
    );
    println!("| path | median | p95 | min | max |");
    println!("|---|---:|---:|---:|---:|");
    let rows: [(&str, &[Duration]); 13] = [
        (
            "**drover** (netns + veth/addr/lo/route + resolv.conf/hosts)",
            &s.total,
        ),
        ("  netns create (unshare + bind mount)", &s.netns),
        (
            "  attach (veth in netns, bridge, eth0 up + addr, lo up, route)",
            &s.attach,
        ),
        ("  resolv.conf + hosts", &s.files),
        (
            "  (IPAM allocate, one line appended: not in the row above)",
            &s.ipam,
        ),
        ("drover incl. IPAM allocate", &s.total_ipam),
        (
            "**agent path** (`NodeNetwork::setup`: all of the above as the agent runs it)",
            &s.agent,
        ),
        (
            "**ip commands** (7 `ip` runs + resolv.conf/hosts)",
            &s.ip_total,
        ),
        (
            "drover teardown (detach + netns remove + IPAM release)",
            &s.teardown,
        ),
        ("  detach (delete host veth)", &s.detach),
        ("  netns remove (umount + unlink)", &s.netns_remove),
        (
            "agent teardown (`NodeNetwork::teardown`)",
            &s.agent_teardown,
        ),
        (
            "ip teardown (`ip link del` + `ip netns del`)",
            &s.ip_teardown,
        ),
    ];
    for (name, v) in rows {
        if v.is_empty() {
            continue;
        }
        let (med, p95, min, max) = stats(v);
        println!("| {name} | {med:.2} | {p95:.2} | {min:.2} | {max:.2} |");
    }
}
