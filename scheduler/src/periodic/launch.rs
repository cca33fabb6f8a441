//! The store side of periodic launches: creating a child job together with
//! the parent's launch record in one guarded transaction, and removing old
//! finished children.
//!
//! A launch writes the child's job record (only if absent), the parent's
//! [`LaunchRecord`] (guarded by the revision read) and guards the parent's
//! own record: a tick is launched at most once, even by two schedulers or
//! across a restart, and a stop or resubmission of the parent in between
//! makes the launch decide again on fresh reads.

use drover_model::now_ms;
use drover_store::{Kind, Versioned};

use super::tick::{self, Child, Decision, Due, LaunchRecord, KEEP_CHILDREN};
use crate::cluster::{Cluster, ClusterError, Step};
use crate::job::{child_name, parent_of, JobSpec};
use crate::state::{AllocRecord, JobRecord, JobStatus};

/// Why a forced launch could not happen.
#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    /// No job of that name.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    /// The job has no `periodic` schedule.
    #[error("job {0:?} is not periodic (it has no `periodic` schedule)")]
    NotPeriodic(String),
    /// The job is stopped: resubmit it to launch again.
    #[error("job {0:?} is stopped; submit it again to launch its children")]
    Stopped(String),
    /// A child of this second exists already.
    #[error("job {0:?} exists already (one launch per second)")]
    Exists(String),
    /// The store failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What one launch pass did for one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The rules' decision.
    pub decision: Decision,
    /// The child created, if any.
    pub launched: Option<String>,
}

/// Whether `job` is a periodic parent that launches: running, with a
/// schedule.
pub fn launching(job: &JobRecord) -> bool {
    job.status == JobStatus::Running && job.spec.periodic.is_some()
}

/// The children of `parent` among `jobs`.
pub fn children_of<'a>(
    parent: &'a str,
    jobs: &'a [Versioned<JobRecord>],
) -> impl Iterator<Item = &'a Versioned<JobRecord>> + 'a {
    jobs.iter()
        .filter(move |j| parent_of(&j.name) == Some(parent))
}

/// The record of a new child of `parent` named `name`: the parent's spec
/// as a one-off batch job.
fn child_record(parent: &JobRecord, name: &str, now_ms: i64) -> JobRecord {
    let mut spec: JobSpec = parent.spec.clone();
    spec.name = name.to_string();
    spec.periodic = None;
    JobRecord {
        spec,
        status: JobStatus::Running,
        version: 1,
        submitted_unix_ms: now_ms,
        pending: Vec::new(),
    }
}

impl Cluster {
    /// The launch record of periodic job `name`, if any.
    pub async fn launch_record(
        &self,
        name: &str,
    ) -> Result<Option<Versioned<LaunchRecord>>, ClusterError> {
        Ok(self.store().get(Kind::Periodic, name).await?)
    }

    /// Handles what is due for periodic job `name` at `now` (unix
    /// seconds): launches the latest tick's child, or records a skipped
    /// tick. `None` when the job is not a launching periodic job.
    pub async fn launch_due(&self, name: &str, now: i64) -> Result<Option<Pass>, ClusterError> {
        let done = self
            .write(
                || format!("periodic job {name:?}"),
                move || async move {
                    let jobs = self.jobs().await?;
                    let Some(parent) = jobs.iter().find(|j| j.name == name) else {
                        return Ok(Step::Done(None));
                    };
                    let Some(periodic) = parent.value.spec.periodic.as_ref() else {
                        return Ok(Step::Done(None));
                    };
                    if !launching(&parent.value) {
                        return Ok(Step::Done(None));
                    }
                    let Ok(schedule) = periodic.schedule() else {
                        // Validated at submission; a tz database without
                        // the zone any more is logged by the caller.
                        return Ok(Step::Done(None));
                    };
                    let record = self.launch_record(name).await?;
                    let since = tick::since(
                        record.as_ref().map(|r| &r.value),
                        parent.value.submitted_unix_ms,
                    );
                    let running = children_of(name, &jobs)
                        .filter(|c| c.value.status == JobStatus::Running)
                        .count();
                    let decision =
                        tick::decide(&schedule, since, now, periodic.prohibit_overlap, running);
                    let Some(due) = decision.due else {
                        return Ok(Step::Done(Some(Pass {
                            decision,
                            launched: None,
                        })));
                    };
                    let mut new = record.as_ref().map(|r| r.value.clone()).unwrap_or_default();
                    new.last_tick_unix = due.tick();
                    let mut txn = self.txn();
                    let launched = match due {
                        Due::Launch(t) => {
                            let child = child_name(name, t);
                            txn.create(
                                Kind::Job,
                                &child,
                                &child_record(&parent.value, &child, now_ms()),
                            )?;
                            new.last_child = child.clone();
                            Some(child)
                        }
                        Due::Skip(_) => None,
                    };
                    let rev = record.as_ref().map(|r| r.mod_revision).unwrap_or(0);
                    txn.update(Kind::Periodic, name, rev, &new)?;
                    txn.expect(Kind::Job, name, parent.mod_revision);
                    Ok(Step::Commit(txn, Some(Pass { decision, launched })))
                },
            )
            .await?;
        Ok(done.value)
    }

