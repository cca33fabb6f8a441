//! Bad input on big simulated clusters: what no cluster could hold is one
//! failure line per group, found with one scan of the nodes.

use super::*;
use crate::job::{SpreadSpec, Target};

fn cluster(n: usize, cpu: u64, mem: u64) -> Vec<NodeRecord> {
    (0..n)
        .map(|i| node(&format!("n{i:05}"), cpu, mem))
        .collect()
}

#[test]
fn ten_thousand_unplaceable_instances_are_one_line() {
    let nodes = cluster(10_000, 1000, 1024);
    let p = plan(
        &nodes,
        &[],
        &job("big", JobKind::Service, 10_000, 100, 4096),
        None,
    );
    assert!(p.place.is_empty());
    assert_eq!(
        p.failures.len(),
        1,
        "{:?}",
        &p.failures[..2.min(p.failures.len())]
    );
    let line = &p.failures[0];
    assert!(
        line.starts_with("group \"g\": 10,000 instances unplaceable: 10,000 nodes evaluated: 10,000 short of memory (need 4096 MiB)"),
        "{line}"
    );

    // Ten fit, one per node; the rest are counted.
    let nodes = cluster(10, 1000, 1024);
    let p = plan(
        &nodes,
        &[],
        &job("big", JobKind::Service, 10_000, 1000, 64),
        None,
    );
    assert_eq!(p.place.len(), 10);
    assert_eq!(p.failures.len(), 1);
    assert!(
        p.failures[0].starts_with(
            "group \"g\": 9,990 instances unplaceable: 10 nodes evaluated: 10 short of CPU"
        ),
        "{}",
        p.failures[0]
    );
}

#[test]
fn a_system_job_no_node_can_hold_is_one_line_naming_a_few_nodes() {
    let nodes = cluster(10_000, 1000, 1024);
    let p = plan(&nodes, &[], &job("sys", JobKind::System, 0, 2000, 32), None);
    assert_eq!(p.failures.len(), 1);
    assert_eq!(
        p.failures[0],
        "group \"g\": 10,000 nodes lack 2000 millicores / 32 MiB free: \
         n00000, n00001, n00002, n00003, n00004 and 9,995 more"
    );
}

#[test]
fn a_spread_over_a_property_no_node_has_still_places() {
    let nodes = cluster(100, 1000, 1024);
    let mut j = job("j", JobKind::Service, 50, 100, 32);
    j.groups[0].spreads = vec![SpreadSpec {
        attribute: Target::Meta("nowhere".into()),
        weight: 100,
        targets: Vec::new(),
    }];
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(p.place.len(), 50, "{:?}", p.failures);
}
