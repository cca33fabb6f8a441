//! Waking for rescheduling ([`crate::reschedule`]): the scheduler sleeps until the earliest time a
//! failed allocation becomes due, then replaces what is due and sets the
//! alarm again. Never a poll: with nothing waiting it sleeps until a
//! failure is reported, and a due replacement that cannot be placed (no
//! capacity) is left to the periodic reconcile pass, so a timer can never
//! fire in a loop.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drover_model::now_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Core;
use crate::cluster::ClusterError;
use crate::reschedule::{failed_and_wanted, next_due_after, outlook, Outlook};
use crate::state::{AllocRecord, JobStatus};

/// When the sleeping timer should wake next (ms since the epoch).
#[derive(Debug, Default)]
pub struct Alarm {
    at: Mutex<Option<i64>>,
    changed: Notify,
}

impl Alarm {
    /// Wakes the timer at `at`, unless it wakes earlier already.
    pub fn arm(&self, at: i64) {
        let mut g = self.at.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none_or(|t| at < t) {
            *g = Some(at);
            self.changed.notify_one();
        }
    }

    /// After a pass at `now`: the alarm is `next`, or what was armed during
    /// the pass for later than `now`, whichever is earlier.
    pub fn settle(&self, now: i64, next: Option<i64>) {
        let mut g = self.at.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = g.filter(|t| *t > now);
        *g = match (kept, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.changed.notify_one();
    }

    /// The time it is set for.
    pub fn at(&self) -> Option<i64> {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long the timer sleeps with nothing armed (it is woken earlier when
/// something is).
const IDLE: Duration = Duration::from_secs(3600);

impl Core {
    /// Replaces the due failed allocations whenever the [`Alarm`] goes off,
    /// until `shutdown`.
    pub(crate) async fn reschedule_when_due(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let at = self.alarm().at();
            let wait = at.map_or(IDLE, |t| {
                Duration::from_millis(u64::try_from(t.saturating_sub(now_ms())).unwrap_or(0))
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.alarm().changed.notified() => continue,
                _ = shutdown.cancelled() => return,
            }
            if at.is_some_and(|t| t <= now_ms()) {
                if let Err(error) = self.reschedule_pass().await {
                    tracing::warn!(%error, "reschedule pass failed; the periodic reconcile retries");
                    self.alarm().settle(now_ms(), None);
                }
            }
        }
    }

    /// Places again every running job with a failed allocation due now,
    /// then sets the alarm for the next one.
    pub(crate) async fn reschedule_pass(&self) -> Result<(), ClusterError> {
        let now = now_ms();
        let (allocs, jobs) = self.cluster().allocs_and_jobs().await?;
        let mut next: Option<i64> = None;
        for (name, job) in jobs.iter().filter(|(_, j)| j.status == JobStatus::Running) {
            let due = crate::reschedule::due(&job.spec, &allocs, now);
            if !due.is_empty() {
                tracing::info!(job = %name, due = due.due.len(), "rescheduling failed allocations");
                match self.cluster().replace(name).await {
                    Ok(done) => self.registry().wake(&done.touched),
                    Err(error) => tracing::warn!(job = %name, %error, "rescheduling of job failed"),
                }
            }
            if let Some(t) = next_due_after(&job.spec, &allocs, now) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        self.alarm().settle(now, next);
        Ok(())
    }

    /// Sets the alarm for the earliest due time from now on (after a
    /// reconcile pass, or at start). A failed read is logged: the next
    /// pass tries again.
    pub(crate) async fn rearm_reschedule(&self) {
        let now = now_ms();
        match self.cluster().allocs_and_jobs().await {
            Ok((allocs, jobs)) => {
                let next = jobs
                    .values()
                    .filter(|j| j.status == JobStatus::Running)
                    .filter_map(|j| next_due_after(&j.spec, &allocs, now))
                    .min();
                self.alarm().settle(now, next);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the allocations to set the reschedule alarm")
            }
        }
    }

    /// A node reported `a` (its record now): if it failed and will be
    /// replaced, the alarm goes off when it is due.
    pub(crate) async fn reported_for_reschedule(&self, a: &AllocRecord) {
        // A critical allocation arms the alarm on the report that made it
        // so, not on each later report of its checks.
        let unhealthy = crate::reschedule::unhealthy::is_critical(a);
        let first = !unhealthy || a.reschedule.critical_unix_ms == Some(a.modified_unix_ms);
        if !failed_and_wanted(a) || !first {
            return;
        }
        let what = if unhealthy {
            "allocation with a critical check"
        } else {
            "failed allocation"
        };
        let job = match self.cluster().job(&a.job).await {
            Ok(Some(j)) if j.value.status == JobStatus::Running => j.value,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(alloc_id = %a.id, %error, "cannot read the failed allocation's job; the periodic reconcile reschedules it");
                return;
            }
        };
        match outlook(&job.spec, a) {
            Some(Outlook::Replace(l)) => {
                tracing::info!(alloc_id = %a.id, alloc = %a.name, attempt = l.attempt, delay_ms = l.delay_ms, due_unix_ms = l.eligible_unix_ms, "{what} will be rescheduled");
                self.alarm().arm(l.eligible_unix_ms);
            }
            Some(Outlook::Exhausted) => {
                tracing::warn!(alloc_id = %a.id, alloc = %a.name, "{what} not rescheduled: attempts exhausted");
            }
            Some(Outlook::Never(_)) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Alarm;

    #[test]
    fn the_earliest_arming_wins_and_a_pass_drops_what_it_consumed() {
        let alarm = Alarm::default();
        assert_eq!(alarm.at(), None);
        alarm.arm(500);
        alarm.arm(900);
        assert_eq!(alarm.at(), Some(500), "a later time does not postpone it");
        alarm.arm(300);
        assert_eq!(alarm.at(), Some(300));
        // A pass at 300 found the next due at 700: that is the alarm.
        alarm.settle(300, Some(700));
        assert_eq!(alarm.at(), Some(700));
        // A failure reported during a pass at 700 armed 650 (past) and
        // 800: the pass keeps 800, never a time it has already passed,
        // so the timer cannot fire again at once.
        alarm.arm(650);
        alarm.settle(700, None);
        assert_eq!(alarm.at(), None);
        alarm.arm(800);
        alarm.settle(700, Some(1_000));
        assert_eq!(alarm.at(), Some(800));
        alarm.settle(800, None);
        assert_eq!(alarm.at(), None, "nothing left: it sleeps");
    }
}
