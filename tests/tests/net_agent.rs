//! Allocation networking wired into the agent, through a real `drover dev`
//! (each cluster with a bridge and a /24 of its own, see
//! [`DevCluster::start_with`]) and, for the start/stop cycles, through the
//! agent's networking layer ([`NodeNetwork`]) inside a network namespace
//! the test makes.
//!
//! Traffic goes only to addresses inside namespaces these tests (or the
//! clusters they start) made, and to the bridge address of such a cluster.
//! Tasks use the host's busybox (`nc`) through the read-only host view.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_agent::net::ipam::Ipam;
use drover_agent::net::wiring::{NetConfig, NetworkMode, NodeNetwork};
use drover_agent::net::{host_if_name, Ipv4Net, Netlink, NetnsDir};
use drover_tests::checks::{agent_converged, arr, batch, str_of, wait_running, WAIT};
use drover_tests::{poll_until, run_drover, unique_name, DevCluster};
use serde_json::Value;

/// The port the test services listen on inside their allocations.
const PORT: u16 = 7000;

/// A service whose tasks print their `/etc/resolv.conf`, `/etc/hosts` and
/// addresses, then answer every TCP connection on [`PORT`] with their host
/// name (`<job>-main-<index>`).
fn echo_service(name: &str, count: u32) -> String {
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
count = {count}

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", "cat /etc/resolv.conf /etc/hosts; ip -4 -o addr show; exec busybox nc -ll -p {PORT} -e /bin/hostname"]
kill_timeout_ms = 200
resources = {{ cpu_millis = 10, memory_mb = 16 }}
"#
    )
}

fn run_job(c: &DevCluster, file: &str, text: &str) {
    let path = c.write_file(file, text);
    c.cli_ok(&["job", "run", "--detach", path.to_str().unwrap()]);
}

/// The allocations of `job` once `n` of them run and each reports its IP.
fn running_with_ips(c: &DevCluster, job: &str, n: usize) -> Vec<Value> {
    wait_running(c, job, n);
    poll_until(
        &format!("{n} allocations of {job} with an IP"),
        WAIT,
        || {
            let s = c.cli_json(&["job", "status", job]);
            let allocs = arr(&s["allocations"]).clone();
            (allocs.len() == n && allocs.iter().all(|a| !str_of(a, "ip").is_empty()))
                .then_some(allocs)
        },
    )
}

fn ip_of(alloc: &Value) -> Ipv4Addr {
    str_of(alloc, "ip").parse().expect("an IPv4 address")
}

fn stdout_of(c: &DevCluster, alloc_id: &str) -> String {
    let path = c
        .agent_dir()
        .join("allocs")
        .join(alloc_id)
        .join("app")
        .join("stdout.log");
    std::fs::read_to_string(&path).unwrap_or_default()
}

