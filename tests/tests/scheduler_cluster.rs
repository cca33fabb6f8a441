//! The scheduler against the real embedded store, driven over gRPC by fake
//! agents that speak `AgentService.Connect`: placement across nodes, node
//! loss and replacement, drain, stop, and the refusal of bad jobs. Jobs
//! larger than one store transaction are in `scheduler_cluster/batches.rs`,
//! placements that wait for capacity in `scheduler_cluster/queue.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::placement::PlanConfig;
use drover_scheduler::{Core, Timing};
use drover_store::embedded::EmbeddedEtcd;
use drover_store::Store;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(100),
    node_grace: Duration::from_millis(600),
    reconcile: Duration::from_millis(200),
};

/// An embedded store and a scheduler on loopback, stopped on drop.
struct Cluster {
    _dir: tempfile::TempDir,
    addr: String,
    store: Store,
    stop: CancellationToken,
    /// The scheduler's core, for what tests count (passes).
    core: std::sync::Arc<Core>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(TIMING, PlanConfig::default()).await
    }

    /// Like [`Cluster::start`], with the scheduler's timings given.
    async fn start_timed(timing: Timing) -> Cluster {
        Cluster::start_with(timing, PlanConfig::default()).await
    }

    /// A cluster whose scheduler places with `placement`.
    async fn start_placing(placement: PlanConfig) -> Cluster {
        Cluster::start_with(TIMING, placement).await
    }

    async fn start_with(timing: Timing, placement: PlanConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let etcd = EmbeddedEtcd::open(dir.path()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_addr = l.local_addr().unwrap();
        tokio::spawn(etcd.serve(l, stop.clone()));
        let store = Store::connect(&[format!("http://{store_addr}")], "/drover/")
            .await
            .unwrap();
        Cluster::over_with(store, dir, stop, timing, placement).await
    }

    /// A scheduler over `store`, stopped with `stop`.
    async fn over(store: Store, dir: tempfile::TempDir, stop: CancellationToken) -> Cluster {
        Cluster::over_with(store, dir, stop, TIMING, PlanConfig::default()).await
    }

    async fn over_with(
        store: Store,
        dir: tempfile::TempDir,
        stop: CancellationToken,
        timing: Timing,
        placement: PlanConfig,
    ) -> Cluster {
        let core = Core::with_placement(
            store.clone(),
            timing,
            Default::default(),
            Default::default(),
            placement,
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(drover_scheduler::serve(core.clone(), l, stop.clone(), None));
        Cluster {
            _dir: dir,
            addr,
            store,
            stop,
            core,
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn jobs(&self) -> pb::job_service_client::JobServiceClient<Channel> {
        pb::job_service_client::JobServiceClient::new(self.channel().await)
    }

    async fn job(&self, name: &str) -> pb::GetJobResponse {
        self.jobs()
            .await
            .get(pb::GetJobRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls `job` until `pred` holds, or panics after 10 s.
    async fn wait_job(&self, name: &str, what: &str, pred: impl Fn(&pb::GetJobResponse) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.job(name).await;
            if pred(&got) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; job is {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A node that registers, heartbeats and reports every assignment as
/// running (or complete once asked to stop). Dropping it is a node loss.
struct FakeAgent {
    stop: CancellationToken,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeAgent {
    async fn start(cluster: &Cluster, id: &str) -> FakeAgent {
        let mut client = pb::agent_service_client::AgentServiceClient::new(cluster.channel().await);
        let (tx, rx) = mpsc::channel(64);
        tx.send(register(id)).await.unwrap();
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(100));
            // What it already said, so that assignments that have not
            // caught up yet are not answered again (hundreds of
            // allocations would otherwise cost hundreds of repeats each).
            let mut said = std::collections::HashSet::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = beat.tick() => {
                        let hb = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 })) };
                        if tx.send(hb).await.is_err() { return; }
                    }
                    m = inbound.next() => {
                        let Some(Ok(m)) = m else { return };
                        let Some(pb::scheduler_message::Msg::Assignments(a)) = m.msg else { continue };
                        for asg in a.allocations {
                            let alloc = asg.allocation.unwrap();
                            let status = if alloc.desired == "stop" { "complete" } else { "running" };
                            if alloc.status == status || !said.insert((alloc.id.clone(), status)) { continue; }
                            let st = pb::AgentMessage { msg: Some(pb::agent_message::Msg::AllocStatus(pb::AllocStatus {
                                alloc_id: alloc.id,
                                status: status.into(),
                                tasks: vec![],
                                ..Default::default()
                            }))};
                            if tx.send(st).await.is_err() { return; }
                        }
                    }
                }
            }
        });
        FakeAgent { stop }
    }
}

