//! The scheduler-wide algorithm (`drover scheduler --algorithm`) and a
//! job's own reach placement through the real scheduler and store.

use drover_scheduler::job::Algorithm;

use super::*;

/// Waits until `n` nodes are registered.
async fn nodes_registered(c: &Cluster, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = pb::node_service_client::NodeServiceClient::new(c.channel().await)
            .list(pb::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner();
        if got.nodes.len() == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} nodes never registered: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where one more instance goes once node-a holds one (of job `first`):
/// the node chosen for job `second`, whose algorithm is `algorithm`.
async fn next_to_first(placement: PlanConfig, algorithm: &str) -> String {
    let c = Cluster::start_placing(placement).await;
    let _a = FakeAgent::start(&c, "node-a").await;
    let _b = FakeAgent::start(&c, "node-b").await;
    nodes_registered(&c, 2).await;
    let mut first = job("first", 1);
    first.algorithm = "binpack".into();
    let done = c
        .jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(first) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.allocations[0].node_id, "node-a",
        "ties go to the first node"
    );
    let mut second = job("second", 1);
    second.algorithm = algorithm.into();
    let plan = c
        .jobs()
        .await
        .plan(pb::PlanRequest { job: Some(second) })
        .await
        .unwrap()
        .into_inner();
    plan.place[0].node_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_default_and_the_jobs_own_algorithm_choose_the_node() {
    let spread = PlanConfig {
        algorithm: Algorithm::Spread,
        ..Default::default()
    };
    assert_eq!(
        next_to_first(PlanConfig::default(), "").await,
        "node-a",
        "bin-pack"
    );
    assert_eq!(
        next_to_first(spread, "").await,
        "node-b",
        "--algorithm spread"
    );
    assert_eq!(
        next_to_first(spread, "binpack").await,
        "node-a",
        "the job's own"
    );
    assert_eq!(
        next_to_first(PlanConfig::default(), "spread").await,
        "node-b"
    );
}
