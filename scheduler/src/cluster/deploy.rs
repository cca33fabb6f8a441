//! Deployments and job versions in the store: what a placement pass reads
//! of them and writes with its transaction, and the operations on them
//! (promote, fail, history, revert).
//!
//! Keys (under the store prefix, `/drover/` by default):
//! `deployments/<job>/<version>` holds the [`Deployment`] of that version,
//! `versions/<job>/<version>` the [`JobVersion`] (spec, stable or not).
//! Both are written in the same guarded transaction as the job record and
//! the allocations the pass places or stops, before the job (the anchor),
//! so a pass cut short leaves them with the state they explain.

use std::collections::{BTreeMap, BTreeSet};

use drover_store::{Kind, Versioned};

use super::{now_ms, Cluster, ClusterError, Step, Txn};
use crate::deploy::plan::{self as deploy_plan, Input, Outcome};
use crate::deploy::record::{job_prefix, prune, version_key};
use crate::deploy::{promote, Deployment, DeploymentStatus, JobVersion};
use crate::job::JobSpec;
use crate::placement::Managed;
use crate::state::{AllocRecord, DesiredState, JobRecord};

/// What a placement pass reads of a job's deployments and versions.
pub(super) struct History {
    /// The latest deployment.
    pub latest: Option<Versioned<Deployment>>,
    /// Every kept version, by version.
    pub versions: BTreeMap<u64, Versioned<JobVersion>>,
    /// The store revision of every deployment record but the latest, by
    /// version: what pruning may delete.
    older_deployments: BTreeMap<u64, i64>,
    /// The version [`History::write`] saw succeed in the same pass as its
    /// creation, for [`History::write_version`].
    pending_stable: bool,
}

/// Errors of the deployment operations, beside the store's.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The cluster state failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// No such job, deployment or version.
    #[error("{0}")]
    NotFound(String),
    /// The operation does not apply now (and why).
    #[error("{0}")]
    Refused(String),
}

/// Records of `kind` under `job/` whose name is `job/<version>`.
fn by_version<T>(job: &str, items: Vec<Versioned<T>>) -> BTreeMap<u64, Versioned<T>> {
    let prefix = job_prefix(job);
    items
        .into_iter()
        .filter_map(|v| {
            let n = v.name.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, v))
        })
        .collect()
}

impl Cluster {
    /// Reads job `name`'s latest deployment and kept versions.
    pub(super) async fn history(&self, name: &str) -> Result<History, ClusterError> {
        let prefix = job_prefix(name);
        let deployments = self
            .store
            .list_prefix::<Deployment>(Kind::Deployment, &prefix)
            .await?
            .items;
        let versions = self
            .store
            .list_prefix::<JobVersion>(Kind::JobVersion, &prefix)
            .await?
            .items;
        let mut deployments = by_version(name, deployments);
        let latest = deployments.pop_last().map(|(_, d)| d);
        Ok(History {
            latest,
            versions: by_version(name, versions),
            older_deployments: deployments
                .into_iter()
                .map(|(v, d)| (v, d.mod_revision))
                .collect(),
            pending_stable: false,
        })
    }

