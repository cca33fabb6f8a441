//! The node simulator (`drover_tests::sim`) against a real scheduler over
//! the embedded store: 50 simulated nodes register with their metadata, a
//! job is placed over them and every instance is reported running, and an
//! allocation failed on command shows failed in the scheduler.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::Timing;
use drover_tests::inproc::Scheduler;
use drover_tests::sim::{NodeSpec, Sim};

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(200),
    node_grace: Duration::from_secs(5),
    reconcile: Duration::from_millis(500),
};

/// Generous: waiting is polling, never a measurement.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it gives a value, or panics with `what`.
async fn until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    drover_tests::poll_until_async(what, DEADLINE, check).await
}

fn job(name: &str, count: i64) -> pb::Job {
    pb::Job {
        name: name.into(),
        kind: "service".into(),
        groups: vec![pb::Group {
            name: "web".into(),
            count,
            tasks: vec![pb::Task {
                name: "app".into(),
                command: vec!["/bin/true".into()],
                resources: Some(pb::Resources {
                    cpu_millis: 250,
                    memory_mb: 128,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_simulated_nodes_and_a_failure_on_command_shows() {
    let sched = Scheduler::start(TIMING).await;
    let spec = NodeSpec {
        meta: [("rack".to_string(), "r1".to_string())].into(),
        cpu_millis: 1000,
        memory_mb: 1024,
        ..NodeSpec::default()
    };
    let sim = Sim::start(&sched.url, 50, spec).await.unwrap();
    until("50 nodes registered", || async {
        (sim.counts().registered == 50).then_some(())
    })
    .await;
    let mut nodes = pb::node_service_client::NodeServiceClient::new(sched.channel().await);
    let listed = nodes
        .list(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.nodes.len(), 50);
    for n in &listed.nodes {
        assert_eq!(n.status, "ready", "{n:?}");
        assert_eq!(n.meta.get("rack").map(String::as_str), Some("r1"), "{n:?}");
        assert_eq!((n.cpu_millis, n.memory_mb), (1000, 1024));
    }

    // 150 instances of 1/4 core: three per node on average, anti-affinity
    // puts them on every node.
    let mut jobs = pb::job_service_client::JobServiceClient::new(sched.channel().await);
    jobs.submit(pb::SubmitRequest {
        job: Some(job("web", 150)),
    })
    .await
    .unwrap();
    let running = until("150 allocations running in the scheduler", || {
        let mut jobs = jobs.clone();
        async move {
            let got = jobs
                .get(pb::GetJobRequest { name: "web".into() })
                .await
                .unwrap()
                .into_inner();
            let running: Vec<pb::Allocation> = got
                .allocations
                .into_iter()
                .filter(|a| a.desired == "run" && a.status == "running")
                .collect();
            (running.len() == 150).then_some(running)
        }
    })
    .await;
    assert_eq!(sim.counts().running, 150, "{:?}", sim.counts());
    let on: BTreeSet<&str> = running.iter().map(|a| a.node_id.as_str()).collect();
    assert_eq!(on.len(), 50, "every node got some");
    let received = sim.received();
    assert!(
        received.iter().all(|r| r.assignment_entries >= 1),
        "every node was assigned something: {received:?}"
    );

    let victim = running[7].id.clone();
    assert!(sim.fail(&victim), "a node holds {victim}");
    assert!(!sim.fail("no-such-alloc"));
    until("the failed allocation shows failed", || {
        let mut jobs = jobs.clone();
        let victim = victim.clone();
        async move {
            let got = jobs
                .get(pb::GetJobRequest { name: "web".into() })
                .await
                .unwrap()
                .into_inner();
            got.allocations
                .iter()
                .any(|a| a.id == victim && a.status == "failed")
                .then_some(())
        }
    })
    .await;
    assert_eq!(sim.allocs("failed"), vec![victim]);
    assert_eq!(sim.counts().failed, 1);
}
