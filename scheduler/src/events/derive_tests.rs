use drover_model::{CheckKind, CheckState, CheckStatus};

use super::*;
use crate::state::Lineage;
use crate::testkit::{alloc, node};

fn job_record() -> JobRecord {
    JobRecord {
        spec: crate::testkit::job("service", 1, "true"),
        status: JobStatus::Running,
        version: 1,
        submitted_unix_ms: 0,
        pending: Vec::new(),
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn check(status: CheckStatus) -> CheckState {
    CheckState {
        service: "web".into(),
        index: 0,
        kind: CheckKind::Http,
        status,
        output: "HTTP 500\nbody".into(),
        last_unix_ms: 7,
    }
}

#[test]
fn a_new_allocation_is_placed_and_a_replacement_says_what_it_replaces() {
    let a = alloc("aaaaaaaa-1", 0, "n1", AllocStatus::Pending);
    let e = alloc_events(None, &a, StopContext::default());
    assert_eq!(kinds(&e), ["Placed"]);
    assert_eq!(e[0].message, "placed on node n1");
    assert_eq!(
        (e[0].job.as_str(), e[0].alloc_name.as_str()),
        ("j", "j.g[0]")
    );
    let mut r = a.clone();
    r.reschedule.lineage = Some(Box::new(Lineage {
        previous: "bbbbbbbb-2".into(),
        attempt: 2,
        eligible_unix_ms: 0,
        delay_ms: 500,
        recent_unix_ms: Vec::new(),
        unhealthy: false,
    }));
    let e = alloc_events(None, &r, StopContext::default());
    assert_eq!(kinds(&e), ["Placed", "Rescheduled"]);
    assert!(
        e[1].message.contains("bbbbbbbb (attempt 2"),
        "{}",
        e[1].message
    );
}

#[test]
fn ends_and_stops_are_events_with_their_reason() {
    let old = alloc("a1", 0, "n1", AllocStatus::Running);
    let mut new = old.clone();
    new.status = AllocStatus::Failed;
    new.tasks = vec![crate::state::TaskStateRecord {
        name: "app".into(),
        message: "refused by the node policy: seccomp".into(),
        ..Default::default()
    }];
    let e = alloc_events(Some(&old), &new, StopContext::default());
    assert_eq!(kinds(&e), ["Failed"]);
    assert!(e[0]
        .message
        .contains("task app: refused by the node policy"));

    let mut lost = old.clone();
    lost.status = AllocStatus::Lost;
    assert_eq!(
        kinds(&alloc_events(Some(&old), &lost, StopContext::default())),
        ["Lost"]
    );

    // Asked to stop because the node drains, then stopped.
    let mut stop = old.clone();
    stop.desired = DesiredState::Stop;
    let mut n = node("n1", "10.0.0.1", crate::state::NodeStatus::Ready);
    n.draining = true;
    let job = job_record();
    let ctx = StopContext {
        job: Some(&job),
        node: Some(&n),
    };
    let e = alloc_events(Some(&old), &stop, ctx);
    assert_eq!(kinds(&e), ["Stop Requested"]);
    assert_eq!(e[0].message, "node n1 is draining");
    let mut done = stop.clone();
    done.status = AllocStatus::Complete;
    assert_eq!(kinds(&alloc_events(Some(&stop), &done, ctx)), ["Stopped"]);
    // Nothing changed: nothing happened.
    assert!(alloc_events(Some(&done), &done, ctx).is_empty());
}

#[test]
fn stop_reasons_name_the_job_change() {
    let mut a = alloc("a1", 0, "n1", AllocStatus::Running);
    a.desired = DesiredState::Stop;
    assert_eq!(
        stop_reason(&a, StopContext::default()),
        "its job was removed"
    );
    let mut job = job_record();
    job.status = JobStatus::Stopped;
    let ctx = StopContext {
        job: Some(&job),
        node: None,
    };
    assert_eq!(stop_reason(&a, ctx), "its job was stopped");
    job.status = JobStatus::Running;
    job.version = 3;
    let ctx = StopContext {
        job: Some(&job),
        node: None,
    };
    assert!(stop_reason(&a, ctx).starts_with("job updated to version 3"));
    a.reschedule.replaced_by = "cccccccc-3".into();
    assert_eq!(stop_reason(&a, ctx), "rescheduled: replaced by cccccccc");
}

#[test]
fn checks_turning_passing_or_critical_are_events() {
    let mut old = alloc("a1", 0, "n1", AllocStatus::Running);
    old.checks = vec![check(CheckStatus::Pending)];
    let mut new = old.clone();
    new.checks = vec![check(CheckStatus::Passing)];
    let e = alloc_events(Some(&old), &new, StopContext::default());
    assert_eq!(kinds(&e), ["Check Passing"]);
    assert_eq!(e[0].message, "service web check 0 (http) passing");
    assert_eq!(e[0].time_unix_ms, 7);
    let mut bad = new.clone();
    bad.checks = vec![check(CheckStatus::Critical)];
    let e = alloc_events(Some(&new), &bad, StopContext::default());
    assert_eq!(kinds(&e), ["Check Failing"]);
    assert_eq!(
        e[0].message,
        "service web check 0 (http) critical: HTTP 500"
    );
    assert!(alloc_events(Some(&bad), &bad, StopContext::default()).is_empty());
}
