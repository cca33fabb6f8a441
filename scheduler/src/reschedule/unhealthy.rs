//! Unhealthy allocations are replaced like failed ones.
//!
//! An allocation can run and still serve nothing: its task is up but a
//! health check of one of its services is critical (the agent says so once
//! the check's `failures_before_critical` is reached; its DNS record is
//! gone from then on). Left alone it would hold its slot for ever, during a
//! deployment and after it. The rule, pure:
//!
//! - The scheduler keeps, on the allocation's record, since when a check
//!   of it has been critical without a break
//!   ([`crate::state::AllocReschedule::critical_unix_ms`], set from the
//!   node's reports by [`critical_since`]). A check passing again, or the
//!   allocation leaving `running`, clears it.
//! - Critical for the group's healthy deadline (`update.healthy_deadline_ms`,
//!   5 min when the group has no `update`, as Nomad's default), it is
//!   **unhealthy**: for rescheduling it failed at that moment
//!   ([`failed_at`]). From there on it is the failed allocation's path: the
//!   group's reschedule policy decides (its delay, doubling, attempts,
//!   `attempts = 0` to never replace), the replacement is placed preferring
//!   other nodes, and the unhealthy allocation is stopped once its
//!   replacement is written. So an allocation with a check critical from
//!   `t` is replaced at `t + deadline + delay`, never sooner, and a
//!   replacement that is unhealthy in turn waits twice as long.
//! - The run before it went critical counts as its healthy run: one that
//!   served longer than `max_delay_ms` starts the delays over.
//!
//! During a deployment this is Nomad's behaviour: an allocation unhealthy
//! within the progress deadline is replaced per the reschedule policy, and
//! the deployment fails when the progress deadline passes without progress
//! (at once with `progress_deadline_ms = 0`), reverting with
//! `auto_revert`. A replaced allocation no longer holds its deployment
//! slot ([`super::deployment_view`]), so the deployment places the slot
//! again.

use drover_model::CheckStatus;

use crate::job::{GroupSpec, DEFAULT_HEALTHY_DEADLINE_MS};
use crate::state::{AllocRecord, AllocStatus};

/// Since when a check of allocation `a` (the record before a report) has
/// been critical without a break, once the report says `status` and
/// `checks` at `now`; `None` when none is critical or it is not running.
/// An allocation already replaced keeps what it had, so that its record
/// still says why it was.
pub fn critical_since(
    a: &AllocRecord,
    status: AllocStatus,
    checks: &[drover_model::CheckState],
    now: i64,
) -> Option<i64> {
    if !a.reschedule.replaced_by.is_empty() {
        return a.reschedule.critical_unix_ms;
    }
    let critical = checks.iter().any(|c| c.status == CheckStatus::Critical);
    (status == AllocStatus::Running && critical)
        .then(|| a.reschedule.critical_unix_ms.unwrap_or(now))
}

/// How long a check of the group may stay critical before its allocation
/// is unhealthy, ms.
pub fn deadline_ms(group: &GroupSpec) -> u64 {
    group.update.map_or(
        u64::try_from(DEFAULT_HEALTHY_DEADLINE_MS).unwrap_or(u64::MAX),
        |u| u.healthy_deadline_ms,
    )
}

/// Whether `a` runs with a check critical (unhealthy once its group's
/// deadline has passed).
pub fn is_critical(a: &AllocRecord) -> bool {
    a.status == AllocStatus::Running && a.reschedule.critical_unix_ms.is_some()
}

/// When `a`, of `group`, failed for rescheduling, and how long it had run
/// well before: a failed allocation when its node reported it failed; a
/// critical one at the end of its deadline, having run well until its
/// check turned critical.
pub fn failed_at(group: &GroupSpec, a: &AllocRecord) -> (i64, u64) {
    let ran = |until: i64| u64::try_from(until.saturating_sub(a.created_unix_ms)).unwrap_or(0);
    match a.reschedule.critical_unix_ms.filter(|_| is_critical(a)) {
        Some(since) => {
            let deadline = i64::try_from(deadline_ms(group)).unwrap_or(i64::MAX);
            (since.saturating_add(deadline), ran(since))
        }
        None => {
            let failed = a.reschedule.failed_unix_ms.unwrap_or(a.modified_unix_ms);
            (failed, ran(failed))
        }
    }
}

#[cfg(test)]
mod tests;
