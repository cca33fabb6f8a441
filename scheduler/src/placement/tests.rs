#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use super::*;
use crate::job::{RestartPolicy, TaskSpec};

fn node(id: &str, cpu: u64, mem: u64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        hostname: id.into(),
        address: "127.0.0.1".into(),
        status: NodeStatus::Ready,
        draining: false,
        resources: Resources {
            cpu_millis: cpu,
            memory_mb: mem,
        },
        attributes: BTreeMap::new(),
        last_seen_unix_ms: 0,
        agent_version: String::new(),
        subnet: None,
    }
}

fn job(name: &str, kind: JobKind, count: u32, cpu: u64, mem: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        kind,
        groups: vec![GroupSpec {
            name: "g".into(),
            count,
            restart: RestartPolicy::default_for(kind),
            network: String::new(),
            tasks: vec![TaskSpec {
                name: "t".into(),
                command: vec!["true".into()],
                env: BTreeMap::new(),
                resources: Resources {
                    cpu_millis: cpu,
                    memory_mb: mem,
                },
                kill_timeout_ms: 0,
                rootfs: Default::default(),
                ..Default::default()
            }],
        }],
    }
}

fn alloc_for(p: &Placement, job: &str, id: &str) -> AllocRecord {
    AllocRecord {
        id: id.into(),
        name: format!("{job}.{}[{}]", p.group, p.index),
        job: job.into(),
        group: p.group.clone(),
        index: p.index,
        node_id: p.node_id.clone(),
        desired: Desired::Run,
        status: AllocStatus::Running,
        tasks: vec![],
        job_version: 1,
        resources: p.resources,
        created_unix_ms: 0,
        modified_unix_ms: 0,
        ip: String::new(),
    }
}

#[test]
fn spreads_instances_of_one_group_across_nodes() {
    let nodes = vec![node("a", 4000, 4096), node("b", 4000, 4096)];
    let p = plan(&nodes, &[], &job("web", JobKind::Service, 2, 100, 32), None);
    assert!(p.failures.is_empty());
    let on: Vec<_> = p.place.iter().map(|x| x.node_id.as_str()).collect();
    assert_eq!(on, vec!["a", "b"], "anti-affinity puts the two apart");
}

/// An allocation of another job on `node_id`, reserving `cpu`/`mem`.
fn held(id: &str, node_id: &str, status: AllocStatus, cpu: u64, mem: u64) -> AllocRecord {
    AllocRecord {
        id: id.into(),
        name: format!("other.g[{id}]"),
        job: "other".into(),
        group: "g".into(),
        index: 0,
        node_id: node_id.into(),
        desired: Desired::Run,
        status,
        tasks: vec![],
        job_version: 1,
        resources: Resources {
            cpu_millis: cpu,
            memory_mb: mem,
        },
        created_unix_ms: 0,
        modified_unix_ms: 0,
        ip: String::new(),
    }
}

#[test]
fn bin_packs_across_jobs() {
    // Another job already uses part of each node. The one node bin-packing
    // may choose comes last: first-fit would take "a" (the first that fits)
    // and worst-fit "b" (the emptiest), while "c" and "d" would be fuller
    // still but lack CPU ("c") or memory ("d") for one more instance.
    let nodes = vec![
        node("a", 4000, 4096),
        node("b", 8000, 8192),
        node("c", 4000, 4096),
        node("d", 4000, 4096),
        node("e", 4000, 4096),
    ];
    let existing = vec![
        held("x-a", "a", AllocStatus::Running, 2000, 2048),
        held("x-c", "c", AllocStatus::Running, 3500, 3072),
        held("x-d", "d", AllocStatus::Running, 3000, 3584),
        held("x-e", "e", AllocStatus::Running, 3000, 3072),
    ];
    let p = plan(
        &nodes,
        &existing,
        &job("y", JobKind::Service, 1, 1000, 1024),
        None,
    );
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    let on: Vec<_> = p.place.iter().map(|x| x.node_id.as_str()).collect();
    assert_eq!(
        on,
        vec!["e"],
        "the instance fills the fullest node that still fits it"
    );
}

