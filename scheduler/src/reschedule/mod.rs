//! Rescheduling: an allocation that failed on its node (its restart policy
//! exhausted, desired run, status failed), or runs unhealthy (a health
//! check critical past the group's healthy deadline: [`unhealthy`]), is
//! replaced by a new allocation of the same instance, placed anew, once
//! its delay has passed.
//!
//! Pure, with the clock passed in. The rules, per failed allocation of a
//! group that has a [`ReschedulePolicy`]:
//!
//! - Its **lineage** (kept on the replacement's record: the allocation it
//!   replaces, the attempt number, when it became due, the delay used and
//!   the due times of the run's recent attempts) decides what comes next.
//! - The **delay** starts at `delay_ms` and doubles per attempt up to
//!   `max_delay_ms`; it starts over when the failed allocation had run for
//!   longer than `max_delay_ms` (it was healthy a while, not crash-looping).
//! - Unless `unlimited`, at most `attempts` replacements are made within
//!   any `interval_ms`, counted back from the failure (nomad #12147: the
//!   limit is enforced from the records, whoever wrote them). Past it the
//!   instance stays failed: "attempts exhausted".
//! - Due ones are replaced by the placement pass ([`plan`]): the failed
//!   allocation is marked desired stop with `replaced_by`, its slot is
//!   placed again, preferring nodes where the instance has not failed
//!   ([`crate::placement::failed`]). Not yet due ones keep their slot, and
//!   the scheduler wakes at the earliest due time (`core::wake`) rather
//!   than polling.
//! - System jobs are never rescheduled: their instances belong to their node.

use crate::job::{GroupSpec, JobKind, JobSpec, ReschedulePolicy};
use crate::state::{AllocRecord, AllocStatus, DesiredState};
pub use crate::state::{AllocReschedule, Lineage};

mod plan;
pub mod show;
pub mod unhealthy;

pub use plan::{deployment_view, due, freed, plan, view, Due, Planned, Replacement};

/// What becomes of a failed allocation the job still wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outlook {
    /// It will be replaced by attempt `lineage.attempt`, due at
    /// `lineage.eligible_unix_ms`.
    Replace(Lineage),
    /// Not replaced: its policy's attempts are used up within its interval.
    Exhausted,
    /// Not replaced, for this reason (system job, rescheduling off).
    Never(&'static str),
}

/// The reason shown for an allocation whose attempts are used up.
pub const EXHAUSTED: &str = "attempts exhausted";

/// Whether `a` is a failed allocation its job still wants, or a running
/// one with a check critical (unhealthy once its deadline has passed,
/// which [`outlook`]'s due time includes): a candidate for rescheduling
/// (or, once replaced, no longer one: its desired state is stop).
pub fn failed_and_wanted(a: &AllocRecord) -> bool {
    a.desired == DesiredState::Run && (a.status == AllocStatus::Failed || unhealthy::is_critical(a))
}

/// What becomes of `a`, a failed allocation of `job` it still wants, under
/// its group's policy; `None` when `a` is not one, or its group or
/// instance is no longer wanted (reconcile stops it instead).
pub fn outlook(job: &JobSpec, a: &AllocRecord) -> Option<Outlook> {
    if !failed_and_wanted(a) || a.job != job.name {
        return None;
    }
    let group = job.group(&a.group)?;
    if job.kind == JobKind::System {
        return Some(Outlook::Never(
            "system job: its instances stay on their node",
        ));
    }
    if a.index >= group.count {
        return None;
    }
    Some(match policy(group) {
        None => Outlook::Never("the job has no reschedule policy"),
        Some(p) if !p.enabled() => Outlook::Never("rescheduling is off (attempts = 0)"),
        Some(p) => match next_at(&p, a, unhealthy::failed_at(group, a)) {
            Some(l) => Outlook::Replace(l),
            None => Outlook::Exhausted,
        },
    })
}

fn policy(group: &GroupSpec) -> Option<ReschedulePolicy> {
    group.reschedule
}

