//! Rescheduling on simulated records: the delay sequence, limits within
//! the interval, node preference, and no replacement before its time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::state::{NodeRecord, NodeStatus};
use crate::testkit::{alloc, job, node};

const MIN: i64 = 60_000;

/// Allocation `id` of instance 0 on `node_id`, created at `created`, failed
/// at `failed`, replacing per `lineage`.
fn failed(
    id: &str,
    node_id: &str,
    created: i64,
    failed: i64,
    lineage: Option<Lineage>,
) -> AllocRecord {
    let mut a = alloc(id, 0, node_id, AllocStatus::Failed);
    a.created_unix_ms = created;
    a.modified_unix_ms = failed;
    a.reschedule.failed_unix_ms = Some(failed);
    a.reschedule.lineage = lineage.map(Box::new);
    a
}

/// Follows an instance that fails `ran` ms after each start: the delays
/// of its replacements until none comes (at most `max`).
fn delays(spec: &JobSpec, ran: i64, max: usize) -> Vec<u64> {
    let mut a = failed("a0", "n1", 0, ran, None);
    let mut out = Vec::new();
    while out.len() < max {
        let Some(Outlook::Replace(l)) = outlook(spec, &a) else {
            break;
        };
        out.push(l.delay_ms);
        let start = l.eligible_unix_ms;
        a = failed(
            &format!("a{}", out.len()),
            "n1",
            start,
            start + ran,
            Some(l),
        );
    }
    out
}

fn with_policy(kind: &str, policy: &str) -> JobSpec {
    let text = format!(
        "name = \"j\"\nkind = \"{kind}\"\n[[group]]\nname = \"g\"\nreschedule = {policy}\n\
         [[group.task]]\nname = \"t\"\ncommand = [\"false\"]\n"
    );
    JobSpec::try_from(&crate::jobfile::parse("j.toml", &text).unwrap()).unwrap()
}

#[test]
fn service_delays_double_from_30_s_and_stay_at_the_one_hour_ceiling() {
    let spec = job("service", 1, "false");
    let d = delays(&spec, 100, 10);
    let s: Vec<u64> = d.iter().map(|ms| ms / 1000).collect();
    assert_eq!(
        s,
        [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600],
        "unlimited, capped"
    );
}

#[test]
fn a_long_healthy_run_starts_the_delays_over() {
    let spec = job("service", 1, "false");
    let first = failed("a0", "n1", 0, 100, None);
    let Some(Outlook::Replace(l1)) = outlook(&spec, &first) else {
        panic!()
    };
    let start = l1.eligible_unix_ms;
    // It failed quickly: the delay doubles.
    let quick = failed("a1", "n1", start, start + 100, Some(l1.clone()));
    let Some(Outlook::Replace(l2)) = outlook(&spec, &quick) else {
        panic!()
    };
    assert_eq!((l2.attempt, l2.delay_ms), (2, 60_000));
    // It ran for two hours, longer than the ceiling: back to 30 s.
    let healthy = failed("a1", "n1", start, start + 120 * MIN, Some(l1));
    let Some(Outlook::Replace(l2)) = outlook(&spec, &healthy) else {
        panic!()
    };
    assert_eq!((l2.attempt, l2.delay_ms), (2, 30_000));
    assert_eq!(l2.previous, "a1");
}

#[test]
fn batch_jobs_are_replaced_once_and_system_jobs_never() {
    let spec = job("batch", 1, "false");
    assert_eq!(delays(&spec, 100, 10), [5_000], "one attempt per 24 h");
    let a = failed("a0", "n1", 0, 100, None);
    let mut l = match outlook(&spec, &a) {
        Some(Outlook::Replace(l)) => l,
        other => panic!("{other:?}"),
    };
    let again = failed(
        "a1",
        "n1",
        l.eligible_unix_ms,
        l.eligible_unix_ms + 100,
        Some(l.clone()),
    );
    assert_eq!(outlook(&spec, &again), Some(Outlook::Exhausted));
    // A day later the window holds no attempt: it may be replaced again.
    l.eligible_unix_ms -= 25 * 60 * MIN;
    l.recent_unix_ms = vec![l.eligible_unix_ms];
    let next_day = failed("a1", "n1", 0, 100, Some(l));
    assert!(matches!(
        outlook(&spec, &next_day),
        Some(Outlook::Replace(_))
    ));

    let sys = job("system", 0, "false");
    assert!(matches!(outlook(&sys, &a), Some(Outlook::Never(_))));
}