/// The first message of an agent stream for a node with 1 core and 1 GiB.
fn register(id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            node: Some(pb::Node {
                id: id.into(),
                hostname: id.into(),
                address: "127.0.0.1".into(),
                cpu_millis: 1000,
                memory_mb: 1024,
                ..Default::default()
            }),
            running: vec![],
            partial_assignments: false,
            partial_peers: false,
        })),
    }
}

fn job(name: &str, count: i64) -> pb::Job {
    pb::Job {
        name: name.into(),
        kind: "service".into(),
        groups: vec![pb::Group {
            name: "web".into(),
            count,
            restart: None,
            tasks: vec![pb::Task {
                name: "app".into(),
                command: vec!["/bin/true".into()],
                env: Default::default(),
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_mb: 64,
                }),
                kill_timeout_ms: 0,
                rootfs: None,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn running_on(got: &pb::GetJobResponse) -> Vec<String> {
    let mut v: Vec<String> = got
        .allocations
        .iter()
        .filter(|a| a.desired == "run" && a.status == "running")
        .map(|a| a.node_id.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_noticed_and_its_allocations_replaced() {
    let c = Cluster::start().await;
    let a = FakeAgent::start(&c, "node-a").await;
    let _b = FakeAgent::start(&c, "node-b").await;
    c.jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("web", 2)),
        })
        .await
        .unwrap();
    c.wait_job("web", "one instance per node", |j| {
        running_on(j) == ["node-a", "node-b"]
    })
    .await;

    drop(a);
    c.wait_job(
        "web",
        "node-a's instance lost and replaced on node-b",
        |j| {
            let lost = j
                .allocations
                .iter()
                .any(|x| x.node_id == "node-a" && x.status == "lost");
            lost && running_on(j) == ["node-b", "node-b"]
        },
    )
    .await;
    let nodes = pb::node_service_client::NodeServiceClient::new(c.channel().await)
        .list(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let a = nodes.iter().find(|n| n.id == "node-a").unwrap();
    assert_eq!(a.status, "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_gets_no_new_work_and_stop_completes() {
    let c = Cluster::start().await;
    let _a = FakeAgent::start(&c, "node-a").await;
    let _b = FakeAgent::start(&c, "node-b").await;
    // Wait until both nodes registered.
    let mut nodes = pb::node_service_client::NodeServiceClient::new(c.channel().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes
        .list(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .len()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
        .drain(pb::DrainNodeRequest {
            id: "node-b".into(),
            enable: true,
        })
        .await
        .unwrap();
    c.jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("api", 3)),
        })
        .await
        .unwrap();
    c.wait_job("api", "all three on node-a", |j| {
        running_on(j) == ["node-a", "node-a", "node-a"]
    })
    .await;

    let stopped = c
        .jobs()
        .await
        .stop(pb::StopJobRequest { name: "api".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.stopped_allocations.len(), 3);
    c.wait_job("api", "every allocation complete", |j| {
        j.job.as_ref().unwrap().status == "stopped"
            && j.allocations.iter().all(|a| a.status == "complete")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_job_changes_nothing_and_resubmission_is_idempotent() {
    let c = Cluster::start().await;
    let _a = FakeAgent::start(&c, "node-a").await;
    let mut bad = job("bad", 0);
    bad.groups[0].tasks[0].resources = Some(pb::Resources {
        cpu_millis: 100,
        memory_mb: 0,
    });
    let err = c
        .jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("group \"web\" task \"app\": resources.memory_mb must be > 0, got 0"),
        "{}",
        err.message()
    );
    assert!(err
        .message()
        .contains("group \"web\": count must be > 0, got 0"));
    let list = c
        .jobs()
        .await
        .list(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.jobs.is_empty(), "a refused job was stored: {list:?}");

    let first = c
        .jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("same", 2)),
        })
        .await
        .unwrap()
        .into_inner();
    let second = c
        .jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("same", 2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.version, second.version);
    let ids = |r: &pb::SubmitResponse| {
        let mut v: Vec<String> = r.allocations.iter().map(|a| a.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&first), ids(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_job_and_allocation_events() {
    let c = Cluster::start().await;
    let _a = FakeAgent::start(&c, "node-a").await;
    let mut events = c
        .jobs()
        .await
        .watch(pb::WatchJobRequest { name: "w".into() })
        .await
        .unwrap()
        .into_inner();
    c.jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("w", 1)),
        })
        .await
        .unwrap();
    // Another job's events are filtered out.
    c.jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("other", 1)),
        })
        .await
        .unwrap();
    let (mut saw_job, mut saw_running) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(saw_job && saw_running) {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("watch events within 10 s")
            .expect("stream open")
            .expect("event");
        match ev.event.expect("event set") {
            pb::job_event::Event::Job(j) => {
                assert_eq!(j.job.unwrap().name, "w");
                saw_job = true;
            }
            pb::job_event::Event::Allocation(a) => {
                assert_eq!(a.job, "w");
                saw_running |= a.status == "running";
            }
            pb::job_event::Event::JobDeleted(n) => panic!("unexpected delete of {n}"),
        }
    }
    // The other job's events happen too, and must not come through: once
    // its allocation runs, a change to the watched job marks the end, and
    // everything before that mark must still be the watched job's.
    let other_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = c
            .jobs()
            .await
            .get(pb::GetJobRequest {
                name: "other".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.allocations.iter().any(|a| a.status == "running") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < other_deadline,
            "the other job never ran: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("w", 2)),
        })
        .await
        .unwrap();
    let mark_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(mark_deadline, events.next())
            .await
            .expect("the end mark within 10 s")
            .expect("stream open")
            .expect("event");
        match ev.event.expect("event set") {
            pb::job_event::Event::Job(j) => {
                let j = j.job.unwrap();
                assert_eq!(j.name, "w");
                if j.groups[0].count == 2 {
                    break;
                }
            }
            pb::job_event::Event::Allocation(a) => assert_eq!(a.job, "w", "{a:?}"),
            pb::job_event::Event::JobDeleted(n) => panic!("unexpected delete of {n}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_told_its_session_ended() {
    let c = Cluster::start().await;
    let mut client = pb::agent_service_client::AgentServiceClient::new(c.channel().await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(register("mute")).await.unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Keep `tx` open but send nothing more: the stream must not stay
    // half-alive, or the agent would never reconnect.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ended = loop {
        match tokio::time::timeout_at(deadline, inbound.next()).await {
            Err(_) => panic!("the scheduler kept a silent agent's stream open"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(status))) => break Some(status),
            Ok(None) => break None,
        }
    };
    if let Some(status) = ended {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    drop(tx);
}

#[path = "scheduler_cluster/batches.rs"]
mod batches;
#[path = "scheduler_cluster/history.rs"]
mod history;
#[path = "scheduler_cluster/limits.rs"]
mod limits;
#[path = "scheduler_cluster/placement.rs"]
mod placement;
#[path = "scheduler_cluster/queue.rs"]
mod queue;
