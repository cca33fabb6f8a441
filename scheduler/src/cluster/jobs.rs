//! Jobs and their allocations in the store: submission and re-placement,
//! stop, agents' status reports and the end of batch jobs.

use std::collections::{BTreeMap, BTreeSet};

use drover_store::{Kind, Versioned};

use super::{now_ms, values, Cluster, ClusterError, Step, Txn};
use crate::discovery::admit::{self, Refusal};
use crate::job::JobSpec;
use crate::queue;
use crate::reschedule;
use crate::state::{
    job_allocs, AllocRecord, JobRecord, JobStatus, NodeRecord, NodeStatus, PendingGroup,
};
use crate::transitions::{self, StatusReport};

/// Result of a submission.
#[derive(Debug)]
pub struct Submitted {
    /// Job version after the submission.
    pub version: u64,
    /// The job's allocations after the submission.
    pub allocations: Vec<AllocRecord>,
    /// Instances that could not be placed yet.
    pub warnings: Vec<String>,
    /// Nodes whose assignments changed.
    pub touched: BTreeSet<String>,
    /// Instances left waiting for capacity, per group, as recorded on
    /// the job (see [`crate::queue`]).
    pub pending: Vec<PendingGroup>,
    /// Allocations this write created.
    pub placed: usize,
    /// Allocations this write asked to stop.
    pub stopped: usize,
    /// When the job's running deployment wants to be stepped again if no
    /// status report comes first (ms since the Unix epoch).
    pub wake_at: Option<i64>,
    /// The version a failed deployment went back to, if it did.
    pub reverted_to: Option<u64>,
}

/// Ids of the allocations a stop asked to stop and the nodes whose
/// assignments changed; `None` when there is no such job.
type Stopped = Option<(Vec<String>, BTreeSet<String>)>;

/// What became of a status report.
enum Reported {
    /// The allocation's record changed to this (boxed: it is much larger
    /// than the other variants).
    Changed(Box<AllocRecord>),
    /// Nothing to change (or no such allocation).
    Unchanged,
    /// The node may not report this.
    Refused(Refusal),
}

/// What a placement attempt decided, before the commit.
struct Placed {
    version: u64,
    placed: usize,
    stopped: usize,
    warnings: Vec<String>,
    touched: BTreeSet<String>,
    pending: Vec<PendingGroup>,
    /// The allocations as read, for the answer when nothing is written.
    allocs: Vec<AllocRecord>,
    /// What the pass did about the job's deployment.
    deploy: Deployed,
}

/// What a placement pass did about the job's deployment.
#[derive(Debug, Default)]
struct Deployed {
    /// The deployment is running after the pass.
    running: bool,
    wake_at: Option<i64>,
    /// It failed in this pass and asks to go back to a stable version.
    revert: Option<crate::deploy::Deployment>,
}

impl Cluster {
    /// Registers or updates a job and places it. Idempotent: submitting the
    /// same spec twice changes nothing the second time.
    pub async fn submit(&self, spec: &JobSpec) -> Result<Submitted, ClusterError> {
        let _planning = self.planning.lock().await;
        self.place(Some(spec), &spec.name, false).await
    }

    /// Places job `name` again as stored, but only while it is still
    /// running (a reconcile must never revive a stopped job or undo a newer
    /// submission).
    pub async fn replace(&self, name: &str) -> Result<Submitted, ClusterError> {
        let _planning = self.planning.lock().await;
        self.place(None, name, false).await
    }

    /// Plans and commits job `name`, with `spec` submitted or as stored
    /// (`revert`: an earlier version's spec, rolled out without canaries),
    /// then, when its deployment failed and asks for it, reverts to the
    /// last stable version. Callers hold the planning lock.
    pub(super) async fn place(
        &self,
        spec: Option<&JobSpec>,
        name: &str,
        revert: bool,
    ) -> Result<Submitted, ClusterError> {
        let (done, failed) = self.place_once(spec, name, revert).await?;
        if let Some(failed) = failed {
            if let Some(back) = self.revert_failed(&failed).await? {
                let mut touched = done.touched;
                touched.extend(back.touched.iter().cloned());
                return Ok(Submitted { touched, ..back });
            }
        }
        Ok(done)
    }

