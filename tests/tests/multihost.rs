//! Several hosts, one cluster: node subnets, host-gw routes between nodes,
//! and tasks on different hosts talking to each other by IP. Each test runs
//! a [`MultiHost`]: real agents in network namespaces on a test switch, a
//! real scheduler with mutual TLS, all torn down on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use drover_agent::net::{Ipv4Net, PeerRoute};
use drover_tests::hosts::host_ip;
use drover_tests::{poll_until, MultiHost};

/// Scheduler grace (10 s) before a silent node is down, plus slack.
const DOWN_TIMEOUT: Duration = Duration::from_secs(40);
const ROUTES_TIMEOUT: Duration = Duration::from_secs(20);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Node id -> subnet, as `node list` shows them.
fn subnets(mh: &MultiHost) -> BTreeMap<String, Ipv4Net> {
    mh.nodes()
        .into_iter()
        .map(|(id, n)| {
            let s = n["subnet"].as_str().unwrap_or_default().to_string();
            let net: Ipv4Net = s
                .parse()
                .unwrap_or_else(|e| panic!("node {id} has no usable subnet {s:?}: {e}"));
            (id, net)
        })
        .collect()
}

/// The routes host `i` should have: one to every host in `up` but itself.
fn expected_routes(
    mh: &MultiHost,
    subnets: &BTreeMap<String, Ipv4Net>,
    i: usize,
    up: &[usize],
) -> Vec<PeerRoute> {
    let mut want: Vec<PeerRoute> = up
        .iter()
        .filter(|&&j| j != i)
        .map(|&j| PeerRoute {
            subnet: subnets[&mh.host(j).node_id],
            via: host_ip(j),
        })
        .collect();
    want.sort();
    want
}

fn wait_routes(mh: &MultiHost, subnets: &BTreeMap<String, Ipv4Net>, hosts: &[usize], up: &[usize]) {
    for &i in hosts {
        let want = expected_routes(mh, subnets, i, up);
        poll_until(
            &format!("host {i} to have routes {want:?}"),
            ROUTES_TIMEOUT,
            || (mh.routes(i) == want).then_some(()),
        );
    }
}

#[test]
fn nodes_get_distinct_subnets_kept_across_restarts_and_routes_follow_liveness() {
    let mut mh = MultiHost::start(3);
    let before = subnets(&mh);
    assert_eq!(before.len(), 3, "{before:?}");
    let cluster: Ipv4Net = "10.89.0.0/16".parse().unwrap();
    let distinct: BTreeSet<Ipv4Net> = before.values().copied().collect();
    assert_eq!(distinct.len(), 3, "subnets are not distinct: {before:?}");
    for (id, s) in &before {
        assert_eq!(s.prefix(), 24, "node {id}: {s}");
        assert!(
            cluster.contains(s.network()),
            "node {id}: {s} outside {cluster}"
        );
    }
    // The table shows them too.
    let table = mh.cli_ok(&["node", "list"]);
    assert!(table.contains("SUBNET"), "{table}");
    for s in before.values() {
        assert!(table.contains(&s.to_string()), "{table}");
    }

    // Every host routes to the other two, via their switch addresses.
    wait_routes(&mh, &before, &[0, 1, 2], &[0, 1, 2]);
    let shown = mh.ip(0, &["route", "show", "proto", "68"]);
    for j in [1, 2] {
        let line = format!("{} via {}", before[&mh.host(j).node_id], host_ip(j));
        assert!(
            shown.contains(&line),
            "`ip route` on h0 lacks {line:?}:\n{shown}"
        );
    }
    assert_eq!(
        mh.ip(0, &["-4", "route", "show", "default"]).trim(),
        "",
        "a host must have no default route"
    );

    // A restarted agent keeps its subnet.
    mh.restart_agent(1);
    assert_eq!(subnets(&mh), before, "a restart changed subnets");
    wait_routes(&mh, &before, &[0, 1, 2], &[0, 1, 2]);

    // A host whose agent dies is left out once the scheduler marks it down.
    mh.kill_agent(2);
    let down = &mh.host(2).node_id.clone();
    poll_until(&format!("node {down} to be down"), DOWN_TIMEOUT, || {
        (mh.nodes()[down]["status"].as_str() == Some("down")).then_some(())
    });
    wait_routes(&mh, &before, &[0, 1], &[0, 1]);

    // Back again: same subnet, routes restored everywhere.
    mh.start_agent(2);
    mh.wait_ready(3);
    assert_eq!(subnets(&mh), before, "coming back changed subnets");
    wait_routes(&mh, &before, &[0, 1, 2], &[0, 1, 2]);
}