/// The lineage of the replacement of failed allocation `a` under `policy`,
/// or `None` when its attempts are exhausted.
pub fn next(policy: &ReschedulePolicy, a: &AllocRecord) -> Option<Lineage> {
    let failed = a.reschedule.failed_unix_ms.unwrap_or(a.modified_unix_ms);
    let ran_ms = u64::try_from(failed.saturating_sub(a.created_unix_ms)).unwrap_or(0);
    next_at(policy, a, (failed, ran_ms))
}

/// [`next`] for `a` failed at `failed.0` after running well for
/// `failed.1` ms ([`unhealthy::failed_at`]).
fn next_at(policy: &ReschedulePolicy, a: &AllocRecord, failed: (i64, u64)) -> Option<Lineage> {
    let (failed, ran_ms) = failed;
    let prev = a.reschedule.lineage.as_ref();
    let interval = i64::try_from(policy.interval_ms).unwrap_or(i64::MAX);
    let since = failed.saturating_sub(interval);
    if !policy.unlimited {
        let recent = prev.map_or(0, |l| {
            l.recent_unix_ms.iter().filter(|t| **t > since).count()
        });
        if recent >= policy.attempts as usize {
            return None;
        }
    }
    let delay_ms = match prev {
        // A long healthy run ends a crash loop: start over.
        Some(l) if ran_ms <= policy.max_delay_ms => l
            .delay_ms
            .saturating_mul(2)
            .clamp(policy.delay_ms, policy.max_delay_ms),
        _ => policy.delay_ms,
    };
    let eligible = failed.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
    let recent_unix_ms = if policy.unlimited {
        Vec::new()
    } else {
        let mut v: Vec<i64> = prev
            .map(|l| l.recent_unix_ms.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| *t > eligible.saturating_sub(interval))
            .collect();
        v.push(eligible);
        let keep = v.len().saturating_sub(policy.attempts as usize);
        v.drain(..keep);
        v
    };
    Some(Lineage {
        previous: a.id.clone(),
        attempt: prev.map_or(1, |l| l.attempt.saturating_add(1)),
        eligible_unix_ms: eligible,
        delay_ms,
        recent_unix_ms,
        unhealthy: unhealthy::is_critical(a),
    })
}

/// The earliest time after `now` at which a failed allocation of `job`
/// among `allocs` becomes due, if any. Past due ones are left out: they
/// wait for capacity, which the periodic reconcile pass (or a node
/// joining) brings, never a timer firing in a loop.
pub fn next_due_after(job: &JobSpec, allocs: &[AllocRecord], now: i64) -> Option<i64> {
    allocs
        .iter()
        .filter(|a| a.job == job.name)
        .filter_map(|a| match outlook(job, a)? {
            Outlook::Replace(l) if l.eligible_unix_ms > now => Some(l.eligible_unix_ms),
            _ => None,
        })
        .min()
}

/// Whether a batch job still waits for a failed allocation to be replaced
/// (it is not over yet).
pub fn pending<'a>(job: &JobSpec, allocs: impl IntoIterator<Item = &'a AllocRecord>) -> bool {
    allocs
        .into_iter()
        .any(|a| matches!(outlook(job, a), Some(Outlook::Replace(_))))
}

/// The record of an allocation as its status becomes `status` at `now`:
/// the time of a failure is kept, for its delay.
pub fn on_status(
    r: &AllocReschedule,
    was: AllocStatus,
    status: AllocStatus,
    now: i64,
) -> AllocReschedule {
    let failed_unix_ms = match (was == status, status) {
        (true, _) => r.failed_unix_ms,
        (false, AllocStatus::Failed) => Some(now),
        (false, _) => None,
    };
    AllocReschedule {
        failed_unix_ms,
        ..r.clone()
    }
}

/// Failed allocation `a` once replaced by allocation `by`: desired stop,
/// naming its replacement.
pub fn replaced(a: &AllocRecord, by: &str, now: i64) -> AllocRecord {
    let mut r = a.clone();
    r.desired = DesiredState::Stop;
    r.reschedule.replaced_by = by.to_string();
    r.modified_unix_ms = now;
    r
}

#[cfg(test)]
mod tests;
