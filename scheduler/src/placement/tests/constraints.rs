//! Constraints, affinities and explanations on simulated snapshots.

use super::*;
use crate::job::{Affinity, AffinityFields, Constraint, ConstraintFields};

fn rule(attribute: &str, operator: &str, value: &str) -> Constraint {
    Constraint::new(ConstraintFields {
        attribute: attribute.into(),
        operator: operator.into(),
        value: value.into(),
    })
    .unwrap()
}

fn prefer(attribute: &str, value: &str, weight: i64) -> Affinity {
    Affinity::new(AffinityFields {
        on: ConstraintFields {
            attribute: attribute.into(),
            operator: String::new(),
            value: value.into(),
        },
        weight,
    })
    .unwrap()
}

/// A node with `arch` as attribute and `rack` as metadata.
fn racked(id: &str, arch: &str, rack: &str, mem: u64) -> NodeRecord {
    let mut n = node(id, 4000, mem);
    n.attributes.insert("arch".into(), arch.into());
    n.meta.insert("rack".into(), rack.into());
    n
}

fn on(p: &Plan) -> Vec<&str> {
    p.place.iter().map(|x| x.node_id.as_str()).collect()
}

#[test]
fn an_explanation_counts_each_stage_and_names_the_constraint() {
    // 10 nodes: 6 of the wrong arch, 3 arm64 too small, 1 arm64 draining.
    let mut nodes: Vec<NodeRecord> = (0..6)
        .map(|i| racked(&format!("x{i}"), "amd64", "r1", 8192))
        .collect();
    nodes.extend((0..3).map(|i| racked(&format!("s{i}"), "arm64", "r1", 256)));
    let mut draining = racked("d0", "arm64", "r1", 8192);
    draining.draining = true;
    nodes.push(draining);
    let mut j = job("web", JobKind::Service, 4, 100, 512);
    j.groups[0].name = "web".into();
    j.groups[0].constraints = vec![rule("${attr.arch}", "=", "arm64")];
    let p = plan(&nodes, &[], &j, None);
    assert!(p.place.is_empty());
    assert_eq!(p.failures.len(), 1);
    assert_eq!(
        p.failures[0],
        "group \"web\": 4 instances unplaceable: 10 nodes evaluated: 6 filtered by constraint \
         ${attr.arch} = arm64, 3 short of memory (need 512 MiB), 1 draining"
    );
}

#[test]
fn constraints_of_job_group_and_task_all_apply() {
    let nodes = vec![
        racked("a", "amd64", "r1", 4096),
        racked("b", "arm64", "r1", 4096),
        racked("c", "arm64", "r2", 4096),
    ];
    let mut j = job("web", JobKind::Service, 2, 100, 32);
    j.constraints = vec![rule("${attr.arch}", "", "arm64")];
    j.groups[0].tasks[0].constraints = vec![rule("${meta.rack}", "!=", "r1")];
    let p = plan(&nodes, &[], &j, None);
    // Both instances on "c": the only node passing all three.
    assert_eq!(on(&p), ["c", "c"]);
    // A third level that nothing satisfies, named with its task.
    j.groups[0].constraints = vec![rule("${meta.ssd}", "is_set", "")];
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(
        p.failures[0],
        "group \"g\": 2 instances unplaceable: 3 nodes evaluated: 2 filtered by constraint \
         ${meta.ssd} is_set, 1 filtered by constraint ${attr.arch} = arm64"
    );
    j.groups[0].constraints.clear();
    j.constraints.clear();
    j.groups[0].tasks[0].constraints = vec![rule("${meta.rack}", "=", "r9")];
    let p = plan(&nodes, &[], &j, None);
    assert!(
        p.failures[0].ends_with("3 filtered by constraint ${meta.rack} = r9 (task \"t\")"),
        "{}",
        p.failures[0]
    );
}

#[test]
fn distinct_hosts_keeps_instances_of_the_group_apart() {
    let nodes = vec![node("a", 4000, 4096), node("b", 4000, 4096)];
    let mut j = job("web", JobKind::Service, 3, 100, 32);
    j.groups[0].constraints = vec![rule("", "distinct_hosts", "")];
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(on(&p), ["a", "b"]);
    assert_eq!(
        p.failures,
        ["group \"g\": 1 instance unplaceable: 2 nodes evaluated: 2 filtered by constraint distinct_hosts"]
    );
    // A kept instance counts: with it on "a", only "b" is left.
    let kept = alloc_for(&p.place[0], "web", "k0");
    j.groups[0].count = 2;
    let p = plan(&nodes, std::slice::from_ref(&kept), &j, Some(&j));
    assert_eq!(on(&p), ["b"]);
    // One being replaced (its group changed) does not.
    let mut changed = j.clone();
    changed.groups[0].tasks[0].command = vec!["false".into()];
    let p = plan(&nodes, &[kept], &changed, Some(&j));
    assert_eq!(p.stop, ["k0"]);
    assert_eq!(on(&p), ["a", "b"]);
}