    /// One plan and commit of job `name`; also returns its deployment when
    /// it failed in this pass and asks to be reverted.
    pub(super) async fn place_once(
        &self,
        spec: Option<&JobSpec>,
        name: &str,
        revert: bool,
    ) -> Result<(Submitted, Option<crate::deploy::Deployment>), ClusterError> {
        let done = self
            .write(
                || format!("job {name:?}"),
                move || async move { self.place_attempt(spec, name, revert).await },
            )
            .await?;
        let mut placed = done.value;
        self.note_deploying(name, placed.deploy.running);
        let allocations = match done.revision {
            None => job_allocs(&placed.allocs, name),
            Some(rev) => {
                tracing::info!(job = %name, version = placed.version, revision = rev, placed = placed.placed, stopped = placed.stopped, "job submitted");
                let allocations = job_allocs(&values(self.allocs().await?), name);
                // A write planned again after a conflict may have placed
                // part of the job in an earlier attempt: wake every node
                // that holds the job's live allocations.
                placed.touched.extend(
                    allocations
                        .iter()
                        .filter(|a| a.is_live())
                        .map(|a| a.node_id.clone()),
                );
                allocations
            }
        };
        let failed = placed
            .deploy
            .revert
            .take()
            .filter(|_| done.revision.is_some());
        let submitted = Submitted {
            version: placed.version,
            allocations,
            warnings: placed.warnings,
            touched: placed.touched,
            pending: placed.pending,
            placed: placed.placed,
            stopped: placed.stopped,
            wake_at: placed.deploy.wake_at,
            reverted_to: None,
        };
        Ok((submitted, failed))
    }