#[test]
fn attempts_are_counted_within_the_interval_only() {
    let spec = with_policy(
        "service",
        "{ attempts = 3, interval_ms = 600000, delay_ms = 1000, max_delay_ms = 1000 }",
    );
    // Failing at once: three replacements, then the limit holds.
    assert_eq!(delays(&spec, 100, 10), [1_000, 1_000, 1_000]);
    // Failing after 4 minutes each: at most two earlier attempts fall in
    // any 10 minutes, so it is always replaced.
    assert_eq!(delays(&spec, 4 * MIN, 10).len(), 10);
    // The remembered attempts stay bounded by `attempts`.
    let mut a = failed("a0", "n1", 0, 100, None);
    for i in 0..10 {
        let Some(Outlook::Replace(l)) = outlook(&spec, &a) else {
            panic!()
        };
        assert!(l.recent_unix_ms.len() <= 3, "{l:?}");
        let t = l.eligible_unix_ms;
        a = failed(&format!("a{i}"), "n1", t, t + 4 * MIN, Some(l));
    }
    let off = with_policy("service", "{ attempts = 0 }");
    assert!(matches!(outlook(&off, &a), Some(Outlook::Never(_))));
}

fn nodes() -> Vec<NodeRecord> {
    vec![
        node("n1", "192.0.2.1", NodeStatus::Ready),
        node("n2", "192.0.2.2", NodeStatus::Ready),
    ]
}

#[test]
fn the_placement_pass_waits_for_the_delay_then_replaces_elsewhere() {
    let spec = job("service", 1, "false");
    let mut held = alloc("busy", 0, "n1", AllocStatus::Running);
    held.job = "other".into();
    held.resources.memory_mb = 512;
    let allocs = vec![failed("a0", "n1", 0, 1_000, None), held];
    let due = 31_000;
    let before = plan(
        &Default::default(),
        &nodes(),
        &allocs,
        &spec,
        Some(&spec),
        due - 1,
        &Default::default(),
    );
    assert_eq!(
        before.plan,
        crate::placement::Plan::default(),
        "not before its time"
    );
    assert_eq!(next_due_after(&spec, &allocs, due - 1), Some(due));

    let at = plan(
        &Default::default(),
        &nodes(),
        &allocs,
        &spec,
        Some(&spec),
        due,
        &Default::default(),
    );
    assert_eq!(at.plan.place.len(), 1, "{:?}", at.plan);
    let p = &at.plan.place[0];
    // Bin-packing alone would choose n1, the fuller node.
    assert_eq!(
        (p.index, p.node_id.as_str()),
        (0, "n2"),
        "where it has not failed"
    );
    let r = at.replacing(p).expect("a replacement");
    assert_eq!((r.old.as_str(), r.lineage.attempt), ("a0", 1));
    assert!(
        at.plan.stop.is_empty(),
        "the failed one is marked replaced, not stopped"
    );
    assert_eq!(
        next_due_after(&spec, &allocs, due),
        None,
        "past due is not a timer's"
    );
}

#[test]
fn with_one_node_the_replacement_goes_where_it_failed() {
    let spec = job("service", 1, "false");
    let one = vec![node("n1", "192.0.2.1", NodeStatus::Ready)];
    let allocs = vec![failed("a0", "n1", 0, 1_000, None)];
    let at = plan(
        &Default::default(),
        &one,
        &allocs,
        &spec,
        Some(&spec),
        31_000,
        &Default::default(),
    );
    assert_eq!(at.plan.place[0].node_id, "n1");
}

#[test]
fn a_replacement_written_without_its_mark_is_completed_not_doubled() {
    let spec = job("service", 1, "false");
    let old = failed("a0", "n1", 0, 1_000, None);
    let Some(Outlook::Replace(l)) = outlook(&spec, &old) else {
        panic!()
    };
    let mut new = alloc("a1", 0, "n2", AllocStatus::Running);
    new.reschedule.lineage = Some(Box::new(l));
    let allocs = vec![old, new];
    let p = plan(
        &Default::default(),
        &nodes(),
        &allocs,
        &spec,
        Some(&spec),
        99_000,
        &Default::default(),
    );
    assert!(
        p.plan.place.is_empty() && p.plan.stop.is_empty(),
        "{:?}",
        p.plan
    );
    assert_eq!(p.unmarked, [("a0".to_string(), "a1".to_string())]);
    let marked = replaced(&allocs[0], "a1", 5);
    assert_eq!(marked.desired, DesiredState::Stop);
    assert_eq!(outlook(&spec, &marked), None, "no longer wanted");
}

#[test]
fn a_batch_job_waits_for_its_replacement_and_the_failure_time_is_kept() {
    let spec = job("batch", 1, "false");
    let a = failed("a0", "n1", 0, 1_000, None);
    assert!(pending(&spec, [&a]));
    let r = on_status(
        &AllocReschedule::default(),
        AllocStatus::Running,
        AllocStatus::Failed,
        7,
    );
    assert_eq!(r.failed_unix_ms, Some(7));
    assert_eq!(
        on_status(&r, AllocStatus::Failed, AllocStatus::Failed, 9),
        r
    );
    let back = on_status(&r, AllocStatus::Failed, AllocStatus::Running, 9);
    assert_eq!(back.failed_unix_ms, None);
}
