//! Unhealthy allocations on simulated records: when a critical check makes
//! an allocation unhealthy, when its replacement is due, where it goes,
//! the delays doubling over a run of unhealthy replacements, and a
//! deployment placing the slot of an unhealthy allocation again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use drover_model::{CheckKind, CheckState, CheckStatus};

use super::super::{freed, next_due_after, outlook, plan, view, Outlook};
use super::*;
use crate::deploy::plan::{plan as deploy_plan, Input};
use crate::deploy::{new_deployment, DeploymentStatus};
use crate::job::{JobSpec, UpdateSpec};
use crate::state::{Lineage, NodeStatus};
use crate::testkit::{alloc, job, node};

/// Healthy deadline and first reschedule delay of [`spec`].
const DEADLINE: i64 = 2_000;
const DELAY: i64 = 1_000;

/// One instance, a 2 s healthy deadline, replacements after 1 s doubling
/// up to 8 s.
fn spec() -> JobSpec {
    let mut j = job("service", 1, "app");
    j.groups[0].update = Some(UpdateSpec {
        min_healthy_time_ms: 100,
        healthy_deadline_ms: DEADLINE as u64,
        progress_deadline_ms: 60_000,
        ..UpdateSpec::default()
    });
    let p = j.groups[0].reschedule.as_mut().unwrap();
    (p.delay_ms, p.max_delay_ms) = (DELAY as u64, 8_000);
    j
}

fn check(status: CheckStatus) -> CheckState {
    CheckState {
        service: "web".into(),
        index: 0,
        kind: CheckKind::Http,
        status,
        output: String::new(),
        last_unix_ms: 0,
    }
}

/// Allocation `id` running on `node_id` since `created`, a check critical
/// since `since`, replacing per `lineage`.
fn critical(id: &str, node_id: &str, created: i64, since: i64, l: Option<Lineage>) -> AllocRecord {
    let mut a = alloc(id, 0, node_id, AllocStatus::Running);
    a.created_unix_ms = created;
    a.modified_unix_ms = since;
    a.checks = vec![check(CheckStatus::Critical)];
    a.reschedule.critical_unix_ms = Some(since);
    a.reschedule.lineage = l.map(Box::new);
    a
}

fn nodes() -> Vec<crate::state::NodeRecord> {
    vec![
        node("n1", "192.0.2.1", NodeStatus::Ready),
        node("n2", "192.0.2.2", NodeStatus::Ready),
    ]
}

#[test]
fn a_check_critical_past_the_deadline_is_replaced_elsewhere_after_the_delay() {
    let spec = spec();
    let since = 5_000;
    let allocs = vec![critical("a0", "n1", 0, since, None)];
    let due = since + DEADLINE + DELAY;
    let Some(Outlook::Replace(l)) = outlook(&spec, &allocs[0]) else {
        panic!("a critical allocation is a candidate");
    };
    assert_eq!((l.eligible_unix_ms, l.delay_ms, l.attempt), (due, 1_000, 1));
    assert!(l.unhealthy);
    assert_eq!(next_due_after(&spec, &allocs, since), Some(due));
    let at = |now| {
        plan(
            &Default::default(),
            &nodes(),
            &allocs,
            &spec,
            Some(&spec),
            now,
            &Default::default(),
        )
    };
    assert!(
        at(due - 1).plan.place.is_empty(),
        "not before deadline + delay"
    );
    let p = at(due);
    assert_eq!(p.plan.place.len(), 1, "{:?}", p.plan);
    assert_eq!(p.plan.place[0].node_id, "n2", "not where it was unhealthy");
    assert_eq!(p.replacing(&p.plan.place[0]).unwrap().old, "a0");

    // Its check passing again before then: nothing to replace.
    let mut well = allocs[0].clone();
    well.reschedule.critical_unix_ms = None;
    assert_eq!(outlook(&spec, &well), None);
    // Rescheduling off: never replaced.
    let mut off = spec.clone();
    let p = off.groups[0].reschedule.as_mut().unwrap();
    (p.attempts, p.unlimited) = (0, false);
    assert!(matches!(outlook(&off, &allocs[0]), Some(Outlook::Never(_))));
    // Without `update`, the deadline is Nomad's default, 5 min.
    let mut plain = spec.clone();
    plain.groups[0].update = None;
    let Some(Outlook::Replace(l)) = outlook(&plain, &allocs[0]) else {
        panic!("replaced without an update strategy too");
    };
    assert_eq!(l.eligible_unix_ms, since + 300_000 + DELAY);
}

#[test]
fn replacements_that_are_unhealthy_in_turn_wait_twice_as_long_each_time() {
    let spec = spec();
    let mut a = critical("a0", "n1", 0, 500, None);
    let mut gaps = Vec::new();
    for n in 1..=5 {
        let Some(Outlook::Replace(l)) = outlook(&spec, &a) else {
            panic!("attempt {n}");
        };
        let start = l.eligible_unix_ms;
        gaps.push(start - a.created_unix_ms);
        // Each replacement turns critical 500 ms after it starts.
        a = critical(&format!("a{n}"), "n1", start, start + 500, Some(l));
    }
    // 500 ms running + 2 s deadline + the delay, doubling up to 8 s.
    assert_eq!(gaps, [3_500, 4_500, 6_500, 10_500, 10_500]);
}

#[test]
fn a_deployment_places_the_slot_of_an_unhealthy_allocation_again() {
    let spec = spec();
    let since = 5_000;
    let allocs = vec![critical("a0", "n1", 0, since, None)];
    let mut d = new_deployment(&spec, 1, &[("g", false)], false, 0);
    d.status = DeploymentStatus::Successful;
    let versions = BTreeMap::from([(1, spec.clone())]);
    let decide = |allocs: &[AllocRecord], now| {
        let out = deploy_plan(Input {
            job: &spec,
            version: 1,
            new_version: false,
            revert: false,
            latest: Some(&d),
            versions: &versions,
            allocs,
            now,
        });
        out.decision.unwrap().groups["g"].place.clone()
    };
    let due = since + DEADLINE + DELAY;
    // Seen as stored, the unhealthy allocation holds its slot...
    assert!(decide(&allocs, due).is_empty());
    // ...freed once due, the deployment places it again.
    assert!(freed(&spec, &allocs, due - 1).is_empty());
    let free = freed(&spec, &allocs, due);
    assert_eq!(free.iter().copied().collect::<Vec<_>>(), ["a0"]);
    assert_eq!(decide(&view(&allocs, &free), due), [0]);
}