/// A system job: on every node, a TCP server on port 7000 that answers each
/// connection with its allocation name and the peer address it saw.
const ECHO_JOB: &str = r#"
name = "echo"
kind = "system"

[[group]]
name = "main"

[[group.task]]
name = "server"
command = ["/usr/bin/perl", "-MIO::Socket::INET", "-e", '''
$| = 1;
my $s = IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => 7000, Listen => 64, ReuseAddr => 1)
  or die "listen: $!";
print "listening\n";
while (my $c = $s->accept) { print $c "hello from $ENV{DROVER_ALLOC_NAME} to " . $c->peerhost . "\n"; close $c; }
''']
resources = { cpu_millis = 50, memory_mb = 32 }
"#;

/// A system job: on every node, a loop that connects to every IP in `ips`
/// each second and prints `ok <ip> <reply>` or `fail <ip>`, with a round
/// counter.
fn probe_job(ips: &[Ipv4Addr]) -> String {
    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!(
        r#"
name = "probe"
kind = "system"

[[group]]
name = "main"

[[group.task]]
name = "client"
command = ["/bin/bash", "-c", '''
n=0
while true; do
  n=$((n + 1))
  for ip in {ips}; do
    if r=$(timeout 3 bash -c "exec 3<>/dev/tcp/$ip/7000 && head -n1 <&3" 2>/dev/null) && [ -n "$r" ]; then
      echo "round $n ok $ip $r"
    else
      echo "round $n fail $ip"
    fi
  done
  sleep 1
done
''']
resources = {{ cpu_millis = 50, memory_mb = 32 }}
"#,
        ips = list.join(" ")
    )
}

fn logs(mh: &MultiHost, alloc: &str) -> String {
    mh.cli_ok(&["logs", alloc])
}