    async fn place_attempt<'s>(
        &'s self,
        spec: Option<&JobSpec>,
        name: &str,
        revert: bool,
    ) -> Result<Step<'s, Placed>, ClusterError> {
        let job = self.job(name).await?;
        let spec = match (spec, &job) {
            (Some(s), _) => s.clone(),
            (None, Some(j)) if j.value.status == JobStatus::Running => j.value.spec.clone(),
            (None, _) => {
                return Ok(Step::Done(Placed {
                    version: job.map(|j| j.value.version).unwrap_or(0),
                    placed: 0,
                    stopped: 0,
                    warnings: Vec::new(),
                    touched: BTreeSet::new(),
                    pending: Vec::new(),
                    allocs: Vec::new(),
                    deploy: Deployed::default(),
                }))
            }
        };
        let nodes = values(self.nodes().await?);
        let allocs = self.allocs().await?;
        let alloc_vals: Vec<AllocRecord> = allocs.iter().map(|a| a.value.clone()).collect();
        let current = job.as_ref().map(|j| &j.value);
        let previous = current
            .filter(|j| j.status == JobStatus::Running)
            .map(|j| &j.spec);
        let now = now_ms();
        let (mut record, changed) = transitions::submit(current, &spec, now);
        let mut history = self.history(name).await?;
        let mine: Vec<AllocRecord> = alloc_vals
            .iter()
            .filter(|a| a.job == name)
            .cloned()
            .collect();
        let mut outcome = history.outcome(&record, changed, revert, &mine, now);
        history.mark_revert(&mut outcome);
        let started = std::time::Instant::now();
        let planned = reschedule::plan(
            &self.placement,
            &nodes,
            &alloc_vals,
            &spec,
            previous,
            now,
            &super::deploy::managed(&outcome),
        );
        crate::counters::planned(&planned.plan, started);
        let plan = &planned.plan;
        record.pending = queue::pending_after(plan, &record.pending, now);
        // The spec is unchanged but what waits is not: the record is
        // rewritten (the version stays).
        let rewrite = changed || current.is_none_or(|j| j.pending != record.pending);
        // Stops first, then the job, then new allocations: when the write
        // takes several transactions, stops of instances the new spec
        // replaces are written while the stored job still says so, and the
        // placements after the job are ones a reconcile pass of the stored
        // job makes again if a later batch never lands.
        let mut txn = self.txn();
        let mut touched = BTreeSet::new();
        for id in &plan.stop {
            let Some(a) = allocs.iter().find(|a| &a.name == id) else {
                continue;
            };
            let rec = transitions::stop_alloc(&a.value, now);
            txn.update(Kind::Alloc, id, a.mod_revision, &rec)?;
            touched.insert(rec.node_id);
        }
        history.write(&mut txn, &record, changed, &outcome)?;
        let job_rev = job.as_ref().map(|j| j.mod_revision).unwrap_or(0);
        if rewrite {
            txn.update(Kind::Job, name, job_rev, &record)?;
        } else {
            txn.expect(Kind::Job, name, job_rev);
        }
        txn.anchor();
        history.write_version(&mut txn, &record, changed, &mine)?;
        let new = NewAllocs {
            job: name,
            version: record.version,
            now,
        };
        touched.extend(new.write(&mut txn, &allocs, &planned)?);
        Ok(Step::Commit(
            txn,
            Placed {
                version: record.version,
                placed: plan.place.len(),
                stopped: plan.stop.len(),
                warnings: plan.failures.clone(),
                touched,
                pending: record.pending,
                allocs: alloc_vals,
                deploy: deployed(&history, &outcome),
            },
        ))
    }

    /// Stops a job: marks it stopped and every live allocation desired=stop.
    /// Returns the ids of the allocations asked to stop and the nodes whose
    /// assignments changed, or `None` if there is no such job.
    pub async fn stop(&self, name: &str) -> Result<Stopped, ClusterError> {
        let _planning = self.planning.lock().await;
        let done = self
            .write(|| format!("job {name:?}"), move || self.stop_attempt(name))
            .await?;
        if let (Some(rev), Some((stopped, _))) = (done.revision, &done.value) {
            tracing::info!(job = %name, revision = rev, allocations = stopped.len(), "job stopped");
        }
        Ok(done.value)
    }

    async fn stop_attempt<'s>(&'s self, name: &str) -> Result<Step<'s, Stopped>, ClusterError> {
        let Some((job, allocs)) = self.job_and_allocs(name).await? else {
            return Ok(Step::Done(None));
        };
        let nodes = self.nodes().await?;
        let down: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.value.status == NodeStatus::Down)
            .map(|n| n.name.as_str())
            .collect();
        let stop =
            transitions::stop_job(&job.value, allocs.iter().map(|a| &a.value), &down, now_ms());
        // The allocations first, the job last: a stop cut short leaves a
        // running job whose stopped instances reconcile places again, never
        // a stopped job with instances still wanted.
        let mut txn = self.txn();
        for (i, r) in &stop.allocs {
            txn.update(Kind::Alloc, &r.id, allocs[*i].mod_revision, r)?;
        }
        match &stop.job {
            Some(rec) => txn.update(Kind::Job, name, job.mod_revision, rec)?,
            None => txn.expect(Kind::Job, name, job.mod_revision),
        }
        txn.anchor();
        Ok(Step::Commit(txn, Some((stop.stopped, stop.touched))))
    }

    /// Records what node `node_id` reports about one of its allocations,
    /// if the node may report it ([`admit`]): a refused report changes
    /// nothing and is logged with its reason. Returns the allocation when
    /// its record changed.
    pub async fn report(
        &self,
        node_id: &str,
        report: &StatusReport,
    ) -> Result<Option<AllocRecord>, ClusterError> {
        let id = &report.alloc_id;
        let done = self
            .write(
                || format!("allocation {id}"),
                move || self.report_attempt(node_id, report),
            )
            .await?;
        match done.value {
            Reported::Changed(r) => {
                tracing::info!(node_id, alloc_id = %r.id, alloc = %r.name, status = r.status.as_str(), ip = %r.ip, checks = r.checks.len(), "allocation status");
                Ok(Some(*r))
            }
            Reported::Refused(reason) => {
                tracing::warn!(node_id, alloc_id = %id, %reason, "allocation status refused");
                Ok(None)
            }
            Reported::Unchanged => Ok(None),
        }
    }

    /// One attempt of [`Cluster::report`]: reads what the admission rules
    /// look at (the node and every allocation only for a new address, the
    /// job only when checks are reported), then writes the new record.
    async fn report_attempt<'s>(
        &'s self,
        node_id: &str,
        report: &StatusReport,
    ) -> Result<Step<'s, Reported>, ClusterError> {
        let Some(a) = self
            .store
            .get::<AllocRecord>(Kind::Alloc, &report.alloc_id)
            .await?
        else {
            return Ok(Step::Done(Reported::Unchanged));
        };
        let own = a.value.node_id == node_id;
        let (node, allocs) = if own && admit::changes_address(&a.value, report) {
            let node = self.store.get::<NodeRecord>(Kind::Node, node_id).await?;
            (node.map(|n| n.value), values(self.allocs().await?))
        } else {
            (None, Vec::new())
        };
        let job = if own && !report.checks.is_empty() {
            self.job(&a.value.job).await?.map(|j| j.value)
        } else {
            None
        };
        if let Err(refusal) = admit::admit(
            node_id,
            &a.value,
            report,
            node.as_ref(),
            job.as_ref(),
            &allocs,
        ) {
            return Ok(Step::Done(Reported::Refused(refusal)));
        }
        let Some(new) = transitions::apply_report(&a.value, report, now_ms()) else {
            return Ok(Step::Done(Reported::Unchanged));
        };
        let mut txn = self.txn();
        txn.update(Kind::Alloc, &new.id, a.mod_revision, &new)?;
        Ok(Step::Commit(txn, Reported::Changed(Box::new(new))))
    }

    /// Marks a running batch job complete (or failed) once every allocation
    /// it wants has finished.
    pub async fn finish_batch(&self, name: &str) -> Result<(), ClusterError> {
        let _planning = self.planning.lock().await;
        let done = self
            .write(
                || format!("job {name:?}"),
                move || async move {
                    let Some((job, allocs)) = self.job_and_allocs(name).await? else {
                        return Ok(Step::Done(None));
                    };
                    let outcome =
                        transitions::batch_outcome(&job.value, allocs.iter().map(|a| &a.value));
                    // A failed instance that will be rescheduled is not over.
                    let waiting =
                        reschedule::pending(&job.value.spec, allocs.iter().map(|a| &a.value));
                    let Some(status) = outcome.filter(|_| !waiting) else {
                        return Ok(Step::Done(None));
                    };
                    let rec = JobRecord {
                        status,
                        ..job.value
                    };
                    let mut txn = self.txn();
                    txn.update(Kind::Job, name, job.mod_revision, &rec)?;
                    Ok(Step::Commit(txn, Some(status)))
                },
            )
            .await?;
        if let (Some(_), Some(status)) = (done.revision, done.value) {
            tracing::info!(job = %name, status = status.as_str(), "batch job finished");
        }
        Ok(())
    }

    /// Job `name` and every allocation, when the job exists.
    async fn job_and_allocs(
        &self,
        name: &str,
    ) -> Result<Option<(Versioned<JobRecord>, Vec<Versioned<AllocRecord>>)>, ClusterError> {
        let Some(job) = self.job(name).await? else {
            return Ok(None);
        };
        Ok(Some((job, self.allocs().await?)))
    }

    /// Every allocation and every job by name: what the nodes'
    /// assignments are cut from (see [`transitions::assigned`]).
    pub async fn allocs_and_jobs(
        &self,
    ) -> Result<(Vec<AllocRecord>, BTreeMap<String, JobRecord>), ClusterError> {
        let allocs = values(self.allocs().await?);
        let jobs = self
            .jobs()
            .await?
            .into_iter()
            .map(|j| (j.name, j.value))
            .collect();
        Ok((allocs, jobs))
    }
}

