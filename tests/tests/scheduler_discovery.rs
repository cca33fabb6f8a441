//! The scheduler's service registration against the real embedded store,
//! driven by a fake agent over `AgentService.Connect` that reports health
//! checks as the real agent will: a service with a check is registered
//! only once its check has been reported passing, leaves when the check
//! goes critical and comes back when it passes again, and a node that goes
//! silent with its stream still open loses its records: its lease runs
//! out, or is revoked when the node is declared down, whichever comes
//! first (node grace 1 s: lease TTL 1 s, which etcd raises to 2 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::subnet::SubnetConfig;
use drover_scheduler::{Core, Discovery, Timing};
use drover_store::embedded::EmbeddedEtcd;
use drover_store::Store;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(100),
    node_grace: Duration::from_secs(1),
    reconcile: Duration::from_millis(300),
};

/// Generous bound for what normally takes milliseconds.
const WAIT: Duration = Duration::from_secs(15);

const JOB: &str = r#"name = "shop"
kind = "service"
[[group]]
name = "g"
[[group.task]]
name = "t"
command = ["sleep", "3600"]
resources = { cpu_millis = 10, memory_mb = 8 }
[[group.service]]
name = "web"
port = 8080
[[group.service.check]]
type = "tcp"
interval_ms = 1000
"#;

/// Polls `f` until it returns `Some`, or panics naming `what`.
async fn until<T>(what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    drover_tests::poll_until_async(what, WAIT, f).await
}

fn msg(m: pb::agent_message::Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

fn running(alloc: &str, ip: &str, check: Option<&str>) -> pb::AgentMessage {
    let checks = check
        .map(|status| pb::CheckState {
            service: "web".into(),
            index: 0,
            r#type: "tcp".into(),
            status: status.into(),
            output: String::new(),
            last_unix_ms: 1,
        })
        .into_iter()
        .collect();
    msg(pb::agent_message::Msg::AllocStatus(pb::AllocStatus {
        alloc_id: alloc.into(),
        status: "running".into(),
        ip: ip.into(),
        checks,
        ..Default::default()
    }))
}

/// The keys under the zone, with their values' hosts.
async fn records(store: &Store) -> Vec<(String, String)> {
    store
        .list_skydns("/skydns/internal/drover/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| {
            let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            (kv.key, v["host"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_service_follows_its_check_and_a_silent_node_loses_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let etcd = EmbeddedEtcd::open(dir.path()).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(etcd.serve(l, stop.clone()));
    let store = Store::connect(std::slice::from_ref(&store_url), "/drover/")
        .await
        .unwrap();
    let core = Core::with_discovery(
        store.clone(),
        TIMING,
        SubnetConfig::default(),
        Discovery::default(),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(drover_scheduler::serve(core, l, stop.clone(), None));
    let channel: Channel = Endpoint::from_shared(url).unwrap().connect().await.unwrap();

    // The node: registers, heartbeats until `beat` is cancelled, and
    // passes on the ids of the allocations assigned to it.
    let mut agents = pb::agent_service_client::AgentServiceClient::new(channel.clone());
    let (tx, rx) = mpsc::channel(64);
    tx.send(msg(pb::agent_message::Msg::Register(pb::Register {
        node: Some(pb::Node {
            id: "n1".into(),
            address: "192.0.2.1".into(),
            cpu_millis: 1000,
            memory_mb: 1024,
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
    let Some(pb::scheduler_message::Msg::Registered(reg)) =
        down.message().await.unwrap().unwrap().msg
    else {
        panic!("expected Registered");
    };
    let subnet: Ipv4Addr = reg.subnet.split('/').next().unwrap().parse().unwrap();
    let ip = Ipv4Addr::from(u32::from(subnet) + 5).to_string();
    let beat = CancellationToken::new();
    let (beats, token) = (tx.clone(), beat.clone());
    tokio::spawn(async move {
        while !token.is_cancelled() {
            let hb = msg(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                unix_ms: 0,
            }));
            if beats.send(hb).await.is_err() {
                return;
            }
            tokio::time::sleep(TIMING.heartbeat).await;
        }
    });
    let (ids, mut assigned) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(Some(m)) = down.message().await {
            if let Some(pb::scheduler_message::Msg::Assignments(a)) = m.msg {
                for a in a.allocations.into_iter().filter_map(|a| a.allocation) {
                    let _ = ids.send(a.id).await;
                }
            }
        }
    });

    let node_key = "/skydns/internal/drover/node/n1".to_owned();
    until("the node's record", async || {
        records(&store)
            .await
            .contains(&(node_key.clone(), "192.0.2.1".into()))
            .then_some(())
    })
    .await;

    let job = drover_scheduler::jobfile::parse("shop.toml", JOB).unwrap();
    let mut jobs = pb::job_service_client::JobServiceClient::new(channel.clone());
    jobs.submit(pb::SubmitRequest { job: Some(job) })
        .await
        .unwrap();
    let alloc = tokio::time::timeout(WAIT, assigned.recv())
        .await
        .unwrap()
        .unwrap();
    let key = format!("/skydns/internal/drover/service/web/{alloc}");
    let web = (key.clone(), ip.clone());
    let healthy = async |jobs: &mut pb::job_service_client::JobServiceClient<Channel>| {
        let got = jobs
            .get(pb::GetJobRequest {
                name: "shop".into(),
            })
            .await
            .unwrap()
            .into_inner();
        (got.services[0].healthy, got.services[0].instances)
    };

    // Running, its check not yet reported: not registered.
    tx.send(running(&alloc, &ip, None)).await.unwrap();
    // Pending: still not.
    tx.send(running(&alloc, &ip, Some("pending")))
        .await
        .unwrap();
    // A barrier: once the pending check is stored, both were handled.
    until("the pending check to be stored", async || {
        let got = jobs
            .get(pb::GetJobRequest {
                name: "shop".into(),
            })
            .await
            .ok()?
            .into_inner();
        let a = got.allocations.first()?;
        (a.checks.first()?.status == "pending").then_some(())
    })
    .await;
    assert!(!records(&store).await.iter().any(|(k, _)| k == &key));
    assert_eq!(healthy(&mut jobs).await, (0, 1));

    // Passing: registered at the reported address.
    tx.send(running(&alloc, &ip, Some("passing")))
        .await
        .unwrap();
    until("web to be registered", async || {
        records(&store).await.contains(&web).then_some(())
    })
    .await;
    assert_eq!(healthy(&mut jobs).await, (1, 1));

    // Critical: gone; passing again: back.
    tx.send(running(&alloc, &ip, Some("critical")))
        .await
        .unwrap();
    until("web to leave", async || {
        (!records(&store).await.iter().any(|(k, _)| k == &key)).then_some(())
    })
    .await;
    tx.send(running(&alloc, &ip, Some("passing")))
        .await
        .unwrap();
    until("web to come back", async || {
        records(&store).await.contains(&web).then_some(())
    })
    .await;

    // Silent, its stream still open: the lease runs out (or is revoked
    // with the node down) and takes the node's records with it.
    beat.cancel();
    until("the silent node's records to expire", async || {
        records(&store).await.is_empty().then_some(())
    })
    .await;
    drop(tx);
}
