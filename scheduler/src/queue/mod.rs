//! Placements that wait: instances no node can take yet are recorded on
//! their job, and planned again as soon as capacity may have appeared.
//!
//! Two pure parts, the I/O being [`crate::core::Core`]'s:
//!
//! - [`pending_after`] turns a plan's unplaced instances into the job's
//!   [`PendingGroup`]s, one per group (a count and the reason, never a
//!   string per instance), keeping the `since` of groups that already
//!   waited. The job record (`jobs/<job>`, field `pending`) carries them,
//!   written in the same guarded transaction as the plan's allocations, so
//!   what is pending and what is placed never disagree.
//! - [`trigger::Trigger`] decides *when* to plan again: capacity events in
//!   (a node registers, a drain is lifted, an allocation ends, a job or
//!   some of its allocations are stopped), "plan these jobs now" out,
//!   coalesced over a short debounce, one pass at a time, and only for
//!   jobs that wait. A job is retried on a capacity event or by the
//!   periodic full pass (the backstop), never in a loop of its own.

use crate::placement::Plan;
use crate::state::PendingGroup;

pub mod trigger;

pub use trigger::{Capacity, Pass, Trigger};

/// Longest reason kept in a job's record, in bytes: one explanation is
/// a line, and the record must stay small whatever the cluster's size.
pub const MAX_REASON_BYTES: usize = 1024;

/// What `plan` leaves waiting, per group, in the plan's order. A group
/// that already waited in `before` keeps its `since_unix_ms`; a group
/// that starts waiting gets `now_ms`.
pub fn pending_after(plan: &Plan, before: &[PendingGroup], now_ms: i64) -> Vec<PendingGroup> {
    plan.unplaced
        .iter()
        .map(|u| {
            let since = before
                .iter()
                .find(|p| p.group == u.group)
                .map_or(now_ms, |p| p.since_unix_ms);
            let reason = plan
                .failures
                .get(u.failures.clone())
                .and_then(<[String]>::first)
                .map_or_else(
                    || "no eligible node to place it on".to_string(),
                    |f| bounded(without_group(f)),
                );
            PendingGroup {
                group: u.group.clone(),
                count: u.count,
                reason,
                since_unix_ms: since,
            }
        })
        .collect()
}

/// Whether recording what `plan` leaves waiting would change `recorded`
/// (a count or a reason differs, a group starts or stops waiting).
pub fn changes(plan: &Plan, recorded: &[PendingGroup]) -> bool {
    // A group new to `recorded` differs by its name whatever its `since`.
    pending_after(plan, recorded, 0) != recorded
}

/// A failure line without its `group "web": 3 instances unplaceable: `
/// head, which the pending record says in its own fields.
fn without_group(line: &str) -> &str {
    match line.split_once(" unplaceable: ") {
        Some((head, why)) if head.starts_with("group ") => why,
        _ => line,
    }
}

/// `text` cut to at most [`MAX_REASON_BYTES`] on a character boundary,
/// with `...` when cut.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_REASON_BYTES {
        return text.to_string();
    }
    let mut end = MAX_REASON_BYTES - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// How many instances wait in all of `pending`.
pub fn total(pending: &[PendingGroup]) -> u32 {
    pending.iter().fold(0u32, |n, p| n.saturating_add(p.count))
}

#[cfg(test)]
mod tests;
