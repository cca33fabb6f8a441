//! Which deployment a placement pass of a job works under, pure: a
//! submission that changes the instances of a group with an update
//! strategy starts a new one (cancelling the one it supersedes), and any
//! other pass steps the job's latest one. A change of `count` alone starts
//! none: it only scales.

use std::collections::BTreeMap;

use super::record::{Deployment, DeploymentStatus};
use super::step::{new_deployment, step, Decision, Observed};
use crate::job::JobSpec;
use crate::reconcile::same_instances;
use crate::state::{AllocRecord, AllocStatus, DesiredState};

/// What a pass knows.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The job's spec this pass places.
    pub job: &'a JobSpec,
    /// Its version.
    pub version: u64,
    /// The pass writes a new version (a submission that changes the spec).
    pub new_version: bool,
    /// The new version is a revert to an earlier one.
    pub revert: bool,
    /// The job's latest deployment, if any.
    pub latest: Option<&'a Deployment>,
    /// The job's kept versions' specs, by version.
    pub versions: &'a BTreeMap<u64, JobSpec>,
    /// Every allocation of the job.
    pub allocs: &'a [AllocRecord],
    /// The time.
    pub now: i64,
}

/// What the pass does about deployments.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// A deployment created by this pass.
    pub created: bool,
    /// The running deployment the new one supersedes, cancelled.
    pub superseded: Option<Deployment>,
    /// The step of the deployment the job is under, if any.
    pub decision: Option<Decision>,
}

/// Whether allocation `a` runs `job`'s spec of its group, judged by the
/// spec of the version it was placed at (`job_version` of the current
/// version when that version is not kept).
pub fn is_current(
    a: &AllocRecord,
    job: &JobSpec,
    version: u64,
    versions: &BTreeMap<u64, JobSpec>,
) -> bool {
    match versions.get(&a.job_version) {
        Some(spec) => same_instances(spec.group(&a.group), job.group(&a.group)),
        None => a.job_version == version,
    }
}

/// Decides the pass's deployment.
pub fn plan(input: Input<'_>) -> Outcome {
    let job = input.job;
    let observed: Vec<Observed<'_>> = input
        .allocs
        .iter()
        .filter(|a| a.job == job.name)
        .map(|alloc| Observed {
            alloc,
            current: is_current(alloc, job, input.version, input.versions),
        })
        .collect();
    let mut out = Outcome::default();
    let mut created = None;
    if input.new_version {
        let groups: Vec<(&str, bool)> = job
            .groups
            .iter()
            .filter(|g| g.update.is_some())
            .filter_map(|g| {
                let mine = observed.iter().filter(|o| {
                    o.alloc.group == g.name
                        && o.alloc.desired == DesiredState::Run
                        && o.alloc.status != AllocStatus::Lost
                });
                let (old, all) = mine.fold((0, 0), |(old, all), o| {
                    (old + usize::from(!o.current), all + 1)
                });
                (old > 0 || all == 0).then_some((g.name.as_str(), old > 0))
            })
            .collect();
        if !groups.is_empty() {
            created = Some(new_deployment(
                job,
                input.version,
                &groups,
                input.revert,
                input.now,
            ));
            out.created = true;
            out.superseded = input
                .latest
                .filter(|d| d.status == DeploymentStatus::Running)
                .map(|d| Deployment {
                    status: DeploymentStatus::Cancelled,
                    description: format!("superseded by version {}", input.version),
                    modified_unix_ms: input.now,
                    ..d.clone()
                });
        }
    }
    let current = created
        .as_ref()
        .or(input.latest.filter(|d| d.version <= input.version));
    out.decision = current.map(|d| step(d, job, &observed, input.now));
    out
}
