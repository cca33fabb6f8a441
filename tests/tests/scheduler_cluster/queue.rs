//! Placements that wait, against fake agents, with the periodic reconcile
//! far beyond every deadline here: what waits is recorded on the job with
//! its reason, is not planned again while nothing changes, and is placed
//! promptly when a drain is lifted or a node joins.

use super::*;

/// The test's timings, but a periodic full pass only every ten minutes.
const SLOW_RECONCILE: Timing = Timing {
    reconcile: Duration::from_secs(600),
    ..TIMING
};

/// Waits until `n` nodes are registered.
async fn wait_nodes(c: &Cluster, n: usize) {
    let mut nodes = pb::node_service_client::NodeServiceClient::new(c.channel().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = nodes.list(pb::ListNodesRequest {}).await.unwrap();
        if got.into_inner().nodes.len() >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} nodes never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain(c: &Cluster, id: &str, enable: bool) {
    pb::node_service_client::NodeServiceClient::new(c.channel().await)
        .drain(pb::DrainNodeRequest {
            id: id.into(),
            enable,
        })
        .await
        .unwrap();
}

async fn submit(c: &Cluster, j: pb::Job) -> pb::SubmitResponse {
    c.jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(j) })
        .await
        .unwrap()
        .into_inner()
}

/// What job `name` has pending, as `Get` says.
async fn pending(c: &Cluster, name: &str) -> Vec<pb::PendingPlacement> {
    c.job(name).await.job.unwrap().pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifted_drain_and_a_joining_node_place_what_waits_without_the_periodic_pass() {
    let c = Cluster::start_timed(SLOW_RECONCILE).await;
    let _a = FakeAgent::start(&c, "node-a").await;
    wait_nodes(&c, 1).await;
    drain(&c, "node-a", true).await;

    let done = submit(&c, job("q", 2)).await;
    assert!(done.allocations.is_empty());
    assert_eq!(done.pending.len(), 1, "{:?}", done.pending);
    let p = &done.pending[0];
    assert_eq!((p.group.as_str(), p.count), ("web", 2));
    assert!(p.reason.contains("draining"), "reason: {}", p.reason);
    assert_eq!(pending(&c, "q").await, done.pending, "recorded on the job");

    // Nothing changes: the waiting job is not planned again.
    let before = c.core.waiting_passes();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(c.core.waiting_passes(), before, "planned without an event");

    drain(&c, "node-a", false).await;
    c.wait_job("q", "both running, nothing pending", |j| {
        running_on(j).len() == 2 && j.job.as_ref().unwrap().pending.is_empty()
    })
    .await;

    // node-a has 800 of its 1000 millicores left: 8 of 12 fit.
    let done = submit(&c, job("big", 12)).await;
    assert_eq!(done.allocations.len(), 8);
    let counts: Vec<u32> = done.pending.iter().map(|p| p.count).collect();
    assert_eq!(counts, [4]);
    assert!(
        done.pending[0].reason.contains("short of CPU"),
        "{}",
        done.pending[0].reason
    );
    let list = c
        .jobs()
        .await
        .list(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    let big = list.jobs.iter().find(|j| j.name == "big").unwrap();
    assert_eq!((big.pending, big.desired), (4, 12));

    let _b = FakeAgent::start(&c, "node-b").await;
    c.wait_job("big", "all twelve running, nothing pending", |j| {
        running_on(j).len() == 12 && j.job.as_ref().unwrap().pending.is_empty()
    })
    .await;
    let passes = c.core.waiting_passes() - before;
    assert!(
        passes <= 3,
        "{passes} passes over waiting jobs for two capacity events"
    );
}
