//! The passes that plan jobs again, driven by the [`Trigger`]: the
//! periodic full pass over every job, and the prompt pass over the jobs
//! whose placements wait, after capacity may have appeared. The rules of
//! when are the trigger's ([`crate::queue::trigger`]); this is their I/O.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::Core;
use crate::cluster::ClusterError;
use crate::queue::{self, Capacity, Pass, Trigger};
use crate::state::{JobStatus, PendingGroup};
use crate::sync::lock;

/// Now, on the clock the trigger is fed with (tokio's, so paused in tests).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Core {
    fn trigger(&self) -> MutexGuard<'_, Trigger> {
        lock(&self.trigger)
    }

    /// Capacity may have appeared: the jobs whose placements wait are
    /// planned again shortly (one pass for a burst of these).
    pub(crate) fn capacity(&self, why: Capacity) {
        self.trigger().capacity(now(), why);
        self.nudge.notify_one();
    }

    /// A node registered: a full pass soon (system jobs want an instance
    /// on it, and waiting jobs may fit).
    pub(crate) fn node_joined(&self) {
        self.trigger().capacity(now(), Capacity::NodeReady);
        self.full_pass_soon();
    }

    /// Asks for a full pass one debounce from now (a node joined or was
    /// lost: its allocations are replaced).
    pub(crate) fn full_pass_soon(&self) {
        self.trigger().full_soon(now());
        self.nudge.notify_one();
    }

    /// Records what the last plan of job `job` left waiting.
    pub(crate) fn planned(&self, job: &str, pending: &[PendingGroup]) {
        self.trigger().waits(job, !pending.is_empty());
    }

    /// How many passes over waiting jobs this scheduler has run.
    pub fn waiting_passes(&self) -> u64 {
        self.waiting_passes.load(Ordering::Relaxed)
    }

    /// Runs the passes the trigger gives, one at a time, until `shutdown`:
    /// [`Core::reconcile`] every [`super::Timing::reconcile`] (and soon
    /// after a node joins or is lost), and the jobs that wait soon after
    /// a capacity event.
    pub(crate) async fn run_passes(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wake = self.trigger().next_wake();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.nudge.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            let pass = self.trigger().poll(now());
            match pass {
                None => continue,
                Some(Pass::Full) => {
                    if let Err(error) = self.reconcile().await {
                        tracing::warn!(%error, "reconcile failed");
                    }
                }
                Some(Pass::Waiting(jobs)) => self.plan_waiting(&jobs).await,
            }
            self.trigger().done(now());
        }
    }

    /// Plans the waiting `jobs` again and tells the nodes that got work.
    /// A job that still does not fit stays waiting for the next event.
    async fn plan_waiting(&self, jobs: &[String]) {
        let pass = self.waiting_passes.fetch_add(1, Ordering::Relaxed) + 1;
        let (mut placed, mut waiting) = (0usize, 0u32);
        for name in jobs {
            match self.cluster.replace(name).await {
                Ok(done) => {
                    placed += done.placed;
                    waiting = waiting.saturating_add(queue::total(&done.pending));
                    self.registry.wake(&done.touched);
                    self.planned(name, &done.pending);
                }
                Err(error) => {
                    tracing::warn!(job = %name, %error, "planning a waiting job failed; it waits for the next event");
                }
            }
        }
        tracing::info!(
            pass,
            jobs = jobs.len(),
            placed,
            still_waiting = waiting,
            "planned the jobs waiting for capacity"
        );
    }

    /// The job part of [`Core::reconcile`]: plans every running job, writes
    /// what changed (placements, stops, what waits and why), and records
    /// which jobs wait.
    pub(super) async fn reconcile_jobs(&self) -> Result<(), ClusterError> {
        for j in self.cluster.jobs().await? {
            if j.value.status != JobStatus::Running {
                self.planned(&j.name, &[]);
                continue;
            }
            if j.value.spec.groups.iter().any(|g| g.update.is_some()) {
                // Deployments are stepped on status reports and timers;
                // this is the backstop (and a restarted scheduler's start).
                self.step_deployment(&j.name).await;
                continue;
            }
            let (plan, _) = self.cluster.plan(&j.value.spec).await?;
            let stale = queue::changes(&plan, &j.value.pending);
            if plan.place.is_empty() && plan.stop.is_empty() && !stale {
                self.planned(&j.name, &j.value.pending);
                continue;
            }
            tracing::info!(job = %j.name, place = plan.place.len(), stop = plan.stop.len(), pending = plan.failures.len(), "reconcile");
            match self.cluster.replace(&j.name).await {
                Ok(done) => {
                    self.registry.wake(&done.touched);
                    self.planned(&j.name, &done.pending);
                }
                Err(error) => tracing::warn!(job = %j.name, %error, "reconcile of job failed"),
            }
        }
        Ok(())
    }
}
