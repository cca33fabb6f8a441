//! Bad input at the API: jobs too large for the store or for one gRPC
//! message are refused naming the limit and the size (and change
//! nothing); a job no cluster could hold is accepted and reported
//! unplaceable in one line; a job with thousands of problems lists some
//! and counts the rest. The scheduler serves on afterwards.

use super::*;

/// `job` with one task environment variable of `bytes` bytes.
fn padded(name: &str, bytes: usize) -> pb::Job {
    let mut j = job(name, 1);
    j.groups[0].tasks[0]
        .env
        .insert("PAD".into(), "x".repeat(bytes));
    j
}

async fn no_jobs_stored(c: &Cluster) {
    let list = c
        .jobs()
        .await
        .list(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.jobs.is_empty(), "a refused job was stored: {list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mb_job_is_refused_naming_its_size_and_the_store_limit() {
    let c = Cluster::start().await;
    for call in ["submit", "plan"] {
        let job = Some(padded("fat", 5 * 1024 * 1024));
        let mut jobs = c.jobs().await;
        let err = match call {
            "submit" => jobs.submit(pb::SubmitRequest { job }).await.unwrap_err(),
            _ => jobs.plan(pb::PlanRequest { job }).await.unwrap_err(),
        };
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{call}: {err:?}");
        let msg = err.message();
        assert!(
            msg.starts_with("job \"fat\" is 5.0 MiB (5,2")
                && msg.contains(
                    "the largest job the state store accepts is 1.5 MiB (1,556,480 bytes)"
                ),
            "{call}: {msg}"
        );
    }
    // Just under the wire limit, but over the store's once stored (JSON
    // escapes every control character as six bytes).
    let mut j = job("escaped", 1);
    j.groups[0].tasks[0]
        .env
        .insert("PAD".into(), "\u{1}".repeat(1_000_000));
    let err = c
        .jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(j) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("job \"escaped\" is 5.7 MiB"),
        "{}",
        err.message()
    );
    no_jobs_stored(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_the_grpc_limit_is_refused_naming_it_and_the_scheduler_serves_on() {
    let c = Cluster::start().await;
    let err = c
        .jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(padded("huge", drover_proto::MAX_MESSAGE_BYTES)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "the limit is: {} bytes",
            drover_proto::MAX_MESSAGE_BYTES
        )),
        "{}",
        err.message()
    );
    no_jobs_stored(&c).await;
    let done = c
        .jobs()
        .await
        .submit(pb::SubmitRequest {
            job: Some(job("small", 1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_no_cluster_holds_is_accepted_and_reported_in_one_line() {
    // No node at all: every instance fails, and says so once.
    let c = Cluster::start().await;
    let j = job("many", 10_000);
    let plan = c
        .jobs()
        .await
        .plan(pb::PlanRequest {
            job: Some(j.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.failures.len(), 1, "{:?}", plan.failures);
    let done = c
        .jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(j) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.warnings, plan.failures);
    assert!(
        done.warnings[0]
            .starts_with("group \"web\": 10,000 instances unplaceable: no nodes in the cluster"),
        "{:?}",
        done.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_problems_are_listed_up_to_fifty_then_counted() {
    let c = Cluster::start().await;
    let mut j = job("bad", 1);
    let group = j.groups[0].clone();
    j.groups = (0..2_000)
        .map(|i| pb::Group {
            name: format!("g{i}"),
            count: 0,
            ..group.clone()
        })
        .collect();
    let err = c
        .jobs()
        .await
        .submit(pb::SubmitRequest { job: Some(j) })
        .await
        .unwrap_err();
    let msg = err.message();
    assert!(
        msg.starts_with("job \"bad\" is invalid (2000 problems):"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1 + 50 + 1, "{msg}");
    assert!(msg.ends_with("... and 1950 more"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_client_reads_listings_over_grpcs_default_4_mib() {
    // Six records of 1 MiB: one listing of 6 MiB, as 10,000 allocations
    // would be. (A scratch kind nothing else reads.)
    let c = Cluster::start().await;
    let big = "x".repeat(1024 * 1024);
    for i in 0..6 {
        c.store
            .put(drover_store::Kind::Subnet, &format!("pad{i}"), &big)
            .await
            .unwrap();
    }
    let listing = c
        .store
        .list::<String>(drover_store::Kind::Subnet)
        .await
        .unwrap();
    assert_eq!(listing.items.len(), 6);
}