/// The rounds in `log` after round `after` in which every IP in `want`
/// answered, with the replies.
fn good_round(log: &str, after: u64, want: &[Ipv4Addr]) -> Option<BTreeMap<Ipv4Addr, String>> {
    let mut rounds: BTreeMap<u64, BTreeMap<Ipv4Addr, String>> = BTreeMap::new();
    for line in log.lines() {
        let mut parts = line.splitn(5, ' ');
        let (Some("round"), Some(n), Some("ok"), Some(ip), Some(reply)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let (Ok(n), Ok(ip)) = (n.parse::<u64>(), ip.parse::<Ipv4Addr>()) else {
            continue;
        };
        if n > after {
            rounds.entry(n).or_default().insert(ip, reply.to_string());
        }
    }
    rounds
        .into_values()
        .find(|r| want.iter().all(|ip| r.contains_key(ip)))
}

fn last_round(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix("round ")?.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Every probe reaches every echo server, across hosts, with no address
/// translation on the way: each server sees the probe's own IP.
fn check_all_pairs(
    mh: &MultiHost,
    echo: &BTreeMap<String, (String, Ipv4Addr)>,
    probes: &BTreeMap<String, (String, Ipv4Addr)>,
    after: &BTreeMap<String, u64>,
) {
    let ips: Vec<Ipv4Addr> = echo.values().map(|(_, ip)| *ip).collect();
    for (node, (alloc, probe_ip)) in probes {
        let since = after.get(node).copied().unwrap_or(0);
        let replies = poll_until(
            &format!("probe on {node} to reach every echo server after round {since}"),
            RUN_TIMEOUT,
            || good_round(&logs(mh, alloc), since, &ips),
        );
        for (echo_node, (_, ip)) in echo {
            let reply = &replies[ip];
            assert!(
                reply.starts_with("hello from echo.main")
                    && reply.ends_with(&format!(" to {probe_ip}")),
                "probe on {node} -> echo on {echo_node} ({ip}): {reply:?}"
            );
        }
    }
}

/// A listener on every host (as an agent or scheduler would be, on all
/// addresses): no task reaches one through any node's bridge address,
/// neither its own node's nor, routed host-gw, another node's.
fn tasks_cannot_reach_other_nodes_services(
    mh: &MultiHost,
    nodes: &BTreeMap<String, serde_json::Value>,
) {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|i| {
            let l = mh
                .host(i)
                .netns()
                .run(|| std::net::TcpListener::bind("0.0.0.0:7000"))
                .expect("entering the host namespace")
                .expect("binding in the host namespace");
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let gateways: Vec<Ipv4Addr> = nodes
        .values()
        .map(|n| {
            let subnet: Ipv4Net = n["subnet"].as_str().unwrap().parse().unwrap();
            subnet.first_host().unwrap()
        })
        .collect();
    let job = probe_job(&gateways).replace("name = \"probe\"", "name = \"probe-nodes\"");
    let file = mh.write_file("probe-nodes.toml", &job);
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
    let probes = mh.running_with_ips("probe-nodes", 3);
    for (node, (alloc, _)) in &probes {
        let log = poll_until(
            &format!("probe-nodes on {node} to finish a round"),
            RUN_TIMEOUT,
            || {
                let log = logs(mh, alloc);
                (last_round(&log) >= 2).then_some(log)
            },
        );
        for ip in &gateways {
            assert!(
                log.contains(&format!("round 1 fail {ip}")),
                "a task on {node} reached {ip}:7000 on a node: {log}"
            );
        }
        assert!(
            !log.contains(" ok "),
            "a task on {node} reached a node: {log}"
        );
    }
    for (i, l) in listeners.iter().enumerate() {
        assert!(
            l.accept().is_err(),
            "host {i}'s listener was reached by a task"
        );
    }
    mh.cli_ok(&["job", "stop", "probe-nodes"]);
}

#[test]
fn tasks_on_different_hosts_talk_by_ip_and_survive_an_agent_restart() {
    let mut mh = MultiHost::start(3);
    let file = mh.write_file("echo.toml", ECHO_JOB);
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
    let echo = mh.running_with_ips("echo", 3);
    let nodes = mh.nodes();
    for (node, (_, ip)) in &echo {
        let subnet: Ipv4Net = nodes[node]["subnet"].as_str().unwrap().parse().unwrap();
        assert!(
            subnet.contains(*ip),
            "allocation on {node} has {ip}, outside its node's {subnet}"
        );
    }
    let ips: Vec<Ipv4Addr> = echo.values().map(|(_, ip)| *ip).collect();
    let file = mh.write_file("probe.toml", &probe_job(&ips));
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
    let probes = mh.running_with_ips("probe", 3);
    check_all_pairs(&mh, &echo, &probes, &BTreeMap::new());
    tasks_cannot_reach_other_nodes_services(&mh, &nodes);

    // The agent of host 0 crashes and comes back: its tasks kept running,
    // and keep their addresses and their connectivity both ways.
    let h0 = mh.host(0).node_id.clone();
    mh.restart_agent(0);
    // Only rounds that began after the agent was back count.
    let rounds: BTreeMap<String, u64> = probes
        .iter()
        .map(|(node, (alloc, _))| (node.clone(), last_round(&logs(&mh, alloc))))
        .collect();
    let echo_after = mh.running_with_ips("echo", 3);
    let probes_after = mh.running_with_ips("probe", 3);
    assert_eq!(
        echo_after, echo,
        "echo allocations changed across the restart of {h0}"
    );
    assert_eq!(
        probes_after, probes,
        "probe allocations changed across the restart of {h0}"
    );
    check_all_pairs(&mh, &echo, &probes, &rounds);

    mh.cli_ok(&["job", "stop", "probe"]);
    mh.cli_ok(&["job", "stop", "echo"]);
}

#[test]
fn the_harness_leaves_nothing_behind_even_when_a_test_panics() {
    let mut seen: Option<(std::path::PathBuf, Vec<String>, Vec<i32>)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mh = MultiHost::start(2);
        let file = mh.write_file("echo.toml", ECHO_JOB);
        mh.cli_ok(&[
            "job".as_ref(),
            "run".as_ref(),
            "--detach".as_ref(),
            file.as_os_str(),
        ]);
        mh.running_with_ips("echo", 2);
        let allocs = mh.cli_json(&["alloc", "list", "--job", "echo"]);
        let pids: Vec<i32> = allocs
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["tasks"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| i32::try_from(t["pid"].as_i64()?).ok())
            .filter(|&p| p > 0)
            .collect();
        assert_eq!(pids.len(), 2, "{allocs}");
        let cgroups = mh.hosts().iter().map(|h| h.cgroup_parent.clone()).collect();
        seen = Some((mh.root().to_path_buf(), cgroups, pids));
        panic!("deliberate failure with tasks running");
    }));
    assert!(result.is_err(), "the closure was meant to panic");
    let (root, cgroups, pids) = seen.expect("the harness started");
    assert!(!root.exists(), "{} is still there", root.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "mounts under {} are left",
        root.display()
    );
    // cgroup v2 has one hierarchy at the root, v1 one per controller.
    let mut hierarchies = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    hierarchies.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    );
    for c in &cgroups {
        for h in &hierarchies {
            assert!(
                !h.join(c).exists(),
                "cgroup {} is left",
                h.join(c).display()
            );
        }
    }
    for p in pids {
        assert!(
            !drover_tests::procs::pid_alive(p),
            "task pid {p} still runs"
        );
    }
}
