//! Deployments: how a changed group with an update strategy
//! (`update = { ... }`) is rolled out, health-gated, `max_parallel` at a
//! time, with canaries and auto-revert.
//!
//! - [`record`]: what is stored: a [`Deployment`] per job version under
//!   `deployments/<job>/<version>`, and every version of a job's spec
//!   ([`JobVersion`]) under `versions/<job>/<version>`;
//! - [`step`]: the pure decision (record, job, allocations, now → the
//!   record after, what to place and stop, when to look again), tested
//!   beside it;
//! - [`summary`]: what changed between two versions, in one line.
//!
//! Reading and writing them is [`crate::cluster`]'s (`cluster/deploy.rs`):
//! a submission that changes a group's instances creates the deployment;
//! every status report of one of the job's allocations, and a timer at
//! [`step::Decision::wake_at`], step it (the periodic reconcile pass is a
//! backstop); the nodes are woken as for any placement.

use drover_proto::v1 as pb;

pub mod plan;
pub mod record;
pub mod step;
pub mod summary;
#[cfg(test)]
mod tests;

pub use record::{Deployment, DeploymentStatus, GroupProgress, JobVersion};
pub use step::{new_deployment, promote, step, Decision, GroupActions, Observed};

impl Deployment {
    /// Wire form; `job` (the current spec) gives each group's count.
    pub fn to_pb(&self, job: Option<&crate::job::JobSpec>) -> pb::Deployment {
        pb::Deployment {
            job: self.job.clone(),
            version: self.version,
            status: self.status.as_str().into(),
            description: self.description.clone(),
            revert: self.revert,
            reverted_to: self.reverted_to.unwrap_or(0),
            created_unix_ms: self.created_unix_ms,
            modified_unix_ms: self.modified_unix_ms,
            groups: self
                .groups
                .iter()
                .map(|(name, g)| pb::DeploymentGroup {
                    name: name.clone(),
                    desired: job.and_then(|j| j.group(name)).map_or(0, |g| g.count),
                    placed: u32::try_from(g.allocs.len()).unwrap_or(u32::MAX),
                    healthy: g.healthy(),
                    unhealthy: g.unhealthy(),
                    desired_canaries: if g.promoted && g.canaries() == 0 {
                        0
                    } else {
                        g.update.canary
                    },
                    canaries: g.canaries(),
                    promoted: g.promoted,
                    update: Some(pb::UpdateStrategy::from(&g.update)),
                })
                .collect(),
        }
    }
}
