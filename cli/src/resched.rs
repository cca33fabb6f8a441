//! Rescheduling in `drover job status` and `drover alloc status`: when a
//! failed allocation will be replaced or why it will not, and what a
//! replacement replaces.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// `at_ms` relative to `now_ms` for people: `in 25s`, `in 4m`, `now`.
fn due_in(now_ms: i64, at_ms: i64) -> String {
    let s = at_ms.saturating_sub(now_ms) / 1000;
    match s {
        ..=0 => "now".into(),
        1..60 => format!("in {s}s"),
        60..3600 => format!("in {}m{}s", s / 60, s % 60),
        _ => format!("in {}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What rescheduling says of `a`, in a few words; empty when nothing.
pub fn summary(a: &pb::Allocation, now_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    if !a.previous_alloc.is_empty() {
        out.push(format!(
            "reschedule attempt {}, replaces {}",
            a.reschedule_attempt,
            short(&a.previous_alloc)
        ));
    }
    // A running one is there for a critical check: unhealthy once its
    // deadline passes, replaced unless the check passes again.
    let why = if a.status == "running" {
        "check critical"
    } else {
        "failed"
    };
    if a.reschedule_unix_ms > 0 {
        out.push(format!(
            "{why}: rescheduled {}",
            due_in(now_ms, a.reschedule_unix_ms)
        ));
    }
    if !a.not_rescheduled.is_empty() {
        out.push(format!("{why}: not rescheduled: {}", a.not_rescheduled));
    }
    if !a.replaced_by.is_empty() {
        out.push(format!("replaced by {}", short(&a.replaced_by)));
    }
    out
}

/// Lines for `drover alloc status`, after its status.
pub fn alloc_lines(a: &pb::Allocation) {
    if !a.desired_reason.is_empty() {
        outln!("Reason   {}", a.desired_reason);
    }
    for line in summary(a, now_ms()) {
        outln!("Resched  {line}");
    }
}

/// A section for `drover job status`: its allocations that rescheduling
/// concerns, and how many instances are failed for good.
pub fn job_lines(allocs: &[pb::Allocation]) {
    let now = now_ms();
    let rows: Vec<(String, Vec<String>)> = allocs
        .iter()
        .filter(|a| a.desired == "run")
        .map(|a| (format!("{} {}", short(&a.id), a.name), summary(a, now)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    outln!();
    outln!("Rescheduling");
    for (who, lines) in rows {
        outln!("{who}  {}", lines.join("; "));
    }
    let exhausted = allocs
        .iter()
        .filter(|a| a.not_rescheduled == "attempts exhausted")
        .count();
    if exhausted > 0 {
        outln!("{exhausted} instance(s) failed for good: reschedule attempts exhausted");
    }
}

/// Adds the rescheduling fields of `a` to its JSON object `v`.
pub fn add_json(a: &pb::Allocation, v: &mut Value) {
    v["previous_alloc"] = json!(a.previous_alloc);
    v["reschedule_attempt"] = json!(a.reschedule_attempt);
    v["reschedule_eligible_unix_ms"] = json!(a.reschedule_eligible_unix_ms);
    v["replaced_by"] = json!(a.replaced_by);
    v["desired_reason"] = json!(a.desired_reason);
    v["reschedule_unix_ms"] = json!(a.reschedule_unix_ms);
    v["not_rescheduled"] = json!(a.not_rescheduled);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_allocation_says_when_or_why_not() {
        let mut a = pb::Allocation {
            reschedule_unix_ms: 31_000,
            ..Default::default()
        };
        assert_eq!(summary(&a, 1_000), ["failed: rescheduled in 30s"]);
        a.reschedule_unix_ms = 0;
        a.not_rescheduled = "attempts exhausted".into();
        a.previous_alloc = "0123456789".into();
        a.reschedule_attempt = 4;
        assert_eq!(
            summary(&a, 0),
            [
                "reschedule attempt 4, replaces 01234567",
                "failed: not rescheduled: attempts exhausted"
            ]
        );
        assert_eq!(due_in(0, 3_725_000), "in 1h2m");
        let critical = pb::Allocation {
            status: "running".into(),
            reschedule_unix_ms: 61_000,
            ..Default::default()
        };
        assert_eq!(
            summary(&critical, 1_000),
            ["check critical: rescheduled in 1m0s"]
        );
    }
}
