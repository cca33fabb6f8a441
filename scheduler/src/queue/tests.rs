#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::placement::plan;
use crate::state::{AllocStatus, NodeStatus};
use crate::testkit::{alloc, job, node};

/// Job `j` with `count` instances of 600 millicores: one per 1-core node.
fn big(count: u32) -> crate::job::JobSpec {
    let mut spec = job("service", count, "true");
    spec.groups[0].tasks[0].resources.cpu_millis = 600;
    spec
}

#[test]
fn one_pending_record_per_group_with_the_count_and_the_first_reason() {
    let nodes = [
        node("n1", "192.0.2.1", NodeStatus::Ready),
        node("n2", "192.0.2.2", NodeStatus::Ready),
    ];
    let p = plan(&nodes, &[], &big(5), None);
    assert_eq!(p.place.len(), 2);
    assert_eq!(p.failures.len(), 1);
    let pending = pending_after(&p, &[], 1_000);
    assert_eq!(pending.len(), 1, "{pending:?}");
    let g = &pending[0];
    assert_eq!(
        (g.group.as_str(), g.count, g.since_unix_ms),
        ("g", 3, 1_000)
    );
    // The failure line without its group head, which the record's own
    // fields say.
    assert!(p.failures[0].starts_with("group \"g\": 3 instances unplaceable: "));
    assert_eq!(
        g.reason,
        p.failures[0].split_once(" unplaceable: ").unwrap().1
    );
    assert!(g.reason.contains("short of CPU"), "{}", g.reason);
    assert_eq!(total(&pending), 3);
}

#[test]
fn a_group_that_keeps_waiting_keeps_its_since_and_a_placed_one_leaves() {
    let nodes = [node("n1", "192.0.2.1", NodeStatus::Ready)];
    let first = pending_after(&plan(&nodes, &[], &big(2), None), &[], 1_000);
    assert_eq!(first[0].count, 1);
    // Instance 0 runs on n1; a later plan still cannot place instance 1.
    let mut a0 = alloc("a0", 0, "n1", AllocStatus::Running);
    a0.resources.cpu_millis = 600;
    let spec = big(2);
    let again = pending_after(
        &plan(&nodes, std::slice::from_ref(&a0), &spec, Some(&spec)),
        &first,
        9_000,
    );
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].count, again[0].since_unix_ms), (1, 1_000));
    // A second node joins: all placed, nothing pends.
    let two = [nodes[0].clone(), node("n2", "192.0.2.2", NodeStatus::Ready)];
    let placed = plan(&two, &[a0], &spec, Some(&spec));
    assert_eq!(placed.place.len(), 1);
    assert!(placed.unplaced.is_empty());
    assert!(pending_after(&placed, &again, 10_000).is_empty());
}

#[test]
fn no_node_at_all_is_a_reason_too_and_reasons_stay_bounded() {
    let p = plan(&[], &[], &big(300), None);
    let pending = pending_after(&p, &[], 5);
    assert_eq!(pending[0].count, 300);
    assert!(
        pending[0].reason.contains("no nodes in the cluster"),
        "{}",
        pending[0].reason
    );

    let mut long = p.clone();
    long.failures[0] = "é".repeat(MAX_REASON_BYTES);
    let cut = pending_after(&long, &[], 5);
    assert!(cut[0].reason.len() <= MAX_REASON_BYTES);
    assert!(cut[0].reason.ends_with("..."));

    let mut silent = p;
    silent.failures.clear();
    let why = pending_after(&silent, &[], 5);
    assert!(
        !why[0].reason.is_empty(),
        "a count without an explanation still says something"
    );
}