/// What a TCP connection to `ip:port` answers, or `None` when it cannot be
/// made within a few seconds.
fn ask(ip: Ipv4Addr, port: u16) -> Option<String> {
    let addr = SocketAddr::from((ip, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.trim().to_owned())
}

/// The network state of a cluster's agent that must be empty once its
/// allocations are gone: namespaces, host veths on its bridge, IPAM
/// entries.
fn leftovers(c: &DevCluster) -> (Vec<String>, Vec<String>, usize) {
    let netns = std::fs::read_dir(c.netns_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // Read-only: the agent appends to the book while it runs.
    let ipam = Ipam::load(c.agent_dir().join("net").join("ipam.json"))
        .expect("a readable address book")
        .map_or(0, |ipam| ipam.len());
    (netns, bridge_ports(c.bridge()), ipam)
}

/// Interfaces enslaved to `bridge`, as `ip` sees them.
fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn tasks_get_an_address_reach_each_other_and_leave_nothing_when_stopped() {
    let c = DevCluster::start();
    let subnet: Ipv4Net = c.subnet().parse().unwrap();
    let job = unique_name("web");
    run_job(&c, "web.toml", &echo_service(&job, 2));
    let allocs = running_with_ips(&c, &job, 2);
    let ips: Vec<Ipv4Addr> = allocs.iter().map(ip_of).collect();
    for (a, ip) in allocs.iter().zip(&ips) {
        assert!(subnet.contains(*ip), "{ip} is not in {subnet}");
        assert_ne!(*ip, c.bridge_ip());
        let id = str_of(a, "id");
        let out = poll_until("the task's report of its network", WAIT, || {
            let out = stdout_of(&c, id);
            out.contains("eth0").then_some(out)
        });
        assert!(
            out.contains(&format!("nameserver {}", c.bridge_ip())),
            "resolv.conf does not name the bridge: {out}"
        );
        assert!(out.contains("search service.drover.internal"), "{out}");
        assert!(
            out.contains(&format!("inet {ip}/24")),
            "eth0 lacks {ip}: {out}"
        );
        assert!(out.contains(&format!("{ip}\t{job}-main-")), "hosts: {out}");
    }
    assert_ne!(ips[0], ips[1]);
    // `alloc status` shows the address too.
    let one = c.cli_ok(&["alloc", "status", str_of(&allocs[0], "id")]);
    assert!(one.contains(&ips[0].to_string()), "{one}");

    // Listening (the task prints before it starts its listener).
    for ip in &ips {
        poll_until(&format!("{ip} to answer"), WAIT, || ask(*ip, PORT));
    }
    // From a task of another allocation, over TCP, to both.
    let client = unique_name("client");
    let script = format!(
        "busybox nc -w 5 {} {PORT} </dev/null; busybox nc -w 5 {} {PORT} </dev/null",
        ips[0], ips[1]
    );
    run_job(&c, "client.toml", &batch(&client, &script));
    let done = poll_until("the client job to finish", WAIT, || {
        let s = c.cli_json(&["job", "status", &client]);
        let a = arr(&s["allocations"]).first().cloned()?;
        matches!(str_of(&a, "status"), "complete" | "failed").then_some(a)
    });
    let said = stdout_of(&c, str_of(&done, "id"));
    assert_eq!(str_of(&done, "status"), "complete", "client: {said}");
    for a in &allocs {
        let want = format!("{job}-main-{}", a["index"]);
        assert!(said.contains(&want), "no answer from {want}: {said:?}");
    }

    // Stopping the job removes every veth, namespace and address.
    c.cli_ok(&["job", "stop", &job]);
    c.cli_ok(&["job", "stop", &client]);
    poll_until("the allocations' networks to be removed", WAIT, || {
        let (netns, ports, ipam) = leftovers(&c);
        (netns.is_empty() && ports.is_empty() && ipam == 0).then_some(())
    });
    for a in &allocs {
        assert!(!link_exists(&host_if_name(str_of(a, "id"))));
    }
}

#[test]
fn a_hundred_allocations_started_at_once_get_distinct_working_addresses() {
    let c = DevCluster::start();
    let job = unique_name("many");
    let started = Instant::now();
    run_job(&c, "many.toml", &echo_service(&job, 100));
    let allocs = poll_until(
        "100 allocations with an IP",
        Duration::from_secs(120),
        || {
            let s = c.cli_json(&["job", "status", &job]);
            let allocs = arr(&s["allocations"]).clone();
            let ready = allocs.len() == 100
                && allocs
                    .iter()
                    .all(|a| a["status"] == "running" && !str_of(a, "ip").is_empty());
            ready.then_some(allocs)
        },
    );
    eprintln!("100 allocations running in {:?}", started.elapsed());
    let ips: BTreeSet<Ipv4Addr> = allocs.iter().map(ip_of).collect();
    assert_eq!(ips.len(), 100, "addresses are not distinct");
    // Every one answers, with its own name.
    let mut names = BTreeSet::new();
    for a in &allocs {
        let ip = ip_of(a);
        let answer = poll_until(&format!("{ip} to answer"), WAIT, || ask(ip, PORT));
        assert_eq!(answer, format!("{job}-main-{}", a["index"]), "{ip}");
        names.insert(answer);
    }
    assert_eq!(names.len(), 100);
}

#[test]
fn an_agent_killed_and_restarted_keeps_its_allocations_addresses_and_connectivity() {
    let mut c = DevCluster::start();
    let job = unique_name("keep");
    run_job(&c, "keep.toml", &echo_service(&job, 2));
    let before = running_with_ips(&c, &job, 2);
    for a in &before {
        let ip = ip_of(a);
        poll_until(&format!("{ip} to answer"), WAIT, || ask(ip, PORT));
    }
    // A long connection made before the crash must survive it too.
    let mut held = TcpStream::connect_timeout(
        &SocketAddr::from((ip_of(&before[0]), PORT)),
        Duration::from_secs(3),
    )
    .expect("connecting before the restart");

    c.kill9_and_restart();
    // Everything below must hold after the new agent has looked at its
    // allocations and their networks, not merely before it got to them.
    agent_converged(&c);

    let after = running_with_ips(&c, &job, 2);
    let ids = |v: &[Value]| -> Vec<(String, String)> {
        let mut x: Vec<_> = v
            .iter()
            .map(|a| (str_of(a, "id").to_owned(), str_of(a, "ip").to_owned()))
            .collect();
        x.sort();
        x
    };
    assert_eq!(ids(&before), ids(&after), "ids or addresses changed");
    for a in &after {
        let ip = ip_of(a);
        let answer = poll_until(&format!("{ip} to answer after the restart"), WAIT, || {
            ask(ip, PORT)
        });
        assert_eq!(answer, format!("{job}-main-{}", a["index"]));
        assert!(c.netns_dir().join(str_of(a, "id")).exists());
    }
    held.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = String::new();
    held.read_to_string(&mut got)
        .expect("reading the held connection");
    assert_eq!(got.trim(), format!("{job}-main-{}", before[0]["index"]));
    let (_, ports, ipam) = leftovers(&c);
    assert_eq!(ports.len(), 2, "veths: {ports:?}");
    assert_eq!(ipam, 2);
}

#[test]
fn tasks_reach_the_node_dns_port_but_nothing_else_of_the_node() {
    let c = DevCluster::start();
    let bridge_ip = c.bridge_ip();
    // Listeners on the bridge address: one on the DNS port (TCP), one on
    // another port, as a node service would be.
    // The node's DNS may serve port 53 itself one day; then the probe
    // reaches it instead of this listener.
    let dns = TcpListener::bind((bridge_ip, 53)).ok();
    let other = TcpListener::bind((bridge_ip, 0)).expect("binding a bridge port");
    let other_port = other.local_addr().unwrap().port();
    // A listener on every address of the node, as a scheduler or agent
    // API serving off loopback would be. (`drover dev` itself listens on
    // 127.0.0.1, which inside a task is the task's own loopback: probing
    // its port would prove nothing.)
    let wild = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("binding a wildcard port");
    let wild_port = wild.local_addr().unwrap().port();
    for l in dns.iter().chain([&other, &wild]) {
        l.set_nonblocking(true).unwrap();
    }
    let probe = |ip: &str, port: u16| {
        format!(
            "if busybox nc -w 3 {ip} {port} </dev/null; then echo open {ip}:{port}; \
             else echo closed {ip}:{port}; fi"
        )
    };
    let script = [
        probe(&bridge_ip.to_string(), 53),
        probe(&bridge_ip.to_string(), other_port),
        probe(&bridge_ip.to_string(), wild_port),
    ]
    .join("; ");
    let job = unique_name("probe");
    run_job(&c, "probe.toml", &batch(&job, &script));
    // Accept (and close) what reaches the DNS listener while the job runs.
    let mut dns_conns = 0;
    let mut other_conns = 0;
    let done = poll_until("the probe job to finish", Duration::from_secs(60), || {
        if dns.as_ref().is_some_and(|l| l.accept().is_ok()) {
            dns_conns += 1;
        }
        if other.accept().is_ok() {
            other_conns += 1;
        }
        if wild.accept().is_ok() {
            other_conns += 1;
        }
        let s = c.cli_json(&["job", "status", &job]);
        let a = arr(&s["allocations"]).first().cloned()?;
        matches!(str_of(&a, "status"), "complete" | "failed").then_some(a)
    });
    let said = stdout_of(&c, str_of(&done, "id"));
    assert!(said.contains(&format!("open {bridge_ip}:53")), "{said}");
    assert!(
        said.contains(&format!("closed {bridge_ip}:{other_port}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("closed {bridge_ip}:{wild_port}")),
        "{said}"
    );
    if dns.is_some() {
        assert_eq!(dns_conns, 1, "{said}");
    }
    assert_eq!(other_conns, 0, "a task reached a node port: {said}");
}

#[test]
fn agent_cleanup_removes_bridge_namespaces_veths_and_firewall_table() {
    let mut c = DevCluster::start();
    let job = unique_name("gone");
    run_job(&c, "gone.toml", &echo_service(&job, 2));
    let allocs = running_with_ips(&c, &job, 2);
    let node_id = std::fs::read_to_string(c.agent_dir().join("node-id")).unwrap();
    let table = drover_agent::net::firewall::table_name(node_id.trim());
    assert!(drover_agent::net::firewall::exists(&table).unwrap());
    // A host-gw route as the agent makes them (protocol 68), through a
    // dummy interface of the test's that outlives the cleanup.
    let dummy = DummyRoute::new();
    assert!(dummy.route_present());
    c.stop();
    let out = run_drover(&[
        "agent",
        "--cleanup",
        "--data-dir",
        c.agent_dir().to_str().unwrap(),
        "--bridge",
        c.bridge(),
        "--cgroup-parent",
        &c.cgroup_parent(),
    ]);
    assert!(
        out.status.success(),
        "drover agent --cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!link_exists(c.bridge()), "the bridge is still there");
    for a in &allocs {
        assert!(!link_exists(&host_if_name(str_of(a, "id"))));
    }
    assert!(
        !c.netns_dir().exists(),
        "{} is still there",
        c.netns_dir().display()
    );
    assert!(
        !c.agent_dir().join("net").exists(),
        "IPAM state is still there"
    );
    assert!(!drover_agent::net::firewall::exists(&table).unwrap());
    assert!(!dummy.route_present(), "the Drover route is still there");
    // The tasks were stopped.
    for dir in c.task_dirs() {
        let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
        assert!(!state.contains("\"running\""), "{}: {state}", dir.display());
    }
}

/// A spare interface with a route marked as Drover's (`proto 68`) through
/// it, in the machine's namespace; both removed on drop.
struct DummyRoute {
    link: String,
    dst: String,
}

impl DummyRoute {
    fn new() -> DummyRoute {
        let pid = std::process::id();
        let k = (pid % 200) as u8 + 20;
        let d = DummyRoute {
            link: format!("drvdm{pid}"),
            dst: format!("198.19.{k}.0/24"),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("running ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A veth pair (this kernel may have no dummy driver); deleting one
        // end deletes both.
        let peer = format!("drvdp{pid}");
        ip(&[
            "link", "add", &d.link, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "up"]);
        ip(&["addr", "add", &format!("198.18.{k}.5/30"), "dev", &d.link]);
        ip(&["link", "set", &d.link, "up"]);
        ip(&[
            "route",
            "add",
            &d.dst,
            "via",
            &format!("198.18.{k}.6"),
            "proto",
            "68",
        ]);
        d
    }

    fn route_present(&self) -> bool {
        let out = Command::new("ip")
            .args(["route", "show", &self.dst, "proto", "68"])
            .output()
            .expect("running ip");
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}

impl Drop for DummyRoute {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

/// A one-task service whose group asks for `network`, printing what the
/// task sees of the network, then sleeping.
fn mode_service(name: &str, network: &str, script: &str) -> String {
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
network = "{network}"

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
resources = {{ cpu_millis = 10, memory_mb = 16 }}
"#
    )
}

/// The first allocation of `job` once it has left `pending`.
fn settled(c: &DevCluster, job: &str) -> Value {
    poll_until(
        &format!("an allocation of {job} to start or fail"),
        WAIT,
        || {
            let s = c.cli_json(&["job", "status", job]);
            let a = arr(&s["allocations"]).first().cloned()?;
            (str_of(&a, "status") != "pending").then_some(a)
        },
    )
}

#[test]
fn network_none_has_only_lo_and_host_needs_the_node_policy() {
    let c = DevCluster::start();
    let none = unique_name("none");
    let script = "ip -o link show; ip -4 -o addr show; echo listed; sleep 600";
    run_job(&c, "none.toml", &mode_service(&none, "none", script));
    let a = settled(&c, &none);
    assert_eq!(str_of(&a, "status"), "running", "{a}");
    assert_eq!(
        str_of(&a, "ip"),
        "",
        "a task without network has no address"
    );
    let out = poll_until("the task's interface list", WAIT, || {
        let out = stdout_of(&c, str_of(&a, "id"));
        out.contains("listed").then_some(out)
    });
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "only lo: {out}");
    assert!(links[0].contains("lo:") && links[0].contains("UP"), "{out}");
    assert!(out.contains("inet 127.0.0.1"), "{out}");

    // The default policy refuses host networking, before anything starts.
    let host = unique_name("host");
    run_job(&c, "host.toml", &mode_service(&host, "host", "sleep 600"));
    let a = settled(&c, &host);
    assert_eq!(str_of(&a, "status"), "failed", "{a}");
    let message = str_of(&arr(&a["tasks"])[0], "message");
    assert!(message.contains("allow_host_network"), "{message}");
    assert!(!c.agent_dir().join("allocs").join(str_of(&a, "id")).exists());

    // A bad mode is refused by the scheduler, naming the group.
    let bad = c.write_file("bad.toml", &mode_service("bad", "overlay", "true"));
    let out = c.cli(&["job", "run", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("group \"main\"") && err.contains("network"),
        "{err}"
    );
}

#[test]
fn host_network_where_the_node_policy_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_host_network = true\n").unwrap();
    let c = DevCluster::start_with(&["--policy", policy.to_str().unwrap()]);
    let job = unique_name("hostnet");
    let script = format!(
        "ip -o link show {} && echo sees-the-bridge; sleep 600",
        c.bridge()
    );
    run_job(&c, "hostnet.toml", &mode_service(&job, "host", &script));
    let a = settled(&c, &job);
    assert_eq!(str_of(&a, "status"), "running", "{a}");
    poll_until("the task to see the node's bridge", WAIT, || {
        stdout_of(&c, str_of(&a, "id"))
            .contains("sees-the-bridge")
            .then_some(())
    });
    let (netns, ports, ipam) = leftovers(&c);
    assert!(netns.is_empty() && ports.is_empty() && ipam == 0);
}

/// A "remote host" the test makes: a network namespace behind a veth from
/// the machine's namespace, addressed `198.18.<k>.2/30` (and, on `lo`, an
/// address inside the dev scheduler's cluster CIDR, routed from the
/// machine), with a TCP listener on both. Removed on drop.
struct Remote {
    ns: String,
    host_if: String,
    in_cluster: Ipv4Addr,
    outside: Ipv4Addr,
    listener: TcpListener,
}

impl Remote {
    fn new(task_subnet: &str) -> Remote {
        let pid = std::process::id();
        let k = (pid % 200) as u8 + 20;
        let ns = format!("drvrm{pid}");
        let host_if = format!("drvrh{pid}");
        let outside = Ipv4Addr::new(198, 18, k, 2);
        let in_cluster = Ipv4Addr::new(10, 89, 250, k);
        let mut r = Remote {
            ns: ns.clone(),
            host_if: host_if.clone(),
            in_cluster,
            outside,
            // Replaced below once the namespace exists.
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("running ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("198.18.{k}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "route",
            "add",
            &format!("{in_cluster}/32"),
            "via",
            &outside.to_string(),
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{outside}/30"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{in_cluster}/32"),
            "dev",
            "lo",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            task_subnet,
            "via",
            &format!("198.18.{k}.1"),
        ]);
        let path = Path::new("/run/netns").join(&ns);
        r.listener = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("opening the remote netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            TcpListener::bind("0.0.0.0:0").expect("binding in the remote netns")
        })
        .join()
        .expect("remote listener thread");
        r.listener.set_nonblocking(true).unwrap();
        r
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", &format!("{}/32", self.in_cluster)])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

#[test]
fn tasks_reach_the_cluster_through_the_node_but_nothing_outside_it() {
    // The cluster CIDR holds both this node's subnet and the remote's
    // in-cluster address (10.89.250.k), and none of the subnets of the
    // other tests' clusters on this host (10.2xx.y.0/24): a node's firewall
    // drops new connections to the host from its whole cluster CIDR, so a
    // wider one would cut their tasks off from their own node DNS.
    let subnet = format!("10.89.{}.0/24", 1 + std::process::id() % 200);
    let c = DevCluster::start_with(&["--cluster-cidr", "10.89.0.0/16", "--subnet", &subnet]);
    let remote = Remote::new(c.subnet());
    let port = remote.port();
    let probe = |ip: Ipv4Addr| {
        format!(
            "if busybox nc -w 3 {ip} {port} </dev/null; then echo open {ip}; \
             else echo closed {ip}; fi"
        )
    };
    let script = format!("{}; {}", probe(remote.in_cluster), probe(remote.outside));
    let job = unique_name("fwd");
    run_job(&c, "fwd.toml", &batch(&job, &script));
    let mut accepted = 0;
    let done = poll_until("the probe job to finish", Duration::from_secs(60), || {
        if remote.listener.accept().is_ok() {
            accepted += 1;
        }
        let s = c.cli_json(&["job", "status", &job]);
        let a = arr(&s["allocations"]).first().cloned()?;
        matches!(str_of(&a, "status"), "complete" | "failed").then_some(a)
    });
    let said = stdout_of(&c, str_of(&done, "id"));
    assert!(
        said.contains(&format!("open {}", remote.in_cluster)),
        "{said}"
    );
    assert!(
        said.contains(&format!("closed {}", remote.outside)),
        "{said}"
    );
    assert_eq!(accepted, 1, "{said}");
}

/// Runs `f` on a thread in a new network namespace, which goes away with
/// the thread: what the agent's networking does there touches nothing of
/// the host.
fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

/// Removes the cycle test's namespaces even when it fails.
struct NetnsGuard(PathBuf);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = NetnsDir::new(&self.0).remove_all();
        if let Some(p) = self.0.parent() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

#[test]
fn five_hundred_start_stop_cycles_leave_no_veth_namespace_route_or_address() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = NetConfig::for_agent(tmp.path(), "drvcycle0", "cycle-test");
    let _guard = NetnsGuard(cfg.netns_dir.clone());
    let subnet: Ipv4Net = "10.250.0.0/24".parse().unwrap();
    in_new_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let net = Arc::new(NodeNetwork::init(cfg.clone(), subnet).await.expect("init"));
            let probe = Netlink::connect().unwrap();
            // `ip`, forked from this thread, runs in this thread's namespace.
            let count_links = || {
                let out = Command::new("ip")
                    .args(["-o", "link", "show"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).lines().count()
            };
            let links_before = count_links();
            let routes_before = probe.drover_routes().await.unwrap().len();
            let started = Instant::now();
            // 50 rounds of 10 allocations set up and torn down side by side.
            for round in 0..50 {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..10 {
                    let net = net.clone();
                    set.spawn(async move {
                        let id = format!("cycle-{round}-{i}");
                        let a = net
                            .setup(&id, &id, NetworkMode::Bridge, true)
                            .await
                            .expect("setup");
                        assert!(a.ip.is_some());
                        net.teardown(&id).await.expect("teardown");
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("cycle task");
                }
            }
            eprintln!("500 cycles in {:?}", started.elapsed());
            assert_eq!(count_links(), links_before, "interfaces left");
            assert_eq!(probe.drover_routes().await.unwrap().len(), routes_before);
            let left: Vec<String> = std::fs::read_dir(&cfg.netns_dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(left.is_empty(), "namespaces left: {left:?}");
            let ipam = Ipam::open(cfg.state_dir.join("ipam.json"), subnet).unwrap();
            assert!(
                ipam.is_empty(),
                "addresses left: {:?}",
                ipam.allocations().collect::<Vec<_>>()
            );
            assert!(
                !cfg.state_dir.join("allocs").exists()
                    || std::fs::read_dir(cfg.state_dir.join("allocs"))
                        .unwrap()
                        .next()
                        .is_none()
            );
        });
    });
}

#[test]
fn a_torn_or_missing_address_book_is_rebuilt_from_the_live_namespaces() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = NetConfig::for_agent(tmp.path(), "drvtorn0", "torn-test");
    let _guard = NetnsGuard(cfg.netns_dir.clone());
    let subnet: Ipv4Net = "10.250.1.0/24".parse().unwrap();
    let book = cfg.state_dir.join("ipam.json");
    in_new_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let net = NodeNetwork::init(cfg.clone(), subnet).await.expect("init");
            let live = net
                .setup("live", "live", NetworkMode::Bridge, true)
                .await
                .expect("setup")
                .ip
                .expect("an address");
            drop(net);
            // What a power loss can leave of a book that is not fsync'd
            // (had the machine really lost power, "live" would be gone too;
            // a torn book with live namespaces is the harder case), and a
            // book that is simply gone.
            let whole = std::fs::read(&book).unwrap();
            for torn in [whole[..whole.len() / 2].to_vec(), Vec::new(), vec![0; 32]] {
                std::fs::write(&book, &torn).unwrap();
                let net = NodeNetwork::init(cfg.clone(), subnet)
                    .await
                    .expect("init with a torn address book");
                let other = net
                    .setup("other", "other", NetworkMode::Bridge, true)
                    .await
                    .expect("setup");
                assert_ne!(other.ip, Some(live), "a live address handed out again");
                net.teardown("other").await.expect("teardown");
                assert!(cfg.state_dir.join("ipam.json.unreadable").exists());
            }
            std::fs::remove_file(&book).unwrap();
            let net = NodeNetwork::init(cfg.clone(), subnet)
                .await
                .expect("init without an address book");
            let again = net
                .setup("live", "live", NetworkMode::Bridge, false)
                .await
                .expect("re-adopt");
            assert_eq!(
                again.ip,
                Some(live),
                "the live allocation keeps its address"
            );
            net.teardown("live").await.expect("teardown");
            let ipam = Ipam::open(&book, subnet).unwrap();
            assert!(
                ipam.is_empty(),
                "{:?}",
                ipam.allocations().collect::<Vec<_>>()
            );
        });
    });
}