    /// Launches a child of periodic job `name` now (`now` in unix seconds),
    /// whatever its schedule and overlap rule. Returns the child's name.
    pub async fn force_launch(&self, name: &str, now: i64) -> Result<String, ForceError> {
        let child = child_name(name, now);
        let done = self
            .write(
                || format!("periodic job {name:?}"),
                || async {
                    let Some(parent) = self.job(name).await? else {
                        return Ok(Step::Done(Err(ForceError::NoSuchJob(name.into()))));
                    };
                    if parent.value.spec.periodic.is_none() {
                        return Ok(Step::Done(Err(ForceError::NotPeriodic(name.into()))));
                    }
                    if parent.value.status != JobStatus::Running {
                        return Ok(Step::Done(Err(ForceError::Stopped(name.into()))));
                    }
                    if self.job(&child).await?.is_some() {
                        return Ok(Step::Done(Err(ForceError::Exists(child.clone()))));
                    }
                    let record = self.launch_record(name).await?;
                    let mut new = record.as_ref().map(|r| r.value.clone()).unwrap_or_default();
                    new.last_child = child.clone();
                    let mut txn = self.txn();
                    let rec = child_record(&parent.value, &child, now_ms());
                    txn.create(Kind::Job, &child, &rec)?;
                    let rev = record.as_ref().map(|r| r.mod_revision).unwrap_or(0);
                    txn.update(Kind::Periodic, name, rev, &new)?;
                    txn.expect(Kind::Job, name, parent.mod_revision);
                    Ok(Step::Commit(txn, Ok(())))
                },
            )
            .await?;
        done.value.map(|()| child)
    }

    /// Removes the finished children of `parent` past the newest
    /// [`KEEP_CHILDREN`], with their allocations. Returns their names.
    pub async fn prune_children(&self, parent: &str) -> Result<Vec<String>, ClusterError> {
        let jobs = self.jobs().await?;
        let allocs = self.allocs().await?;
        let live = |child: &str| {
            allocs
                .iter()
                .any(|a| a.value.job == child && a.value.is_live())
        };
        let children: Vec<Child<'_>> = children_of(parent, &jobs)
            .filter_map(|j| {
                let tick = j.name.rsplit('-').next()?.parse().ok()?;
                Some(Child {
                    name: &j.name,
                    tick,
                    finished: j.value.status != JobStatus::Running && !live(&j.name),
                })
            })
            .collect();
        let mut removed = Vec::new();
        for name in tick::to_prune(&children, KEEP_CHILDREN) {
            if self.remove_child(name).await? {
                removed.push(name.to_string());
            }
        }
        if !removed.is_empty() {
            tracing::info!(job = %parent, removed = removed.len(), kept = KEEP_CHILDREN, "old periodic children removed");
        }
        Ok(removed)
    }

    /// Deletes finished child `name` and its allocations: the allocations
    /// first, the job last (guarding each batch), so a removal cut short
    /// leaves a finished job with fewer records, which the next prune
    /// completes. Nothing is deleted if it runs again or an allocation of
    /// it is live.
    async fn remove_child(&self, name: &str) -> Result<bool, ClusterError> {
        let done = self
            .write(
                || format!("periodic child {name:?}"),
                || async {
                    let Some(job) = self.job(name).await? else {
                        return Ok(Step::Done(false));
                    };
                    let allocs: Vec<Versioned<AllocRecord>> = self
                        .allocs()
                        .await?
                        .into_iter()
                        .filter(|a| a.value.job == name)
                        .collect();
                    if job.value.status == JobStatus::Running
                        || allocs.iter().any(|a| a.value.is_live())
                    {
                        return Ok(Step::Done(false));
                    }
                    let mut txn = self.txn();
                    for a in &allocs {
                        txn.delete(Kind::Alloc, &a.name, a.mod_revision);
                    }
                    txn.delete(Kind::Job, name, job.mod_revision);
                    txn.anchor();
                    Ok(Step::Commit(txn, true))
                },
            )
            .await?;
        Ok(done.value)
    }
}
