use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::state::{AllocStatus, JobRecord, JobStatus};
use crate::testkit::{alloc, job};

fn report(id: &str, status: AllocStatus) -> StatusReport {
    StatusReport {
        alloc_id: id.into(),
        status,
        tasks: Vec::new(),
        ip: String::new(),
        checks: Vec::new(),
    }
}

fn jobs(kill_ms: u64) -> BTreeMap<String, JobRecord> {
    let mut spec = job("service", 1, "/bin/true");
    for t in &mut spec.groups[0].tasks {
        t.kill_timeout_ms = kill_ms;
    }
    let rec = JobRecord {
        spec,
        status: JobStatus::Running,
        version: 1,
        submitted_unix_ms: 0,
        pending: Vec::new(),
    };
    [("j".to_string(), rec)].into()
}

fn by_id(allocs: Vec<AllocRecord>) -> BTreeMap<String, AllocRecord> {
    allocs.into_iter().map(|a| (a.id.clone(), a)).collect()
}

#[test]
fn only_copies_the_cluster_does_not_want_there_are_stale() {
    let mut replaced = alloc("replaced", 0, "n1", AllocStatus::Lost);
    replaced.desired = DesiredState::Stop;
    let wanted = alloc("wanted", 1, "n1", AllocStatus::Running);
    let moved = alloc("moved", 2, "n2", AllocStatus::Running);
    let allocs = by_id(vec![replaced, wanted, moved]);
    let running = [
        report("replaced", AllocStatus::Running),
        report("wanted", AllocStatus::Running),
        report("moved", AllocStatus::Pending),
        report("unknown", AllocStatus::Running),
        // Already over: nothing to wait for.
        report("ended", AllocStatus::Complete),
    ];
    let got = stale("n1", &running, &allocs, &jobs(2_000));
    let ids: Vec<&str> = got.iter().map(|s| s.alloc_id.as_str()).collect();
    assert_eq!(ids, ["replaced", "moved", "unknown"]);
    assert_eq!(got[0].kill_timeout, Duration::from_secs(2));
    assert_eq!(
        got[2].kill_timeout, UNKNOWN_KILL_TIMEOUT,
        "no record, no job"
    );
}

#[test]
fn a_node_running_only_what_it_should_has_nothing_stale() {
    let allocs = by_id(vec![alloc("a", 0, "n1", AllocStatus::Running)]);
    let running = [report("a", AllocStatus::Running)];
    assert!(stale("n1", &running, &allocs, &jobs(1)).is_empty());
    assert!(stale("n1", &[], &allocs, &jobs(1)).is_empty());
}

#[test]
fn the_bound_is_the_longest_kill_timeout_plus_the_grace() {
    let s = |ms| Stale {
        alloc_id: String::new(),
        kill_timeout: Duration::from_millis(ms),
    };
    let grace = Duration::from_secs(5);
    assert_eq!(
        bound(&[s(100), s(7_000), s(30)], grace),
        Duration::from_secs(12)
    );
    assert_eq!(bound(&[], grace), grace);
}

#[test]
fn ready_once_every_stale_copy_is_reported_terminal() {
    let t0 = Instant::now();
    let stale = [
        Stale {
            alloc_id: "a".into(),
            kill_timeout: Duration::from_secs(1),
        },
        Stale {
            alloc_id: "b".into(),
            kill_timeout: Duration::from_secs(1),
        },
    ];
    let mut r = Returns::default();
    r.start("n1", &stale, t0, Duration::from_secs(10));
    assert!(r.tracks("n1"));
    assert_eq!(r.reported("n1", "a", false), Flip::Wait, "still running");
    assert_eq!(r.reported("n1", "a", true), Flip::Wait, "b still runs");
    assert_eq!(r.reported("n1", "other", true), Flip::Wait);
    assert_eq!(r.reported("n2", "b", true), Flip::Wait, "another node's");
    assert_eq!(r.reported("n1", "b", true), Flip::Ready);
    assert!(!r.tracks("n1"));
    assert_eq!(r.reported("n1", "b", true), Flip::Wait, "flips once");
    assert_eq!(r.check("n1", t0 + Duration::from_secs(60)), Flip::Wait);
}

#[test]
fn past_the_bound_it_is_ready_anyway_naming_what_still_runs() {
    let t0 = Instant::now();
    let stale = [Stale {
        alloc_id: "a".into(),
        kill_timeout: Duration::from_secs(1),
    }];
    let mut r = Returns::default();
    r.start("n1", &stale, t0, Duration::from_secs(6));
    assert_eq!(r.check("n1", t0 + Duration::from_secs(5)), Flip::Wait);
    assert_eq!(
        r.check("n1", t0 + Duration::from_secs(6)),
        Flip::Overdue(vec!["a".into()])
    );
    assert!(!r.tracks("n1"));
}

#[test]
fn a_new_registration_replaces_what_was_awaited() {
    let t0 = Instant::now();
    let one = |id: &str| Stale {
        alloc_id: id.into(),
        kill_timeout: Duration::ZERO,
    };
    let mut r = Returns::default();
    r.start("n1", &[one("a")], t0, Duration::from_secs(6));
    r.start("n1", &[one("b")], t0, Duration::from_secs(6));
    assert_eq!(r.reported("n1", "a", true), Flip::Wait);
    assert_eq!(r.reported("n1", "b", true), Flip::Ready);
    r.start("n1", &[one("c")], t0, Duration::from_secs(6));
    r.start("n1", &[], t0, Duration::from_secs(6));
    assert!(!r.tracks("n1"), "nothing stale: not waited on");
    r.start("n1", &[one("c")], t0, Duration::from_secs(6));
    r.forget("n1");
    assert_eq!(r.check("n1", t0 + Duration::from_secs(60)), Flip::Wait);
}