#[test]
fn reports_why_nothing_fits_and_skips_down_and_draining_nodes() {
    let mut down = node("a", 4000, 4096);
    down.status = NodeStatus::Down;
    let mut draining = node("b", 4000, 4096);
    draining.draining = true;
    let small = node("c", 50, 4096);
    let p = plan(
        &[down, draining, small],
        &[],
        &job("w", JobKind::Service, 1, 100, 32),
        None,
    );
    assert!(p.place.is_empty());
    assert_eq!(p.failures.len(), 1);
    assert!(
        p.failures[0].contains("1 down, 1 draining, 1 short of CPU"),
        "{}",
        p.failures[0]
    );
}

#[test]
fn resubmitting_the_same_job_changes_nothing_and_scaling_down_stops_the_top() {
    let nodes = vec![node("a", 4000, 4096), node("b", 4000, 4096)];
    let j = job("web", JobKind::Service, 3, 100, 32);
    let first = plan(&nodes, &[], &j, None);
    let allocs: Vec<_> = first
        .place
        .iter()
        .enumerate()
        .map(|(i, p)| alloc_for(p, "web", &format!("id{i}")))
        .collect();
    assert_eq!(plan(&nodes, &allocs, &j, Some(&j)), Plan::default());
    let smaller = job("web", JobKind::Service, 1, 100, 32);
    let p = plan(&nodes, &allocs, &smaller, Some(&j));
    assert_eq!(p.stop, vec!["id1", "id2"]);
    assert!(p.place.is_empty());
}

#[test]
fn a_changed_group_is_replaced() {
    let nodes = vec![node("a", 4000, 4096)];
    let old = job("web", JobKind::Service, 1, 100, 32);
    let first = plan(&nodes, &[], &old, None);
    let allocs = vec![alloc_for(&first.place[0], "web", "old")];
    let new = job("web", JobKind::Service, 1, 200, 32);
    let p = plan(&nodes, &allocs, &new, Some(&old));
    assert_eq!(p.stop, vec!["old"]);
    assert_eq!(p.place.len(), 1);
}

#[test]
fn system_jobs_get_one_instance_per_eligible_node() {
    let mut nodes: Vec<_> = (0..5).map(|i| node(&format!("n{i}"), 1000, 1024)).collect();
    nodes[2].draining = true;
    let p = plan(&nodes, &[], &job("sys", JobKind::System, 0, 100, 32), None);
    let on: Vec<_> = p.place.iter().map(|x| x.node_id.as_str()).collect();
    assert_eq!(on, vec!["n0", "n1", "n3", "n4"]);
}

#[test]
fn places_thousands_on_a_simulated_cluster() {
    let nodes: Vec<_> = (0..2000)
        .map(|i| node(&format!("n{i:05}"), 4000, 8192))
        .collect();
    let j = job("big", JobKind::Service, 5000, 500, 256);
    let start = std::time::Instant::now();
    let p = plan(&nodes, &[], &j, None);
    let took = start.elapsed();
    assert_eq!(p.place.len(), 5000);
    assert!(p.failures.is_empty());
    // Every node holds at most what it has.
    let mut per: BTreeMap<&str, u64> = BTreeMap::new();
    for x in &p.place {
        *per.entry(x.node_id.as_str()).or_default() += x.resources.cpu_millis;
    }
    assert!(per.values().all(|&c| c <= 4000));
    eprintln!("placed 5000 instances on 2000 nodes in {took:?}");
}

#[test]
fn failed_allocations_are_not_replaced_but_lost_ones_are() {
    let nodes = vec![node("a", 4000, 4096)];
    let j = job("web", JobKind::Service, 2, 100, 32);
    let first = plan(&nodes, &[], &j, None);
    let mut allocs: Vec<_> = first
        .place
        .iter()
        .enumerate()
        .map(|(i, p)| alloc_for(p, "web", &format!("id{i}")))
        .collect();
    allocs[0].status = AllocStatus::Failed;
    allocs[1].status = AllocStatus::Lost;
    let p = plan(&nodes, &allocs, &j, Some(&j));
    assert_eq!(p.place.len(), 1);
    assert_eq!(p.place[0].index, 1);
    assert!(p.stop.is_empty());
}