#[test]
fn distinct_hosts_at_job_level_spans_groups() {
    let nodes = vec![node("a", 4000, 4096), node("b", 4000, 4096)];
    let mut j = job("web", JobKind::Service, 1, 100, 32);
    let mut second = j.groups[0].clone();
    second.name = "h".into();
    j.groups.push(second);
    // Group level: each group alone, so both may share a node; bin-pack
    // puts the second beside the first.
    j.groups[0].constraints = vec![rule("", "distinct_hosts", "")];
    j.groups[1].constraints = vec![rule("", "distinct_hosts", "")];
    assert_eq!(on(&plan(&nodes, &[], &j, None)), ["a", "a"]);
    // Job level: no two allocations of the job on one node.
    j.groups[0].constraints.clear();
    j.groups[1].constraints.clear();
    j.constraints = vec![rule("", "distinct_hosts", "")];
    assert_eq!(on(&plan(&nodes, &[], &j, None)), ["a", "b"]);
    j.groups[1].count = 2;
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(on(&p), ["a", "b"]);
    assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
}

#[test]
fn distinct_property_bounds_allocations_per_value() {
    let nodes: Vec<NodeRecord> = ["r1", "r1", "r2", "r2", "r3"]
        .iter()
        .enumerate()
        .map(|(i, r)| racked(&format!("n{i}"), "amd64", r, 8192))
        .collect();
    let mut j = job("web", JobKind::Service, 7, 100, 32);
    j.groups[0].constraints = vec![rule("${meta.rack}", "distinct_property", "2")];
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(p.place.len(), 6);
    for rack in ["r1", "r2", "r3"] {
        let here = p
            .place
            .iter()
            .filter(|x| {
                nodes
                    .iter()
                    .any(|n| n.id == x.node_id && n.meta["rack"] == rack)
            })
            .count();
        assert_eq!(here, 2, "{rack}: {:?}", on(&p));
    }
    assert!(
        p.failures[0]
            .ends_with("5 filtered by constraint distinct_property ${meta.rack} (2 per value)"),
        "{}",
        p.failures[0]
    );
    // A node without the property is refused: nothing to count it under.
    let mut bare = vec![node("bare", 4000, 4096)];
    bare.extend(nodes.iter().take(1).cloned());
    j.groups[0].count = 3;
    let p = plan(&bare, &[], &j, None);
    assert_eq!(on(&p), ["n0", "n0"]);
}

#[test]
fn a_system_group_runs_only_where_its_constraints_hold() {
    let nodes = vec![
        racked("a", "amd64", "r1", 4096),
        racked("b", "arm64", "r1", 4096),
        racked("c", "arm64", "r2", 4096),
    ];
    let mut j = job("agentd", JobKind::System, 1, 100, 32);
    j.groups[0].constraints = vec![rule("${attr.arch}", "=", "arm64")];
    let p = plan(&nodes, &[], &j, None);
    assert_eq!(on(&p), ["b", "c"]);
    assert!(p.failures.is_empty(), "{:?}", p.failures);
}

#[test]
fn affinities_prefer_and_never_require() {
    // Bin-packing alone picks "a", the fuller node.
    let nodes = vec![
        racked("a", "amd64", "r1", 4096),
        racked("b", "amd64", "r2", 4096),
    ];
    let busy = [held("x", "a", AllocStatus::Running, 2000, 2048)];
    let mut j = job("web", JobKind::Service, 1, 100, 32);
    assert_eq!(on(&plan(&nodes, &busy, &j, None)), ["a"]);
    // Weight 60 on r2 outweighs the packing difference (about 0.5).
    j.groups[0].affinities = vec![prefer("${meta.rack}", "r2", 60)];
    assert_eq!(on(&plan(&nodes, &busy, &j, None)), ["b"]);
    // Too light a preference does not.
    j.groups[0].affinities = vec![prefer("${meta.rack}", "r2", 10)];
    assert_eq!(on(&plan(&nodes, &busy, &j, None)), ["a"]);
    // A negative weight steers away; job level counts too.
    j.groups[0].affinities.clear();
    j.affinities = vec![prefer("${meta.rack}", "r1", -60)];
    assert_eq!(on(&plan(&nodes, &busy, &j, None)), ["b"]);
    // Preferred but full: placed on the other node all the same.
    j.affinities = vec![prefer("${meta.rack}", "r2", 100)];
    let full = [held("y", "b", AllocStatus::Running, 4000, 4096)];
    let p = plan(&nodes, &full, &j, None);
    assert_eq!(on(&p), ["a"]);
    assert!(p.failures.is_empty());
}

#[test]
fn affinity_scores_stay_within_one() {
    let n = racked("a", "amd64", "r1", 4096);
    let mut j = job("web", JobKind::Service, 1, 100, 32);
    j.groups[0].affinities = vec![
        prefer("${meta.rack}", "r1", 100),
        prefer("${attr.arch}", "amd64", 100),
        prefer("${attr.arch}", "arm64", -50),
    ];
    let rules = GroupRules::new(
        &j,
        &j.groups[0],
        std::slice::from_ref(&n),
        &[0],
        &JobTally::new(1),
    );
    assert!((rules.affinity(&n) - 200.0 / 250.0).abs() < 1e-9);
    let plain = GroupRules::none();
    assert_eq!(plain.affinity(&n), 0.0);
}
