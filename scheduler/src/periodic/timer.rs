//! The leader's launcher: one task that sleeps until the next tick of any
//! periodic job, launches what is due, places the children and removes old
//! finished ones. It never polls: besides the next tick, only a change of a
//! periodic job's record (submitted, changed, stopped) wakes it.

use std::sync::Arc;
use std::time::Duration;

use drover_model::now_ms;
use drover_store::{Change, Kind, WatchEvent};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::launch::{launching, ForceError};
use crate::cluster::{ClusterError, Submitted};
use crate::core::Core;
use crate::job::parent_of;
use crate::state::JobRecord;

/// Wait before trying again after the store failed.
const RETRY: Duration = Duration::from_secs(5);

/// Whether a change of a job record concerns the launcher: a periodic
/// parent written or any non-child job deleted. Children's changes do not
/// (overlap is judged at the tick).
fn wakes(c: &Change) -> bool {
    if parent_of(&c.name).is_some() {
        return false;
    }
    match &c.value {
        None => true,
        Some(v) => {
            serde_json::from_slice::<JobRecord>(v).map_or(true, |j| j.spec.periodic.is_some())
        }
    }
}

/// The monotonic instant of wall-clock second `unix_secs`.
fn instant_of(unix_secs: i64) -> Instant {
    let ms = unix_secs.saturating_mul(1000).saturating_sub(now_ms());
    Instant::now() + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Core {
    /// Launches periodic jobs' children at their ticks until `shutdown`.
    pub(crate) async fn launch_periodic(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let mut changes = match self.cluster().watch(Kind::Job).await {
                Ok(rx) => rx,
                Err(error) => {
                    tracing::warn!(%error, "periodic launcher cannot watch jobs; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            'pass: loop {
                let deadline = self.periodic_pass(now_ms().div_euclid(1000)).await;
                loop {
                    let sleep = async {
                        match deadline {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = sleep => continue 'pass,
                        change = changes.recv() => match change {
                            Some(WatchEvent::Change(c)) if wakes(&c) => continue 'pass,
                            Some(WatchEvent::Change(_)) => {}
                            // Closed or compacted: watch again, then a pass.
                            _ => break 'pass,
                        },
                    }
                }
            }
        }
    }

    /// Handles every periodic job at `now` (unix seconds). Returns when to
    /// look again: the earliest next tick, sooner after a failure.
    async fn periodic_pass(&self, now: i64) -> Option<Instant> {
        let jobs = match self.cluster().jobs().await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "periodic launcher cannot list jobs; trying again");
                return Some(Instant::now() + RETRY);
            }
        };
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for j in jobs.iter().filter(|j| launching(&j.value)) {
            if let Some(Err(error)) = j.value.spec.periodic.as_ref().map(|p| p.schedule()) {
                tracing::warn!(job = %j.name, %error, "periodic job's schedule no longer parses; not launching it");
                continue;
            }
            match self.cluster().launch_due(&j.name, now).await {
                Ok(Some(pass)) => {
                    if pass.decision.dropped {
                        tracing::info!(job = %j.name, "missed ticks dropped: only the latest is launched");
                    }
                    match (pass.decision.due, &pass.launched) {
                        (Some(due), Some(child)) => {
                            tracing::info!(job = %j.name, %child, tick = due.tick(), "periodic child launched");
                            self.place_child(&j.name, child).await;
                        }
                        (Some(due), None) => {
                            tracing::info!(job = %j.name, tick = due.tick(), "tick skipped: a child still runs and the job prohibits overlap, or too many run");
                        }
                        _ => {}
                    }
                    if let Some(t) = pass.decision.next {
                        earliest(instant_of(t));
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(job = %j.name, %error, "periodic launch failed; trying again");
                    earliest(Instant::now() + RETRY);
                }
            }
        }
        next
    }

    /// Places a new child and tells its nodes, then removes old finished
    /// children of `parent`. Failures are logged: reconcile places a child
    /// that did not get placed here, and the next launch prunes.
    async fn place_child(&self, parent: &str, child: &str) {
        match self.cluster().replace(child).await {
            Ok(done) => self.registry().wake(&done.touched),
            Err(error) => {
                tracing::warn!(job = %child, %error, "cannot place periodic child; reconcile will")
            }
        }
        if let Err(error) = self.cluster().prune_children(parent).await {
            tracing::warn!(job = %parent, %error, "cannot remove old periodic children");
        }
    }

    /// Launches a child of periodic job `name` now, whatever its schedule
    /// (`drover job periodic force`), and places it. Two forces within one
    /// second: the second waits for the next second.
    pub async fn force_periodic(&self, name: &str) -> Result<(String, Submitted), ForceError> {
        let mut attempts = 0;
        let child = loop {
            let now = now_ms();
            match self
                .cluster()
                .force_launch(name, now.div_euclid(1000))
                .await
            {
                Err(ForceError::Exists(_)) if attempts == 0 => {
                    attempts += 1;
                    let rest = 1000 - now.rem_euclid(1000);
                    tokio::time::sleep(Duration::from_millis(u64::try_from(rest).unwrap_or(1000)))
                        .await;
                }
                other => break other?,
            }
        };
        tracing::info!(job = %name, %child, "periodic child launched by force");
        let placed = self.cluster().replace(&child).await;
        let placed: Result<Submitted, ClusterError> = placed;
        let done = placed?;
        self.registry().wake(&done.touched);
        if let Err(error) = self.cluster().prune_children(name).await {
            tracing::warn!(job = %name, %error, "cannot remove old periodic children");
        }
        Ok((child, done))
    }
}
