//! A job resubmitted many times keeps a bounded history: its oldest
//! versions and their deployments are removed from the store, the newest
//! ones and the latest deployment stay.

use super::*;
use drover_store::Kind;

/// Version `v` of a job whose group rolls out as a deployment.
fn version(name: &str, v: usize) -> pb::Job {
    let mut j = job(name, 2);
    let g = &mut j.groups[0];
    g.tasks[0].command = vec!["/bin/echo".into(), format!("v{v}")];
    g.update = Some(pb::UpdateStrategy {
        max_parallel: 1,
        canary: 0,
        min_healthy_time_ms: 100,
        healthy_deadline_ms: 60_000,
        progress_deadline_ms: 120_000,
        auto_revert: false,
        auto_promote: false,
    });
    j
}

/// Names of the job's records of `kind` (`<job>/<version>`).
async fn records(c: &Cluster, kind: Kind, job: &str) -> Vec<u64> {
    let prefix = format!("{job}/");
    let mut v: Vec<u64> = c
        .store
        .list::<serde_json::Value>(kind)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|r| r.name.strip_prefix(&prefix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_and_their_deployments_leave_the_store() {
    let c = Cluster::start().await;
    let mut jobs = c.jobs().await;
    for v in 1..=45 {
        jobs.submit(pb::SubmitRequest {
            job: Some(version("hist", v)),
        })
        .await
        .unwrap();
    }
    let versions = records(&c, Kind::JobVersion, "hist").await;
    let deployments = records(&c, Kind::Deployment, "hist").await;
    // 32 versions kept (no allocation runs an older one: no node here),
    // pruned 8 per submission as they age out.
    assert_eq!(versions.first(), Some(&14), "versions: {versions:?}");
    assert_eq!(versions.last(), Some(&45), "versions: {versions:?}");
    assert_eq!(versions.len(), 32, "versions: {versions:?}");
    // Every deployment left is of a kept version, the latest among them.
    assert_eq!(
        deployments.last(),
        Some(&45),
        "deployments: {deployments:?}"
    );
    assert!(
        deployments.iter().all(|d| versions.contains(d)),
        "deployments of pruned versions stay: {deployments:?} (versions {versions:?})"
    );
}
