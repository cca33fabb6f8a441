//! The events the scheduler's own decisions make, read off each change of
//! an allocation record: pure, no I/O.

use drover_model::{CheckState, CheckStatus, EventType};

use super::Event;
use crate::state::{AllocRecord, AllocStatus, DesiredState, JobRecord, JobStatus, NodeRecord};

/// The first 8 characters of an id, as people read it.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// What the scheduler knows of why an allocation is asked to stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopContext<'a> {
    /// Its job as stored now, if it still is.
    pub job: Option<&'a JobRecord>,
    /// Its node as stored now, if it still is.
    pub node: Option<&'a NodeRecord>,
}

/// Why `a` (now desired stop) is asked to stop, as far as the records say.
pub fn stop_reason(a: &AllocRecord, ctx: StopContext<'_>) -> String {
    if !a.reschedule.replaced_by.is_empty() {
        return format!(
            "rescheduled: replaced by {}",
            short(&a.reschedule.replaced_by)
        );
    }
    match ctx.job {
        None => return "its job was removed".into(),
        Some(j) if j.status == JobStatus::Stopped => return "its job was stopped".into(),
        Some(j) if j.version > a.job_version => {
            return format!(
                "job updated to version {} (this allocation is of version {})",
                j.version, a.job_version
            )
        }
        Some(_) => {}
    }
    if ctx.node.is_some_and(|n| n.draining) {
        return format!("node {} is draining", a.node_id);
    }
    "no longer wanted (job scaled down or updated)".into()
}

/// The events of `new`, the record after a change from `old` (`None`: it
/// was just created); `ctx` explains stops.
pub fn alloc_events(
    old: Option<&AllocRecord>,
    new: &AllocRecord,
    ctx: StopContext<'_>,
) -> Vec<Event> {
    let mut out = Vec::new();
    let Some(old) = old else {
        let t = new.created_unix_ms;
        out.push(Event::of(
            new,
            t,
            "",
            EventType::Placed,
            format!("placed on node {}", new.node_id),
        ));
        if let Some(l) = &new.reschedule.lineage {
            out.push(Event::of(
                new,
                t,
                "",
                EventType::Rescheduled,
                format!(
                    "replaces {} allocation {} (attempt {}, after {} ms)",
                    if l.unhealthy { "unhealthy" } else { "failed" },
                    short(&l.previous),
                    l.attempt,
                    l.delay_ms
                ),
            ));
        }
        return out;
    };
    let t = new.modified_unix_ms;
    if old.desired == DesiredState::Run && new.desired == DesiredState::Stop {
        out.push(Event::of(
            new,
            t,
            "",
            EventType::StopRequested,
            stop_reason(new, ctx),
        ));
    }
    if old.reschedule.replaced_by.is_empty() && !new.reschedule.replaced_by.is_empty() {
        out.push(Event::of(
            new,
            t,
            "",
            EventType::Replaced,
            format!(
                "replaced by allocation {}",
                short(&new.reschedule.replaced_by)
            ),
        ));
    }
    if old.status != new.status {
        out.extend(status_event(new, t));
    }
    out.extend(check_events(&old.checks, &new.checks, new, t));
    out
}

/// The event of `a` entering its status, when it is an end.
fn status_event(a: &AllocRecord, t: i64) -> Option<Event> {
    let (kind, message) = match a.status {
        AllocStatus::Lost => (
            EventType::Lost,
            format!("node {} is down: allocation lost", a.node_id),
        ),
        AllocStatus::Failed => {
            let why = a
                .tasks
                .iter()
                .find(|t| !t.message.is_empty())
                .map(|t| format!(": task {}: {}", t.name, t.message))
                .unwrap_or_default();
            (EventType::Failed, format!("allocation failed{why}"))
        }
        AllocStatus::Complete if a.desired == DesiredState::Stop => {
            (EventType::Stopped, "allocation stopped".to_string())
        }
        AllocStatus::Complete => (
            EventType::Complete,
            "every task ended successfully".to_string(),
        ),
        AllocStatus::Pending | AllocStatus::Running => return None,
    };
    Some(Event::of(a, t, "", kind, message))
}

/// A check's verdict turning passing or critical.
fn check_events(old: &[CheckState], new: &[CheckState], a: &AllocRecord, t: i64) -> Vec<Event> {
    new.iter()
        .filter_map(|c| {
            let before = old
                .iter()
                .find(|o| o.service == c.service && o.index == c.index)
                .map(|o| o.status);
            if before == Some(c.status) {
                return None;
            }
            let what = format!(
                "service {} check {} ({})",
                c.service,
                c.index,
                c.kind.as_str()
            );
            let (kind, message) = match c.status {
                CheckStatus::Passing => (EventType::CheckPassing, format!("{what} passing")),
                CheckStatus::Critical => (
                    EventType::CheckFailing,
                    format!("{what} critical: {}", c.output.lines().next().unwrap_or("")),
                ),
                CheckStatus::Pending => return None,
            };
            let when = if c.last_unix_ms > 0 {
                c.last_unix_ms
            } else {
                t
            };
            Some(Event::of(a, when, "", kind, message))
        })
        .collect()
}

#[cfg(test)]
#[path = "derive_tests.rs"]
mod tests;
