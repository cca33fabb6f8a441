//! Spread on simulated clusters: with and without targets, with
//! allocations that must not count, with nodes lacking the property, over
//! 10,000 values; and the scheduler-wide and per-job algorithm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use crate::job::{Algorithm, JobSpec, Resources, SpreadSpec, SpreadTarget, Target};
use crate::placement::{plan, plan_with, Plan, PlanConfig};
use crate::state::{AllocRecord, AllocStatus, DesiredState, NodeRecord, NodeStatus};
use crate::testkit;

/// Node `id` (4 cores, 4 GiB) with `rack` as `${meta.rack}`, if any.
fn node(id: &str, rack: Option<&str>) -> NodeRecord {
    let mut n = testkit::node(id, "10.0.0.1", NodeStatus::Ready);
    n.resources = Resources {
        cpu_millis: 4000,
        memory_mb: 4096,
    };
    if let Some(r) = rack {
        n.meta.insert("rack".into(), r.into());
    }
    n
}

/// `per_rack` nodes in each rack, named `<rack>-<i>`.
fn racks(racks: &[&str], per_rack: usize) -> Vec<NodeRecord> {
    let mut v: Vec<NodeRecord> = racks
        .iter()
        .flat_map(|r| (0..per_rack).map(move |i| node(&format!("{r}-{i:02}"), Some(r))))
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn rack_spread(targets: &[(&str, u32)]) -> SpreadSpec {
    SpreadSpec {
        attribute: Target::Meta("rack".into()),
        weight: 50,
        targets: targets
            .iter()
            .map(|(v, p)| SpreadTarget {
                value: (*v).into(),
                percent: *p,
            })
            .collect(),
    }
}

/// Job `j`, group `g` of `count` (100 millicores, 64 MiB each) spread by
/// rack.
fn spread_job(count: u32, targets: &[(&str, u32)]) -> JobSpec {
    let mut j = testkit::job("service", count, "true");
    j.groups[0].spreads = vec![rack_spread(targets)];
    j
}

/// Instances per rack among the plan's placements and `kept`.
fn per_rack(nodes: &[NodeRecord], p: &Plan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for x in &p.place {
        let n = nodes.iter().find(|n| n.id == x.node_id).unwrap();
        let rack = n.meta.get("rack").cloned().unwrap_or_else(|| "-".into());
        *out.entry(rack).or_insert(0) += 1;
    }
    out
}

fn counts(v: &[(&str, usize)]) -> BTreeMap<String, usize> {
    v.iter().map(|(k, n)| ((*k).to_string(), *n)).collect()
}

#[test]
fn targets_give_each_value_its_share_and_unlisted_values_none_when_they_sum_to_100() {
    let nodes = racks(&["r1", "r2", "r3"], 10);
    let p = plan(
        &nodes,
        &[],
        &spread_job(10, &[("r1", 70), ("r2", 30)]),
        None,
    );
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    assert_eq!(per_rack(&nodes, &p), counts(&[("r1", 7), ("r2", 3)]));
}

#[test]
fn values_not_listed_share_what_the_targets_leave() {
    let nodes = racks(&["r1", "r2", "r3"], 10);
    let p = plan(&nodes, &[], &spread_job(8, &[("r1", 50)]), None);
    assert_eq!(
        per_rack(&nodes, &p),
        counts(&[("r1", 4), ("r2", 2), ("r3", 2)])
    );
}

#[test]
fn without_targets_instances_even_out_over_the_values_present() {
    // Rack r3 has fewer nodes; without the spread, anti-affinity alone
    // fills the first nine nodes by id (all in r1).
    let mut nodes = racks(&["r1", "r2"], 10);
    nodes.extend(racks(&["r3"], 3));
    let j = spread_job(9, &[]);
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(
        per_rack(&nodes, &p),
        counts(&[("r1", 3), ("r2", 3), ("r3", 3)])
    );
    let mut plain = j.clone();
    plain.groups[0].spreads.clear();
    // Scoring every node (no candidate sample), as the spread does.
    let every_node = PlanConfig {
        max_candidates: Some(usize::MAX),
        ..Default::default()
    };
    assert_eq!(
        per_rack(&nodes, &plan_with(&every_node, &nodes, &[], &plain, None)),
        counts(&[("r1", 9)]),
        "the spread is what moved them"
    );
}

#[test]
fn job_level_spreads_apply_to_every_group() {
    let nodes = racks(&["r1", "r2"], 4);
    let mut j = testkit::job("service", 4, "true");
    j.spreads = vec![rack_spread(&[])];
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(per_rack(&nodes, &p), counts(&[("r1", 2), ("r2", 2)]));
}

fn alloc(
    id: &str,
    index: u32,
    node: &str,
    desired: DesiredState,
    status: AllocStatus,
) -> AllocRecord {
    AllocRecord {
        desired,
        ..testkit::alloc(id, index, node, status)
    }
}

#[test]
fn only_allocations_still_wanted_count() {
    let nodes = racks(&["r1", "r2"], 5);
    let j = spread_job(4, &[]);
    let allocs = [
        // Counts: wanted and running.
        alloc("a0", 0, "r1-00", DesiredState::Run, AllocStatus::Running),
        // Terminating: asked to stop, still running its kill timeout.
        alloc("a1", 1, "r1-01", DesiredState::Stop, AllocStatus::Running),
        // Failed: keeps its slot (the node restarts it) but runs nothing.
        alloc("a2", 2, "r1-02", DesiredState::Run, AllocStatus::Failed),
    ];
    let p = plan(&nodes, &allocs, &j, Some(&j));
    let placed: BTreeSet<u32> = p.place.iter().map(|x| x.index).collect();
    assert_eq!(placed, BTreeSet::from([1, 3]));
    // Racks hold 1 (r1) and 0 (r2) that count: the two new instances even
    // them out. Had the terminating or the failed one counted (r1: 2 or
    // 3), both would go to r2.
    assert_eq!(per_rack(&nodes, &p), counts(&[("r1", 1), ("r2", 1)]));
}

#[test]
fn allocations_this_plan_replaces_do_not_count() {
    let nodes = racks(&["r1", "r2"], 5);
    let old = spread_job(4, &[]);
    let allocs: Vec<AllocRecord> = (0..4)
        .map(|i| {
            alloc(
                &format!("old{i}"),
                i,
                &format!("r1-0{i}"),
                DesiredState::Run,
                AllocStatus::Running,
            )
        })
        .collect();
    let mut new = old.clone();
    new.groups[0].tasks[0].command = vec!["false".into()];
    let p = plan(&nodes, &allocs, &new, Some(&old));
    assert_eq!(p.stop.len(), 4, "the old version is replaced");
    assert_eq!(per_rack(&nodes, &p), counts(&[("r1", 2), ("r2", 2)]));
}

#[test]
fn nodes_lacking_the_property_come_last_but_still_serve() {
    // The unracked nodes sort first and are the emptiest.
    let mut nodes: Vec<NodeRecord> = (0..6).map(|i| node(&format!("a-{i}"), None)).collect();
    nodes.extend(racks(&["r1", "r2"], 2));
    let p = plan(&nodes, &[], &spread_job(4, &[]), None);
    assert_eq!(per_rack(&nodes, &p), counts(&[("r1", 2), ("r2", 2)]));

    // With the racks full, the spread is a preference, not a constraint.
    for n in nodes.iter_mut().filter(|n| n.id.starts_with('r')) {
        n.resources.cpu_millis = 50;
    }
    let p = plan(&nodes, &[], &spread_job(4, &[]), None);
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    assert_eq!(per_rack(&nodes, &p), counts(&[("-", 4)]));
}

#[test]
fn a_spread_over_10000_values_stays_linear_and_spreads() {
    // 10,000 racks of two nodes, sorted so that both nodes of a rack are
    // next to each other: bin-pack and anti-affinity alone would put the
    // second instance on the first rack's second node.
    let nodes: Vec<NodeRecord> = (0..10_000)
        .flat_map(|r| {
            let rack = format!("r{r:05}");
            [
                node(&format!("{rack}-a"), Some(&rack)),
                node(&format!("{rack}-b"), Some(&rack)),
            ]
        })
        .collect();
    let p = plan(&nodes, &[], &spread_job(300, &[]), None);
    assert_eq!(p.place.len(), 300, "{:?}", p.failures);
    let racks = per_rack(&nodes, &p);
    assert_eq!(racks.len(), 300, "one instance per rack");
    assert!(racks.values().all(|n| *n == 1));

    // Targets on two of the 10,000 values; the rest share nothing.
    let p = plan(
        &nodes,
        &[],
        &spread_job(8, &[("r00007", 50), ("r09999", 50)]),
        None,
    );
    assert_eq!(
        per_rack(&nodes, &p),
        counts(&[("r00007", 4), ("r09999", 4)])
    );
}

#[test]
fn counts_follow_placements() {
    let nodes = racks(&["r1", "r2"], 1);
    let spec = rack_spread(&[]);
    let mut s = super::GroupSpread::new(&nodes, [&spec], 4, &[0], |_| true);
    assert_eq!(s.count_at(0, 0), Some(1));
    assert!(s.score(1) > s.score(0), "the emptier rack wins");
    s.placed(1);
    assert_eq!(s.count_at(0, 1), Some(1));
    assert!((s.score(1) - s.score(0)).abs() < 1e-9, "even again");
    let none = super::GroupSpread::new(&nodes, [], 4, &[0], |_| panic!("no spread, no scan"));
    assert!(none.is_empty() && none.score(0) == 0.0);
}

/// Node `a` already half full, node `b` empty: where one more instance goes.
fn fuller_or_emptier(config: PlanConfig, job_algorithm: Option<Algorithm>) -> String {
    let nodes = [node("a", None), node("b", None)];
    let other = AllocRecord {
        job: "other".into(),
        resources: Resources {
            cpu_millis: 2000,
            memory_mb: 2048,
        },
        ..testkit::alloc("x", 0, "a", AllocStatus::Running)
    };
    let mut j = testkit::job("service", 1, "true");
    j.algorithm = job_algorithm;
    let p = plan_with(&config, &nodes, &[other], &j, None);
    p.place[0].node_id.clone()
}

#[test]
fn binpack_is_the_default_and_spread_prefers_the_emptiest_node() {
    let binpack = PlanConfig::default();
    let spread = PlanConfig {
        algorithm: Algorithm::Spread,
        ..Default::default()
    };
    assert_eq!(binpack.algorithm, Algorithm::BinPack);
    assert_eq!(fuller_or_emptier(binpack, None), "a");
    assert_eq!(fuller_or_emptier(binpack, Some(Algorithm::Spread)), "b");
    assert_eq!(
        fuller_or_emptier(spread, None),
        "b",
        "the scheduler's default"
    );
    assert_eq!(
        fuller_or_emptier(spread, Some(Algorithm::BinPack)),
        "a",
        "the job's own choice wins"
    );
}
