//! A node that comes back after being replaced, against a real scheduler
//! over the embedded store, with a hand-driven agent stream (so when the
//! stale copy is reported stopped is the test's choice): the node is
//! `initializing` from its registration until it reports the replaced
//! copy terminal, and `ready` after; one that never reports it is ready
//! anyway past its bound; a fresh node is ready at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_scheduler::Timing;
use drover_tests::inproc::Scheduler;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(200),
    node_grace: Duration::from_secs(1),
    reconcile: Duration::from_millis(500),
};

/// Generous: waiting is polling, never a measurement.
const DEADLINE: Duration = Duration::from_secs(60);

/// The job's kill timeout: long, so that the bound (this plus the grace)
/// cannot be what makes the node ready in the first part.
const KILL_TIMEOUT_MS: i64 = 120_000;

/// Node `id`'s status as the scheduler lists it.
async fn node_status(sched: &Scheduler, id: &str) -> String {
    let mut nodes = pb::node_service_client::NodeServiceClient::new(sched.channel().await);
    let listed = nodes.list(pb::ListNodesRequest {}).await.unwrap();
    listed
        .into_inner()
        .nodes
        .into_iter()
        .find(|n| n.id == id)
        .map(|n| n.status)
        .unwrap_or_default()
}

async fn allocation(sched: &Scheduler, job: &str) -> Option<pb::Allocation> {
    let mut jobs = pb::job_service_client::JobServiceClient::new(sched.channel().await);
    let got = jobs
        .get(pb::GetJobRequest { name: job.into() })
        .await
        .unwrap()
        .into_inner();
    got.allocations.into_iter().next()
}

/// One agent stream driven by hand: registered, heartbeating until
/// dropped.
struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::SchedulerMessage>,
    beat: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.beat.cancel();
    }
}

impl Agent {
    /// Registers node `id` reporting `running`.
    async fn register(sched: &Scheduler, id: &str, running: Vec<pb::AllocStatus>) -> Agent {
        let mut client = pb::agent_service_client::AgentServiceClient::new(sched.channel().await);
        let (tx, rx) = mpsc::channel(64);
        let register = pb::Register {
            node: Some(pb::Node {
                id: id.into(),
                hostname: id.into(),
                address: "127.0.0.1".into(),
                cpu_millis: 1000,
                memory_mb: 1024,
                agent_version: "test".into(),
                ..Default::default()
            }),
            running,
            partial_assignments: false,
            partial_peers: false,
        };
        send(&tx, pb::agent_message::Msg::Register(register)).await;
        let inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let beat = CancellationToken::new();
        let (hb, stop) = (tx.clone(), beat.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TIMING.heartbeat);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {
                        let msg = pb::agent_message::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 });
                        if hb.send(pb::AgentMessage { msg: Some(msg) }).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Agent { tx, inbound, beat }
    }

    /// The next assignment list (skipping other messages).
    async fn assignments(&mut self) -> Vec<pb::Allocation> {
        let next = async {
            while let Some(m) = self.inbound.next().await {
                if let Some(pb::scheduler_message::Msg::Assignments(a)) = m.unwrap().msg {
                    return a
                        .allocations
                        .into_iter()
                        .filter_map(|a| a.allocation)
                        .collect();
                }
            }
            panic!("stream closed before an assignment");
        };
        tokio::time::timeout(DEADLINE, next).await.unwrap()
    }

    async fn report(&self, alloc_id: &str, status: &str) {
        send(
            &self.tx,
            pb::agent_message::Msg::AllocStatus(status_of(alloc_id, status)),
        )
        .await;
    }
}

fn status_of(alloc_id: &str, status: &str) -> pb::AllocStatus {
    pb::AllocStatus {
        alloc_id: alloc_id.into(),
        status: status.into(),
        ..Default::default()
    }
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, msg: pb::agent_message::Msg) {
    tx.send(pb::AgentMessage { msg: Some(msg) }).await.unwrap();
}

/// Polls `check` until it gives a value, or panics with `what`.
async fn until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    drover_tests::poll_until_async(what, DEADLINE, check).await
}

fn job(name: &str) -> pb::Job {
    pb::Job {
        name: name.into(),
        kind: "service".into(),
        groups: vec![pb::Group {
            name: "web".into(),
            count: 1,
            tasks: vec![pb::Task {
                name: "app".into(),
                command: vec!["/bin/true".into()],
                resources: Some(pb::Resources {
                    cpu_millis: 250,
                    memory_mb: 128,
                }),
                kill_timeout_ms: KILL_TIMEOUT_MS,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_is_initializing_until_its_replaced_copy_is_stopped() {
    let sched = Scheduler::start(TIMING).await;
    let node = "ret-node-1";

    // A fresh node is ready at once, and gets the job's instance.
    let mut agent = Agent::register(&sched, node, Vec::new()).await;
    assert_eq!(node_status(&sched, node).await, "ready");
    let mut jobs = pb::job_service_client::JobServiceClient::new(sched.channel().await);
    jobs.submit(pb::SubmitRequest {
        job: Some(job("ret")),
    })
    .await
    .unwrap();
    let alloc = loop {
        if let Some(a) = agent.assignments().await.into_iter().next() {
            break a;
        }
    };
    agent.report(&alloc.id, "running").await;
    until("the instance running", || async {
        let a = allocation(&sched, "ret").await?;
        (a.status == "running").then_some(())
    })
    .await;

    // Its stream ends: down past the grace, the instance lost.
    drop(agent);
    until("the node down", || async {
        (node_status(&sched, node).await == "down").then_some(())
    })
    .await;
    let lost = allocation(&sched, "ret").await.unwrap();
    assert_eq!(
        (lost.status.as_str(), lost.desired.as_str()),
        ("lost", "stop")
    );

    // It returns still running the copy: initializing, and told to stop it.
    let t0 = Instant::now();
    let mut agent = Agent::register(&sched, node, vec![status_of(&alloc.id, "running")]).await;
    let told = agent.assignments().await;
    assert!(
        told.iter().any(|a| a.id == alloc.id && a.desired == "stop"),
        "{told:?}"
    );
    // As long as the copy is not reported stopped (a few looks over a
    // second, well inside the bound of kill timeout + grace), it stays so.
    for _ in 0..10 {
        assert_eq!(node_status(&sched, node).await, "initializing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "initializing for {} ms while the copy runs",
        t0.elapsed().as_millis()
    );
    agent.report(&alloc.id, "complete").await;
    until("the node ready once the copy is stopped", || async {
        (node_status(&sched, node).await == "ready").then_some(())
    })
    .await;
    println!(
        "ready {} ms after registering again",
        t0.elapsed().as_millis()
    );

    // A node that never reports its stale copy (here one the cluster does
    // not know) is ready anyway past its bound.
    drop(agent);
    let t1 = Instant::now();
    let _agent = Agent::register(&sched, node, vec![status_of("no-such-alloc", "running")]).await;
    assert_eq!(node_status(&sched, node).await, "initializing");
    until("the node ready past its bound", || async {
        (node_status(&sched, node).await == "ready").then_some(())
    })
    .await;
    println!(
        "never reported: ready anyway {} ms after registering",
        t1.elapsed().as_millis()
    );
}
