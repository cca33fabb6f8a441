//! Service discovery through a real `drover dev`: the scheduler writes the
//! SkyDNS record of a running service instance (with the allocation's
//! address and the configured TTL, bound to its node's lease), the DNS
//! answers it, `drover job status` counts it, and a stop removes it before
//! the stop returns. A second, rogue node registered on the same scheduler
//! cannot make DNS serve an address for another node's allocation, at an
//! address outside its subnet, or under a service its job does not
//! declare; the one thing it may register, its own allocation's service at
//! an address of its own subnet, vanishes with its lease once it is gone.
//! After a restart of `drover dev` the records stay, on a lease the new
//! scheduler renews.
//!
//! Needs root, `dig` and the binary: `cargo build -p drover-cli && cargo
//! test -p drover-tests --test discovery_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_tests::checks::{service, str_of, wait_running, WAIT};
use drover_tests::skydns::{a_records, dig, lease_remaining, stored, Stored};
use drover_tests::{poll_until, unique_name, DevCluster};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const ZONE_KEYS: &str = "/skydns/internal/drover/";

/// A service job `name` of `count` sleeping instances offering `svc` on
/// port 8080, without checks.
fn job_with_service(name: &str, count: u32, svc: &str) -> String {
    format!(
        "{}\n[[group.service]]\nname = \"{svc}\"\nport = 8080\ntags = [\"v2\"]\n",
        service(name, count, "exec sleep 3600")
    )
}

/// The one running allocation of `job`: its id, node and address.
fn running_alloc(c: &DevCluster, job: &str) -> (String, String, String) {
    let status = wait_running(c, job, 1);
    let a = &status["allocations"][0];
    let id = str_of(a, "id").to_owned();
    let node = str_of(a, "node_id").to_owned();
    let ip = poll_until("the allocation's address", WAIT, || {
        let s = c.cli_json(&["job", "status", job]);
        let ip = s["allocations"][0]["ip"].as_str()?.to_owned();
        (!ip.is_empty()).then_some(ip)
    });
    (id, node, ip)
}

fn record(c: &DevCluster, key: &str) -> Option<Stored> {
    stored(c.store_addr(), key)
        .into_iter()
        .find(|r| r.key == key)
}