    /// Remembers whether job `name` has a running deployment (status
    /// reports of its allocations then step it).
    pub(super) fn note_deploying(&self, name: &str, running: bool) {
        let mut set = self.deploying.lock().unwrap_or_else(|e| e.into_inner());
        if running {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    /// Whether job `name` had a running deployment when last placed.
    pub fn is_deploying(&self, name: &str) -> bool {
        let set = self.deploying.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(name)
    }

    /// The jobs with a running deployment, as last seen.
    pub fn deploying(&self) -> BTreeSet<String> {
        self.deploying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl History {
    /// The deployment decision of a pass placing `record` (written when
    /// `changed`; `revert` when it goes back to an earlier version), over
    /// the job's `allocs` less those due for replacement (failed or
    /// unhealthy: their slot is placed again, see
    /// [`crate::reschedule::deployment_view`]).
    pub(super) fn outcome(
        &self,
        record: &JobRecord,
        changed: bool,
        revert: bool,
        allocs: &[AllocRecord],
        now: i64,
    ) -> Outcome {
        let mut specs: BTreeMap<u64, JobSpec> = self
            .versions
            .iter()
            .map(|(v, r)| (*v, r.value.spec.clone()))
            .collect();
        specs.insert(record.version, record.spec.clone());
        let allocs: &[AllocRecord] = &crate::reschedule::deployment_view(&record.spec, allocs, now);
        deploy_plan::plan(Input {
            job: &record.spec,
            version: record.version,
            new_version: changed,
            revert,
            latest: self.latest.as_ref().map(|d| &d.value),
            versions: &specs,
            allocs,
            now,
        })
    }

    /// Adds to `txn` what the pass writes of versions and deployments: the
    /// superseded and the current deployment and, when the deployment
    /// succeeds, its versions marked stable. The new version's record is
    /// [`History::write_version`]'s, after the job.
    pub(super) fn write(
        &mut self,
        txn: &mut Txn<'_>,
        record: &JobRecord,
        changed: bool,
        outcome: &Outcome,
    ) -> Result<(), ClusterError> {
        let job = &record.spec.name;
        let mut version = self.new_version(record, changed);
        if let Some(old) = &outcome.superseded {
            let rev = self.latest.as_ref().map_or(0, |d| d.mod_revision);
            txn.update(Kind::Deployment, &version_key(job, old.version), rev, old)?;
        }
        if let Some(d) = &outcome.decision {
            let before = self
                .latest
                .as_ref()
                .filter(|l| l.value.version == d.deployment.version);
            let rev = before.map_or(0, |l| l.mod_revision);
            if outcome.created || before.is_some_and(|b| d.changed(&b.value)) {
                let key = version_key(job, d.deployment.version);
                txn.update(Kind::Deployment, &key, rev, &d.deployment)?;
            }
            let succeeded = d.deployment.status == DeploymentStatus::Successful
                && before.is_none_or(|b| b.value.status != DeploymentStatus::Successful);
            if succeeded {
                for v in [d.deployment.version, record.version] {
                    match (&mut version, self.versions.get(&v)) {
                        (Some(new), _) if new.version == v => new.stable = true,
                        (_, Some(r)) if !r.value.stable => {
                            let stable = JobVersion {
                                stable: true,
                                ..r.value.clone()
                            };
                            txn.update(
                                Kind::JobVersion,
                                &version_key(job, v),
                                r.mod_revision,
                                &stable,
                            )?;
                        }
                        _ => {}
                    }
                }
            }
        }
        self.pending_stable = version.is_some_and(|v| v.stable);
        Ok(())
    }

    /// The record of the version a pass writes, if it writes one.
    fn new_version(&self, record: &JobRecord, changed: bool) -> Option<JobVersion> {
        changed.then(|| JobVersion {
            version: record.version,
            spec: record.spec.clone(),
            submitted_unix_ms: record.submitted_unix_ms,
            stable: false,
        })
    }

    /// Adds the new version's record to `txn`, after the job: it is as
    /// large as the job, which is the record a too-large write must name,
    /// and a version record cut off is only history lost (allocations of
    /// an unkept version count as current when it is the job's).
    ///
    /// Old versions no wanted allocation runs are dropped with it (see
    /// [`prune`]), a few at a time.
    pub(super) fn write_version(
        &self,
        txn: &mut Txn<'_>,
        record: &JobRecord,
        changed: bool,
        allocs: &[AllocRecord],
    ) -> Result<(), ClusterError> {
        let Some(mut v) = self.new_version(record, changed) else {
            return Ok(());
        };
        let job = &record.spec.name;
        v.stable = self.pending_stable;
        let rev = self.versions.get(&v.version).map_or(0, |r| r.mod_revision);
        txn.update(Kind::JobVersion, &version_key(job, v.version), rev, &v)?;
        let kept: Vec<(u64, bool)> = self
            .versions
            .iter()
            .map(|(n, r)| (*n, r.value.stable))
            .chain([(v.version, v.stable)])
            .collect();
        let in_use: BTreeSet<u64> = allocs
            .iter()
            .filter(|a| a.desired == DesiredState::Run)
            .map(|a| a.job_version)
            .collect();
        let pruned = prune(&kept, &in_use, 8);
        for old in &pruned {
            if let Some(r) = self.versions.get(old) {
                txn.delete(Kind::JobVersion, &version_key(job, *old), r.mod_revision);
            }
        }
        // A deployment goes with its version: one whose version is no
        // longer kept is history nobody can revert to (the latest stays,
        // whatever its version).
        let kept_after: BTreeSet<u64> = kept
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !pruned.contains(n))
            .collect();
        let gone = self
            .older_deployments
            .iter()
            .filter(|(n, _)| !kept_after.contains(n))
            .take(8);
        for (n, rev) in gone {
            txn.delete(Kind::Deployment, &version_key(job, *n), *rev);
        }
        Ok(())
    }

    /// When the pass's deployment fails asking for auto-revert, names in
    /// it the version it goes back to (written with the failure, so that
    /// whoever sees it failed sees where it went).
    pub(super) fn mark_revert(&self, outcome: &mut Outcome) {
        let before = self.latest.as_ref().map(|l| &l.value);
        let Some(d) = outcome.decision.as_mut() else {
            return;
        };
        let wanted =
            before.is_some_and(|b| b.version == d.deployment.version && d.revert_wanted(b));
        if !wanted || outcome.created {
            return;
        }
        match self.stable_before(d.deployment.version) {
            Some(stable) => {
                d.deployment.reverted_to = Some(stable.version);
                d.deployment.description = format!(
                    "{}; reverted to version {}",
                    d.deployment.description, stable.version
                );
            }
            None => d
                .deployment
                .description
                .push_str("; no stable version to revert to"),
        }
    }

    /// The last stable version before `failed`, if any.
    pub(super) fn stable_before(&self, failed: u64) -> Option<&JobVersion> {
        self.versions
            .range(..failed)
            .rev()
            .map(|(_, v)| &v.value)
            .find(|v| v.stable)
    }
}

impl Cluster {
    /// After deployment `failed` failed asking for auto-revert: submits
    /// the last stable version's spec again, as a revert (no canary
    /// phase), and records on `failed` which version it went back to.
    /// `None` when there is no stable version to go back to. Callers hold
    /// the planning lock.
    pub(super) async fn revert_failed(
        &self,
        failed: &Deployment,
    ) -> Result<Option<super::Submitted>, ClusterError> {
        let name = &failed.job;
        let history = self.history(name).await?;
        let to = match failed.reverted_to {
            Some(to) => to,
            None => match history.stable_before(failed.version) {
                Some(stable) => stable.version,
                None => {
                    tracing::warn!(job = %name, version = failed.version, "deployment failed; no stable version to revert to");
                    return Ok(None);
                }
            },
        };
        let Some(stable) = history.versions.get(&to).map(|v| v.value.clone()) else {
            tracing::warn!(job = %name, version = to, "the version to revert to is no longer kept");
            return Ok(None);
        };
        tracing::info!(job = %name, failed = failed.version, to, "deployment failed; reverting to the last stable version");
        let key = version_key(name, failed.version);
        self.update::<Deployment>(Kind::Deployment, "deployment", &key, |d| {
            d.reverted_to.is_none().then(|| Deployment {
                reverted_to: Some(to),
                description: format!("{}; reverted to version {to}", d.description),
                ..d.clone()
            })
        })
        .await?;
        let (mut done, _) = self.place_once(Some(&stable.spec), name, true).await?;
        done.reverted_to = Some(to);
        Ok(Some(done))
    }

    /// Submits job `name`'s version `version` again as a new version,
    /// rolled out without a canary phase.
    pub async fn revert(&self, name: &str, version: u64) -> Result<super::Submitted, DeployError> {
        let _planning = self.planning.lock().await;
        let history = self.history(name).await?;
        let Some(v) = history.versions.get(&version) else {
            return Err(DeployError::NotFound(format!(
                "job {name:?} has no version {version} kept (see drover job history {name})"
            )));
        };
        let spec = v.value.spec.clone();
        let mut done = self.place(Some(&spec), name, true).await?;
        done.reverted_to = Some(version);
        Ok(done)
    }

    /// After an operator failed `failed`: reverts when it asks for it.
    pub async fn revert_if_wanted(
        &self,
        failed: &Deployment,
    ) -> Result<Option<super::Submitted>, ClusterError> {
        if !crate::deploy::step::wants_revert(failed) {
            return Ok(None);
        }
        let _planning = self.planning.lock().await;
        self.revert_failed(failed).await
    }
}

/// The groups a decision manages, for placement.
pub(super) fn managed(outcome: &Outcome) -> BTreeMap<&str, Managed<'_>> {
    outcome
        .decision
        .iter()
        .flat_map(|d| d.groups.iter())
        .map(|(name, a)| {
            (
                name.as_str(),
                Managed {
                    place: &a.place,
                    stop: &a.stop,
                },
            )
        })
        .collect()
}

impl Cluster {
    /// Job `name`'s deployment of `version` (0: its latest).
    pub async fn deployment(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<Deployment>, ClusterError> {
        if version == 0 {
            return Ok(self.history(name).await?.latest.map(|d| d.value));
        }
        let key = version_key(name, version);
        Ok(self
            .store
            .get::<Deployment>(Kind::Deployment, &key)
            .await?
            .map(|d| d.value))
    }

    /// Job `name`'s kept versions, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<JobVersion>, ClusterError> {
        Ok(self
            .history(name)
            .await?
            .versions
            .into_values()
            .map(|v| v.value)
            .collect())
    }

    /// Promotes job `name`'s running deployment (every canary healthy).
    pub async fn promote(&self, name: &str) -> Result<Deployment, DeployError> {
        self.change_latest(name, |d| promote(d, now_ms())).await
    }

    /// Fails job `name`'s running deployment, as an operator asks.
    pub async fn fail(&self, name: &str) -> Result<Deployment, DeployError> {
        self.change_latest(name, |d| {
            if d.status != DeploymentStatus::Running {
                return Err(format!(
                    "deployment of version {} is {}, not running",
                    d.version,
                    d.status.as_str()
                ));
            }
            Ok(Deployment {
                status: DeploymentStatus::Failed,
                description: "failed by an operator".into(),
                modified_unix_ms: now_ms(),
                ..d.clone()
            })
        })
        .await
    }

    /// Cancels job `name`'s running deployment, if it has one, saying
    /// `why` (the job was stopped).
    pub async fn cancel_deployment(&self, name: &str, why: &str) -> Result<(), ClusterError> {
        let cancelled = self
            .change_latest(name, |d| {
                if d.status != DeploymentStatus::Running {
                    return Err(String::new());
                }
                Ok(Deployment {
                    status: DeploymentStatus::Cancelled,
                    description: why.to_string(),
                    modified_unix_ms: now_ms(),
                    ..d.clone()
                })
            })
            .await;
        self.note_deploying(name, false);
        match cancelled {
            Ok(_) | Err(DeployError::NotFound(_) | DeployError::Refused(_)) => Ok(()),
            Err(DeployError::Cluster(e)) => Err(e),
        }
    }

    /// Rewrites job `name`'s latest deployment with `change`.
    async fn change_latest(
        &self,
        name: &str,
        change: impl Fn(&Deployment) -> Result<Deployment, String> + Sync,
    ) -> Result<Deployment, DeployError> {
        let _planning = self.planning.lock().await;
        let change = &change;
        let done = self
            .write(
                || format!("the deployment of job {name:?}"),
                move || async move {
                    let Some(d) = self.history(name).await?.latest else {
                        let e = DeployError::NotFound(format!("job {name:?} has no deployment"));
                        return Ok(Step::Done(Err(e)));
                    };
                    match change(&d.value) {
                        Err(why) => Ok(Step::Done(Err(DeployError::Refused(why)))),
                        Ok(next) => {
                            let mut txn = self.txn();
                            let key = version_key(name, next.version);
                            txn.update(Kind::Deployment, &key, d.mod_revision, &next)?;
                            Ok(Step::Commit(txn, Ok(next)))
                        }
                    }
                },
            )
            .await?;
        done.value
    }
}