/// What a pass's outcome leaves of its deployment.
fn deployed(history: &super::deploy::History, outcome: &crate::deploy::plan::Outcome) -> Deployed {
    let Some(d) = &outcome.decision else {
        return Deployed::default();
    };
    let before = history
        .latest
        .as_ref()
        .map(|l| &l.value)
        .filter(|l| l.version == d.deployment.version && !outcome.created);
    let revert = before
        .filter(|b| d.revert_wanted(b))
        .map(|_| d.deployment.clone());
    Deployed {
        running: d.deployment.status == crate::deploy::DeploymentStatus::Running,
        wake_at: d.wake_at,
        revert,
    }
}

/// The allocations a plan creates: of job `job` at `version`, at `now`.
struct NewAllocs<'a> {
    job: &'a str,
    version: u64,
    now: i64,
}

impl NewAllocs<'_> {
    /// Adds the plan's new allocations to `txn`, each with its lineage
    /// when it replaces a failed one (marked replaced right after it), and
    /// marks the failed allocations an earlier write left unmarked.
    /// Returns the nodes they go to.
    fn write(
        &self,
        txn: &mut Txn<'_>,
        allocs: &[Versioned<AllocRecord>],
        planned: &reschedule::Planned,
    ) -> Result<BTreeSet<String>, ClusterError> {
        let mut touched = BTreeSet::new();
        for p in &planned.plan.place {
            let mut rec =
                transitions::new_alloc(new_alloc_id(), self.job, self.version, p, self.now);
            let replacing = planned.replacing(p);
            rec.reschedule.lineage = replacing.map(|r| Box::new(r.lineage.clone()));
            txn.create(Kind::Alloc, &rec.id, &rec)?;
            touched.insert(p.node_id.clone());
            // After its replacement: a write cut short between the two
            // leaves a failed allocation its replacement names, which the
            // next pass marks (`Planned::unmarked`), never an instance
            // without either.
            if let Some(r) = replacing {
                mark_replaced(txn, allocs, &r.old, &rec.id, self.now)?;
            }
        }
        for (old, by) in &planned.unmarked {
            mark_replaced(txn, allocs, old, by, self.now)?;
        }
        Ok(touched)
    }
}

/// Marks failed allocation `old` (as read in `allocs`) replaced by `by`.
fn mark_replaced(
    txn: &mut Txn<'_>,
    allocs: &[Versioned<AllocRecord>],
    old: &str,
    by: &str,
    now: i64,
) -> Result<(), ClusterError> {
    let Some(a) = allocs.iter().find(|a| a.name == old) else {
        return Ok(());
    };
    let rec = reschedule::replaced(&a.value, by, now);
    tracing::info!(alloc_id = %old, alloc = %a.value.name, replaced_by = %by, "failed allocation rescheduled");
    txn.update(Kind::Alloc, old, a.mod_revision, &rec)
}

/// A fresh allocation id, UUID-shaped.
fn new_alloc_id() -> String {
    let v: u128 = rand::random();
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