#[test]
fn a_service_without_checks_is_served_while_it_runs_and_gone_once_stopped() {
    let c = DevCluster::start_with(&["--dns-ttl", "7"]);
    let dns = c.dns_addr();
    let job = unique_name("disc");
    let file = c.write_file(&format!("{job}.toml"), &job_with_service(&job, 1, "web"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let (alloc, node, ip) = running_alloc(&c, &job);

    // The record: the allocation's address, the service's port and tags,
    // the configured TTL, bound to a lease.
    let key = format!("{ZONE_KEYS}service/web/{alloc}");
    let rec = poll_until("the service's record", WAIT, || record(&c, &key));
    let v = &rec.value;
    assert_eq!(v["host"], ip.as_str(), "{v}");
    assert_eq!(
        (&v["port"], &v["ttl"], &v["priority"], &v["weight"]),
        (&8080.into(), &7.into(), &10.into(), &10.into()),
        "{v}"
    );
    assert_eq!(v["tags"], serde_json::json!(["v2"]), "{v}");
    assert_ne!(rec.lease, 0, "not bound to a lease: {rec:?}");
    // The node's record, bound to the same lease.
    let n = record(&c, &format!("{ZONE_KEYS}node/{node}")).expect("the node's record");
    assert_eq!(
        (n.value["host"].as_str(), n.lease),
        (Some("127.0.0.1"), rec.lease)
    );

    // Answered by the DNS, with the configured TTL.
    let answer = poll_until("web to be answered", WAIT, || {
        let a = dig(dns, &["A", "web.service.drover.internal"]);
        (a_records(&a) == [ip.clone()]).then_some(a)
    });
    let want = ["web.service.drover.internal.", "7", "IN", "A", ip.as_str()];
    assert!(
        answer
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == want),
        "{answer}"
    );
    let tagged = dig(dns, &["A", "v2.web.service.drover.internal"]);
    assert_eq!(a_records(&tagged), [ip.as_str()], "{tagged}");

    // `job status` counts it.
    let s = c.cli_json(&["job", "status", &job]);
    assert_eq!(
        s["services"],
        serde_json::json!([{"group": "main", "service": "web", "healthy": 1, "instances": 1}])
    );
    let table = c.cli_ok(&["job", "status", &job]);
    assert!(table.contains("Services"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["main", "web", "1/1"]),
        "{table}"
    );

    // Stopped: the record is deleted before the stop returns, then DNS
    // answers NXDOMAIN.
    c.cli_ok(&["job", "stop", &job, "--detach"]);
    assert!(record(&c, &key).is_none(), "record left after the stop");
    poll_until("web to leave the answers", WAIT, || {
        let a = dig(dns, &["A", "web.service.drover.internal"]);
        a.contains("status: NXDOMAIN").then_some(())
    });
    let s = c.cli_json(&["job", "status", &job]);
    assert_eq!(s["services"][0]["healthy"], 0, "{s}");
}

/// A node's message.
fn msg(m: pb::agent_message::Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

/// `alloc` running at `ip`, with `checks`.
fn status(alloc: &str, ip: &str, checks: Vec<pb::CheckState>) -> pb::AgentMessage {
    msg(pb::agent_message::Msg::AllocStatus(pb::AllocStatus {
        alloc_id: alloc.into(),
        status: "running".into(),
        ip: ip.into(),
        checks,
        ..Default::default()
    }))
}

/// The host `n` of `subnet` (`10.252.0.0/24`).
fn host(subnet: &str, n: u8) -> String {
    let base: Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    let o = base.octets();
    Ipv4Addr::new(o[0], o[1], o[2], n).to_string()
}

#[test]
fn a_rogue_node_cannot_make_dns_serve_its_address() {
    // A cluster CIDR with room for a second node; this test's own range.
    let subnet = format!("10.252.{}.0/24", 1 + std::process::id() % 200);
    let c = DevCluster::start_with(&["--cluster-cidr", "10.252.0.0/16", "--subnet", &subnet]);
    let dns = c.dns_addr();
    let job = unique_name("web");
    let file = c.write_file(&format!("{job}.toml"), &job_with_service(&job, 1, "web"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let (real, real_node, real_ip) = running_alloc(&c, &job);
    poll_until("the real record", WAIT, || {
        record(&c, &format!("{ZONE_KEYS}service/web/{real}"))
    });

    // A runtime of its own thread: the rogue heartbeats while the test
    // waits on the CLI and dig.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rogue = unique_name("rogue");
    let (tx, rogue_subnet, mut down) = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(c.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut agents = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(64);
        tx.send(msg(pb::agent_message::Msg::Register(pb::Register {
            node: Some(pb::Node {
                // No address: no node record, no route to it.
                id: rogue.clone(),
                cpu_millis: 100_000,
                memory_mb: 100_000,
                ..Default::default()
            }),
            running: vec![],
            partial_assignments: false,
            partial_peers: false,
        })))
        .await
        .unwrap();
        let mut down = agents
            .connect(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = down.message().await.unwrap().unwrap();
        let Some(pb::scheduler_message::Msg::Registered(r)) = first.msg else {
            panic!("expected Registered, got {first:?}");
        };
        // Heartbeats keep the rogue alive (and its lease renewed).
        let beats = tx.clone();
        tokio::spawn(async move {
            loop {
                let hb = msg(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                    unix_ms: 0,
                }));
                if beats.send(hb).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        (tx, r.subnet, down)
    });
    assert_ne!(rogue_subnet, subnet, "the rogue got a subnet of its own");
    let rogue_ip = host(&rogue_subnet, 10);
    let send = |m: pb::AgentMessage| rt.block_on(tx.send(m)).unwrap();

    // 1. Another node's allocation, at the rogue's address.
    send(status(&real, &rogue_ip, vec![]));

    // The rogue gets an allocation of its own: the real node drained (to
    // the end, so that the decoy is not placed there once the rogue is
    // gone), a job with service `decoy` can only go there.
    c.cli_ok(&["node", "drain", &real_node]);
    let decoy_job = unique_name("decoy");
    let decoy_file = c.write_file(
        &format!("{decoy_job}.toml"),
        &job_with_service(&decoy_job, 1, "decoy"),
    );
    c.cli_json(&["job", "run", decoy_file.to_str().unwrap(), "--detach"]);
    let mine = rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            loop {
                let m = down.message().await.unwrap().expect("stream open");
                let Some(pb::scheduler_message::Msg::Assignments(a)) = m.msg else {
                    continue;
                };
                if let Some(a) = a
                    .allocations
                    .iter()
                    .filter_map(|a| a.allocation.as_ref())
                    .find(|a| a.job == decoy_job)
                {
                    return a.id.clone();
                }
            }
        })
        .await
        .expect("the decoy allocation assigned to the rogue")
    });
    // The scheduler's later messages are read and dropped.
    rt.spawn(async move { while let Ok(Some(_)) = down.message().await {} });

    // 2. Its own allocation at the real instance's address (outside its
    // subnet), 3. at its bridge's address, 4. with checks of `web`, which
    // its job does not declare.
    send(status(&mine, &real_ip, vec![]));
    send(status(&mine, &host(&rogue_subnet, 1), vec![]));
    let web_check = pb::CheckState {
        service: "web".into(),
        index: 0,
        r#type: "tcp".into(),
        status: "passing".into(),
        ..Default::default()
    };
    send(status(&mine, &rogue_ip, vec![web_check]));
    // 5. What it may do: its own allocation's service at its own address.
    // Once that is served, every message before it has been handled.
    send(status(&mine, &rogue_ip, vec![]));
    poll_until("the rogue's own service to be answered", WAIT, || {
        let a = dig(dns, &["A", "decoy.service.drover.internal"]);
        (a_records(&a) == [rogue_ip.clone()]).then_some(())
    });

    // DNS serves the real address for web, and nothing else.
    let web = dig(dns, &["A", "web.service.drover.internal"]);
    assert_eq!(a_records(&web), [real_ip.as_str()], "{web}");
    let records = stored(c.store_addr(), "/skydns/");
    let at_rogue: Vec<&str> = records
        .iter()
        .filter(|r| r.value["host"] == rogue_ip.as_str() || r.value["host"] == real_ip.as_str())
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(
        at_rogue,
        [
            format!("{ZONE_KEYS}service/decoy/{mine}"),
            format!("{ZONE_KEYS}service/web/{real}"),
        ],
        "{records:?}"
    );
    let log = c.log_tail(400);
    let bridge = host(&rogue_subnet, 1);
    for (reason, detail) in [
        ("allocation belongs to node", real_node.as_str()),
        ("is outside the node's subnet", real_ip.as_str()),
        ("network, broadcast or bridge address", bridge.as_str()),
        ("declares no service", "web"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("allocation status refused")
                && l.contains(&rogue)
                && l.contains(reason)
                && l.contains(detail)),
            "no refusal {reason:?} ({detail}) in the log:\n{log}"
        );
    }

    // The rogue gone: its lease, and its record, go with it.
    drop(tx);
    drop(rt);
    poll_until("the rogue's record to expire", WAIT, || {
        let a = dig(dns, &["A", "decoy.service.drover.internal"]);
        a.contains("status: NXDOMAIN").then_some(())
    });
    let web = dig(dns, &["A", "web.service.drover.internal"]);
    assert_eq!(a_records(&web), [real_ip], "{web}");
}

