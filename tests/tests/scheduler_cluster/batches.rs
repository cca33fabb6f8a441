//! Jobs larger than one store transaction (etcd and the embedded store take
//! at most 128 operations and 1.5 MiB in one): placed, replaced, stopped
//! and lost in batches; completed by reconcile when only part of them was
//! written; refused, naming the limit, when the job record alone is too
//! large.

use drover_store::{Kind, Write};

use super::*;

/// A service job of `count` instances of `command`, each reserving 1
/// millicore and 1 MiB: 300 of them fit on one fake node.
fn tiny(name: &str, count: i64, command: &str) -> pb::Job {
    let mut j = job(name, count);
    let task = &mut j.groups[0].tasks[0];
    task.command = vec![command.into()];
    task.resources = Some(pb::Resources {
        cpu_millis: 1,
        memory_mb: 1,
    });
    j
}

/// Allocations of `got` with this desired state, status and job version.
fn count(got: &pb::GetJobResponse, desired: &str, status: &str, version: u64) -> usize {
    got.allocations
        .iter()
        .filter(|a| a.desired == desired && a.status == status && a.job_version == version)
        .count()
}

/// Distinct instance indexes among the allocations wanted running.
fn wanted_indexes(got: &pb::GetJobResponse) -> std::collections::BTreeSet<u32> {
    got.allocations
        .iter()
        .filter(|a| a.desired == "run")
        .map(|a| a.index)
        .collect()
}

/// Polls job `name` until `pred` holds, or panics after a minute: hundreds
/// of allocations each reported by the fake agent take a while on a busy
/// machine.
async fn wait(c: &Cluster, name: &str, what: &str, pred: impl Fn(&pb::GetJobResponse) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = c.job(name).await;
        if pred(&got) {
            return;
        }
        let summary: std::collections::BTreeMap<(String, String, u64), usize> =
            got.allocations.iter().fold(Default::default(), |mut m, a| {
                *m.entry((a.desired.clone(), a.status.clone(), a.job_version))
                    .or_default() += 1;
                m
            });
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; job {:?}, allocations by (desired, status, version): {summary:?}",
            got.job
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn submit(c: &Cluster, j: pb::Job) -> pb::SubmitResponse {
    c.jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(j) })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_300_instances_is_placed_replaced_and_stopped_in_batches() {
    let c = Cluster::start().await;
    let _a = FakeAgent::start(&c, "node-a").await;

    let done = submit(&c, tiny("big", 300, "/bin/true")).await;
    assert_eq!(done.allocations.len(), 300, "warnings: {:?}", done.warnings);
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    wait(&c, "big", "300 instances running", |g| {
        count(g, "run", "running", 1) == 300 && wanted_indexes(g).len() == 300
    })
    .await;

    // A new command replaces every instance: 300 stops and 200 placements.
    let done = submit(&c, tiny("big", 200, "/bin/false")).await;
    assert_eq!(done.version, 2);
    wait(
        &c,
        "big",
        "200 new instances running, 300 old ones stopped",
        |g| {
            count(g, "run", "running", 2) == 200
                && count(g, "stop", "complete", 1) == 300
                && g.allocations.len() == 500
                && wanted_indexes(g) == (0..200).collect()
        },
    )
    .await;

    let stopped = c
        .jobs()
        .await
        .stop(pb::StopJobRequest { name: "big".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.stopped_allocations.len(), 200);
    wait(&c, "big", "every instance stopped", |g| {
        g.job.as_ref().is_some_and(|j| j.status == "stopped")
            && count(g, "stop", "complete", 2) == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_300_instances_is_written_to_a_real_etcd() {
    let etcd = drover_tests::etcd::RealEtcd::start()
        .await
        .expect("starting etcd (Debian's etcd-server)");
    let store = Store::connect(&etcd.endpoints(), "/drover/").await.unwrap();
    let c = Cluster::over(
        store,
        tempfile::tempdir().unwrap(),
        CancellationToken::new(),
    )
    .await;
    let _a = FakeAgent::start(&c, "node-a").await;
    let done = submit(&c, tiny("big", 300, "/bin/true")).await;
    assert_eq!(done.allocations.len(), 300, "warnings: {:?}", done.warnings);
    let stored = c
        .store
        .list::<serde_json::Value>(Kind::Alloc)
        .await
        .unwrap();
    assert_eq!(stored.items.len(), 300);
    wait(&c, "big", "300 instances running", |g| {
        count(g, "run", "running", 1) == 300 && wanted_indexes(g) == (0..300).collect()
    })
    .await;
    c.jobs()
        .await
        .stop(pb::StopJobRequest { name: "big".into() })
        .await
        .unwrap();
    wait(&c, "big", "every instance stopped", |g| {
        count(g, "stop", "complete", 1) == 300
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_written_job_is_completed_by_reconcile_and_a_lost_node_loses_all() {
    let c = Cluster::start().await;
    let a = FakeAgent::start(&c, "node-a").await;
    submit(&c, tiny("half", 300, "/bin/true")).await;
    wait(&c, "half", "300 instances running", |g| {
        count(g, "run", "running", 1) == 300
    })
    .await;

    // What a scheduler that died after the first batches of the write
    // leaves: the job and only some of its allocations. Remove 200 of them.
    let got = c.job("half").await;
    let gone: Vec<Write> = got.allocations[..200]
        .iter()
        .map(|a| Write::Delete {
            kind: Kind::Alloc,
            name: a.id.clone(),
        })
        .collect();
    for batch in gone.chunks(100) {
        c.store.commit(&[], batch).await.unwrap();
    }
    // The deletes landed (reconcile, every 200 ms here, may already have
    // placed some replacements under new ids).
    let left = c.job("half").await;
    let deleted: std::collections::BTreeSet<&str> = got.allocations[..200]
        .iter()
        .map(|a| a.id.as_str())
        .collect();
    assert!(
        left.allocations
            .iter()
            .all(|a| !deleted.contains(a.id.as_str())),
        "a deleted allocation is still there"
    );
    wait(
        &c,
        "half",
        "reconcile to place the 200 missing instances",
        |g| count(g, "run", "running", 1) == 300 && wanted_indexes(g) == (0..300).collect(),
    )
    .await;

    // The node's 300 allocations are marked lost over several
    // transactions, the node itself last.
    drop(a);
    wait(&c, "half", "300 allocations lost with their node", |g| {
        count(g, "stop", "lost", 1) == 300
    })
    .await;
    let nodes = pb::node_service_client::NodeServiceClient::new(c.channel().await)
        .list(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].status, "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_larger_than_the_store_request_limit_is_refused_naming_it() {
    let c = Cluster::start().await;
    let mut huge = job("huge", 1);
    let group = huge.groups[0].clone();
    huge.groups = (0..20_000)
        .map(|i| pb::Group {
            name: format!("g{i}"),
            ..group.clone()
        })
        .collect();
    let err = c
        .jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(huge) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let msg = err.message();
    // Refused before it is planned (20,000 groups), naming the job's size
    // and the store's limit (more in `scheduler_cluster/limits.rs`).
    assert!(
        msg.starts_with("job \"huge\" is ")
            && msg.contains("the largest job the state store accepts is 1.5 MiB (1,556,480 bytes)")
            && msg.contains("--max-request-bytes"),
        "{msg}"
    );
    let list = c
        .jobs()
        .await
        .list(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.jobs.is_empty(), "a refused job was stored: {list:?}");
}
