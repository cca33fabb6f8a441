//! Service discovery across hosts, on the multi-host harness: every node's
//! DNS (on its bridge address, the `nameserver` of its tasks) answers for
//! services wherever they run, tasks fetch `http://web:8080/` by its short
//! name from instances on other hosts, and a host that dies (agent and
//! tasks killed) leaves every node's answers within the node grace period.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use drover_agent::net::Ipv4Net;
use drover_tests::hosts::Options;
use drover_tests::{dig, poll_until, MultiHost};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The scheduler's node grace in this test.
const GRACE: Duration = Duration::from_secs(4);

/// A web server on every node: its page names its allocation; registered
/// as `web` while an http check passes.
const WEB_JOB: &str = r#"
name = "web"
kind = "system"

[[group]]
name = "main"

[[group.task]]
name = "httpd"
command = ["/bin/sh", "-c", '''
mkdir -p /tmp/www
echo "from $DROVER_ALLOC_ID" > /tmp/www/index.html
exec busybox httpd -f -p 8080 -h /tmp/www
''']
resources = { cpu_millis = 50, memory_mb = 32 }

[[group.service]]
name = "web"
port = 8080

[[group.service.check]]
type = "http"
path = "/"
interval_ms = 500
timeout_ms = 400
"#;

/// One instance of the same server, named `solo`: it runs on one host,
/// so the client of the other host can only reach it across nodes (with
/// `web` on every host, the resolver's address sorting would always pick
/// the instance on the client's own subnet).
fn solo_job() -> String {
    WEB_JOB
        .replace(
            "name = \"web\"\nkind = \"system\"",
            "name = \"solo\"\nkind = \"service\"",
        )
        .replace(
            "[[group.service]]\nname = \"web\"",
            "[[group.service]]\nname = \"solo\"",
        )
}

/// A client on every node: fetches `http://solo:8080/` by its short name
/// every 200 ms and prints what answered.
const CLIENT_JOB: &str = r#"
name = "client"
kind = "system"

[[group]]
name = "main"

[[group.task]]
name = "fetch"
command = ["/bin/sh", "-c", '''
while true; do
  echo "got $(busybox timeout 3 busybox wget -q -O - http://solo:8080/ 2>&1)"
  sleep 0.2
done
''']
resources = { cpu_millis = 50, memory_mb = 16 }
"#;

/// The node DNS of host `i`, asked from inside its namespace: the A
/// records of `name`.
fn node_answers(mh: &MultiHost, i: usize, bridge: Ipv4Addr, name: &str) -> BTreeSet<Ipv4Addr> {
    let server = SocketAddr::from((bridge, 53));
    let text = mh
        .host(i)
        .netns()
        .run(|| dig(server, &["+short", "A", name]))
        .expect("entering the host namespace");
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn tasks_find_services_on_other_hosts_by_name_and_a_dead_host_leaves_every_answer() {
    let mut mh = MultiHost::start_with(Options {
        hosts: 2,
        scheduler_args: vec!["--node-grace-ms".into(), GRACE.as_millis().to_string()],
        ..Options::default()
    });
    let bridges: Vec<Ipv4Addr> = (0..2)
        .map(|i| {
            let node = &mh.nodes()[&mh.host(i).node_id];
            let subnet: Ipv4Net = node["subnet"].as_str().unwrap().parse().unwrap();
            subnet.first_host().unwrap()
        })
        .collect();
    let web_file = mh.write_file("web.toml", WEB_JOB);
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        web_file.as_os_str(),
    ]);
    let web = mh.running_with_ips("web", 2);
    let web_ips: BTreeSet<Ipv4Addr> = web.values().map(|(_, ip)| *ip).collect();

    // Every node's DNS answers both instances, wherever they run.
    for (i, bridge) in bridges.iter().enumerate() {
        poll_until(
            &format!("host {i}'s DNS to answer both web instances"),
            RUN_TIMEOUT,
            || {
                (node_answers(&mh, i, *bridge, "web.service.drover.internal") == web_ips)
                    .then_some(())
            },
        );
    }

    // A client on each host reaches `solo` by its short name: on its own
    // host for one of them, across nodes for the other.
    let solo_file = mh.write_file("solo.toml", &solo_job());
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        solo_file.as_os_str(),
    ]);
    let solo = mh.running_with_ips("solo", 1);
    let (solo_node, (solo_alloc, _)) = solo.iter().next().expect("one solo instance");
    let client_file = mh.write_file("client.toml", CLIENT_JOB);
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        client_file.as_os_str(),
    ]);
    let clients = mh.running_with_ips("client", 2);
    assert!(
        clients.keys().any(|n| n != solo_node),
        "no client on a host without solo: {clients:?}"
    );
    for (node, (client, _)) in &clients {
        let want = format!("got from {solo_alloc}");
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let log = mh.cli_ok(&["logs", client]);
            if log.contains(&want) {
                break;
            }
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            assert!(
                Instant::now() < deadline,
                "the client on {node} never fetched from solo on {solo_node} ({solo_alloc}); \
                 its last lines: {tail:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Host 1 dies: within the node grace period (plus the time to notice
    // and a second of slack) its instance leaves host 0's answers.
    let h1 = mh.host(1).node_id.clone();
    let dead_ip = web[&h1].1;
    mh.kill_host(1);
    let survivor: BTreeSet<Ipv4Addr> = web_ips
        .iter()
        .copied()
        .filter(|ip| *ip != dead_ip)
        .collect();
    // The deadline: the grace, plus 2 s to notice the death and relay it.
    poll_until(
        &format!("{dead_ip} to leave host 0's answers within the node grace (+2 s)"),
        GRACE + Duration::from_secs(2),
        || {
            (node_answers(&mh, 0, bridges[0], "web.service.drover.internal") == survivor)
                .then_some(())
        },
    );
    for job in ["client", "solo", "web"] {
        mh.cli_ok(&["job", "stop", job]);
    }
}