/// After `drover dev` is killed and restarted (scheduler, store and agent
/// together; the task runs on), the records are bound to one lease of
/// the node (the old one adopted, or a new one) that the new scheduler
/// renews, and DNS still answers.
#[test]
fn records_stay_on_a_renewed_lease_after_a_restart() {
    let mut c = DevCluster::start();
    let job = unique_name("disc");
    let file = c.write_file(&format!("{job}.toml"), &job_with_service(&job, 1, "web"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let (alloc, node, ip) = running_alloc(&c, &job);
    let key = format!("{ZONE_KEYS}service/web/{alloc}");
    poll_until("the service's record", WAIT, || record(&c, &key));

    c.kill9_and_restart();
    let node_key = format!("{ZONE_KEYS}node/{node}");
    let rec = poll_until("the records on one lease", WAIT, || {
        let rec = record(&c, &key)?;
        let n = record(&c, &node_key)?;
        (rec.lease == n.lease).then_some(rec)
    });
    assert_eq!(rec.value["host"], ip.as_str(), "{rec:?}");
    // Renewed: its time left goes up again, which only a keep-alive does.
    let mut low = i64::MAX;
    poll_until("the lease to be renewed", WAIT, || {
        let left = lease_remaining(c.store_addr(), rec.lease);
        assert!(left > 0, "lease {:#x} gone", rec.lease);
        let renewed = left > low;
        low = low.min(left);
        renewed.then_some(())
    });
    let dns = c.dns_addr();
    poll_until("web to be answered after the restart", WAIT, || {
        let a = dig(dns, &["A", "web.service.drover.internal"]);
        (a_records(&a) == [ip.clone()]).then_some(())
    });
}
