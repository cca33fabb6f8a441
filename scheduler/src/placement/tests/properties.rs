//! Properties of every plan, on random clusters, allocations and jobs:
//! no node gets more CPU or memory than it has, no ineligible node gets
//! anything, no placement breaks a constraint (`${meta.ssd} = true`,
//! `distinct_hosts` at job or group level), and every instance the job
//! wants is running, placed or explained. Everything is recounted here
//! from the inputs, not with the code under test.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;

/// Node capacity steps: a coarse grid, so that exact fits happen often.
const CPU_STEP: u64 = 500;
const MEM_STEP: u64 = 512;
/// Node ids are `n0`.. by position; allocations may name one past the last
/// (`n8` at most), a node that is gone from the list.
const MAX_NODES: usize = 8;

/// (cpu steps, memory steps, down, draining, meta ssd: unset/true/false)
type NodeShape = (u64, u64, bool, bool, usize);
/// (node position, ours, group, index, desired run, status, cpu, memory)
type AllocShape = (usize, bool, usize, u32, bool, usize, u64, u64);
/// (kind, groups as (count, tasks as (cpu, memory)), previous spec,
/// distinct_hosts: none/job/first group/every group, `${meta.ssd} = true`:
/// none/job/first group/first task of the last group)
type JobShape = (usize, Vec<(u32, Vec<(u64, u64)>)>, usize, usize, usize);

const STATUSES: [AllocStatus; 5] = [
    AllocStatus::Pending,
    AllocStatus::Running,
    AllocStatus::Complete,
    AllocStatus::Failed,
    AllocStatus::Lost,
];
const KINDS: [JobKind; 3] = [JobKind::Service, JobKind::Batch, JobKind::System];

fn nodes_from(shapes: &[NodeShape]) -> Vec<NodeRecord> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(cpu, mem, down, draining, ssd))| {
            let mut n = node(&format!("n{i}"), cpu * CPU_STEP, mem * MEM_STEP);
            if ssd > 0 {
                n.meta.insert("ssd".into(), (ssd == 1).to_string());
            }
            if down {
                n.status = NodeStatus::Down;
            }
            n.draining = draining;
            n
        })
        .collect()
}

fn allocs_from(shapes: &[AllocShape]) -> Vec<AllocRecord> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(at, ours, group, index, run, status, cpu, mem))| {
            let mut a = held(
                &format!("a{i}"),
                &format!("n{at}"),
                STATUSES[status],
                cpu,
                mem,
            );
            if ours {
                a.job = "j".into();
                a.group = format!("g{group}");
                a.name = format!("j.g{group}[{index}]");
            }
            a.index = index;
            a.desired = if run {
                DesiredState::Run
            } else {
                DesiredState::Stop
            };
            a.created_unix_ms = i as i64;
            a
        })
        .collect()
}

/// The job and the spec it replaces: none, the same, or one whose first
/// group runs a different command (so its instances are replaced).
fn job_from(&(kind, ref groups, previous, distinct, ssd): &JobShape) -> (JobSpec, Option<JobSpec>) {
    let kind = KINDS[kind];
    let mut spec = job("j", kind, 0, 0, 0);
    let template = spec.groups.remove(0);
    spec.groups = groups
        .iter()
        .enumerate()
        .map(|(g, (count, tasks))| GroupSpec {
            name: format!("g{g}"),
            count: *count,
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(t, &(cpu, mem))| TaskSpec {
                    name: format!("t{t}"),
                    command: vec!["true".into()],
                    resources: Resources {
                        cpu_millis: cpu,
                        memory_mb: mem,
                    },
                    ..Default::default()
                })
                .collect(),
            ..template.clone()
        })
        .collect();
    constrain(&mut spec, distinct, ssd);
    let previous = match previous {
        0 => None,
        1 => Some(spec.clone()),
        _ => {
            let mut old = spec.clone();
            old.groups[0].tasks[0].command = vec!["false".into()];
            Some(old)
        }
    };
    (spec, previous)
}

/// Adds the constraints a [`JobShape`] asks for: `distinct_hosts` (not on
/// system jobs: one per node already) and `${meta.ssd} = true`.
fn constrain(spec: &mut JobSpec, distinct: usize, ssd: usize) {
    let rule = |attribute: &str, operator: &str, value: &str| {
        crate::job::Constraint::new(crate::job::ConstraintFields {
            attribute: attribute.into(),
            operator: operator.into(),
            value: value.into(),
        })
        .unwrap()
    };
    let hosts = rule("", "distinct_hosts", "");
    if spec.kind != JobKind::System {
        match distinct {
            1 => spec.constraints.push(hosts),
            2 => spec.groups[0].constraints.push(hosts),
            3 => spec
                .groups
                .iter_mut()
                .for_each(|g| g.constraints.push(hosts.clone())),
            _ => {}
        }
    }
    let ssd_rule = rule("${meta.ssd}", "=", "true");
    match ssd {
        1 => spec.constraints.push(ssd_rule),
        2 => spec.groups[0].constraints.push(ssd_rule),
        3 => {
            if let Some(g) = spec.groups.last_mut() {
                g.tasks[0].constraints.push(ssd_rule);
            }
        }
        _ => {}
    }
}

/// Whether a group's placements must go to nodes with `${meta.ssd} = true`.
fn wants_ssd(job: &JobSpec, g: &GroupSpec) -> bool {
    let ssd = |c: &crate::job::Constraint| c.fields().attribute == "${meta.ssd}";
    job.constraints.iter().any(ssd)
        || g.constraints.iter().any(ssd)
        || g.tasks.iter().any(|t| t.constraints.iter().any(ssd))
}

/// Whether a group's placements must keep apart from the job's (`Some(true)`)
/// or the group's (`Some(false)`) other allocations.
fn distinct_scope(job: &JobSpec, g: &GroupSpec) -> Option<bool> {
    let hosts = |c: &crate::job::Constraint| c.fields().operator == "distinct_hosts";
    if job.constraints.iter().any(hosts) {
        Some(true)
    } else {
        g.constraints.iter().any(hosts).then_some(false)
    }
}

/// No placement breaks a constraint: a group wanting `${meta.ssd} = true`
/// lands only on such nodes, and a node that gets an allocation under
/// `distinct_hosts` ends up with no other of its scope (kept or placed).
fn check_constraints(nodes: &[NodeRecord], allocs: &[AllocRecord], job: &JobSpec, p: &Plan) {
    let stopped: BTreeSet<&str> = p.stop.iter().map(String::as_str).collect();
    // (group, node) of every allocation the job has after the plan.
    let after: Vec<(&str, &str)> = allocs
        .iter()
        .filter(|a| {
            a.job == job.name
                && a.desired == DesiredState::Run
                && a.status != AllocStatus::Lost
                && !stopped.contains(a.id.as_str())
        })
        .map(|a| (a.group.as_str(), a.node_id.as_str()))
        .chain(
            p.place
                .iter()
                .map(|x| (x.group.as_str(), x.node_id.as_str())),
        )
        .collect();
    for x in &p.place {
        let g = job.group(&x.group).expect("a group of the job");
        if wants_ssd(job, g) {
            let n = nodes.iter().find(|n| n.id == x.node_id).expect("a node");
            assert_eq!(
                n.meta.get("ssd").map(String::as_str),
                Some("true"),
                "{}[{}] on {} without ssd",
                x.group,
                x.index,
                n.id
            );
        }
        if let Some(job_wide) = distinct_scope(job, g) {
            let here = after
                .iter()
                .filter(|(group, node)| *node == x.node_id && (job_wide || *group == x.group))
                .count();
            assert_eq!(
                here, 1,
                "distinct_hosts broken on {} by {}[{}]",
                x.node_id, x.group, x.index
            );
        }
    }
}

/// Raw shapes of a case: up to 8 nodes, 16 allocations, 3 groups.
fn arb_case() -> impl Strategy<Value = (Vec<NodeShape>, Vec<AllocShape>, JobShape)> {
    let node = (
        0u64..=16,
        0u64..=16,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        0usize..3,
    );
    let alloc = (
        0..=MAX_NODES,
        any::<bool>(),
        0usize..3,
        0u32..6,
        prop::bool::weighted(0.8),
        0..STATUSES.len(),
        (1u64..=8).prop_map(|c| c * 250),
        (1u64..=16).prop_map(|m| m * 128),
    );
    let task = (
        (1u64..=6).prop_map(|c| c * 250),
        (1u64..=8).prop_map(|m| m * 128),
    );
    let group = (1u32..=6, prop::collection::vec(task, 1..=2));
    let job = (
        0..KINDS.len(),
        prop::collection::vec(group, 1..=3),
        0usize..3,
        0usize..4,
        0usize..4,
    );
    (
        prop::collection::vec(node, 1..=MAX_NODES),
        prop::collection::vec(alloc, 0..=16),
        job,
    )
}

/// Whether an allocation holds its resources: its node has not reported it
/// finished, failed or lost.
fn holds(a: &AllocRecord) -> bool {
    matches!(a.status, AllocStatus::Pending | AllocStatus::Running)
}

/// No node with a placement ends up with more CPU or memory than it has,
/// counting what allocations the plan leaves running still hold (those it
/// stops are counted as freed: the plan reuses their share), and no node
/// that is down, draining or unknown gets anything.
fn check_capacity(nodes: &[NodeRecord], allocs: &[AllocRecord], job: &JobSpec, p: &Plan) {
    let stopped: BTreeSet<&str> = p.stop.iter().map(String::as_str).collect();
    for x in &p.place {
        let n = nodes.iter().find(|n| n.id == x.node_id);
        let n = n.unwrap_or_else(|| panic!("placed on unknown node {}", x.node_id));
        assert!(
            n.status == NodeStatus::Ready && !n.draining,
            "placed on ineligible {n:?}"
        );
        let group = job
            .group(&x.group)
            .expect("placement of a group of the job");
        let need = group.tasks.iter().fold((0, 0), |(c, m), t| {
            (c + t.resources.cpu_millis, m + t.resources.memory_mb)
        });
        assert_eq!((x.resources.cpu_millis, x.resources.memory_mb), need);
    }
    for n in nodes {
        let placed: Vec<_> = p.place.iter().filter(|x| x.node_id == n.id).collect();
        if placed.is_empty() {
            continue;
        }
        let (mut cpu, mut mem) = (0, 0);
        for a in allocs.iter().filter(|a| a.node_id == n.id) {
            if holds(a) && !stopped.contains(a.id.as_str()) {
                cpu += a.resources.cpu_millis;
                mem += a.resources.memory_mb;
            }
        }
        for x in placed {
            cpu += x.resources.cpu_millis;
            mem += x.resources.memory_mb;
        }
        assert!(
            cpu <= n.resources.cpu_millis,
            "{}: {cpu} of {} millicores",
            n.id,
            n.resources.cpu_millis
        );
        assert!(
            mem <= n.resources.memory_mb,
            "{}: {mem} of {} MiB",
            n.id,
            n.resources.memory_mb
        );
    }
}

/// Every instance the job wants is kept, placed or named in exactly one
/// failure, and nothing is kept or placed twice. Kept: the job's
/// allocations wanted running, not lost, and not stopped by the plan.
fn check_accounting(nodes: &[NodeRecord], allocs: &[AllocRecord], job: &JobSpec, p: &Plan) {
    let stopped: BTreeSet<&str> = p.stop.iter().map(String::as_str).collect();
    let kept: Vec<&AllocRecord> = allocs
        .iter()
        .filter(|a| {
            a.job == job.name
                && a.desired == DesiredState::Run
                && a.status != AllocStatus::Lost
                && !stopped.contains(a.id.as_str())
        })
        .collect();
    for a in &kept {
        assert!(
            job.group(&a.group).is_some(),
            "{} of a removed group kept",
            a.id
        );
    }
    let mut explained = 0;
    for g in &job.groups {
        let kept: Vec<_> = kept.iter().filter(|a| a.group == g.name).collect();
        let placed: Vec<_> = p.place.iter().filter(|x| x.group == g.name).collect();
        // Failures are one line per group and kind, with a count:
        // `group "g0": 3 instances unplaceable: ...`,
        // `group "g0": 2 nodes lack ...`.
        let failed = |what: &str| -> usize {
            let lines: Vec<&String> = p.failures.iter().filter(|f| f.starts_with(what)).collect();
            assert!(lines.len() <= 1, "{what} said twice: {lines:?}");
            lines.first().map_or(0, |l| {
                let n = l[what.len()..].split(' ').next().unwrap_or("");
                n.replace(',', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("no count in {l}"))
            })
        };
        if job.kind == JobKind::System {
            let placed_at: BTreeSet<u32> = placed.iter().map(|x| x.index).collect();
            assert_eq!(
                placed_at.len(),
                placed.len(),
                "{}: index placed twice",
                g.name
            );
            for a in &kept {
                assert!(
                    !placed_at.contains(&a.index),
                    "{}[{}] reused",
                    g.name,
                    a.index
                );
            }
            let why = failed(&format!("group {:?}: ", g.name));
            let mut without = 0;
            for n in nodes {
                let here = kept.iter().filter(|a| a.node_id == n.id).count()
                    + placed.iter().filter(|x| x.node_id == n.id).count();
                let eligible = n.status == NodeStatus::Ready && !n.draining;
                assert!(here <= 1, "{}: {here} instances on {}", g.name, n.id);
                let ssd = n.meta.get("ssd").is_some_and(|v| v == "true");
                if wants_ssd(job, g) && !ssd {
                    let placed_here = placed.iter().filter(|x| x.node_id == n.id).count();
                    assert_eq!(placed_here, 0, "{}: {} is not for it", g.name, n.id);
                } else if eligible && here == 0 {
                    without += 1;
                }
            }
            assert_eq!(
                without, why,
                "{}: eligible nodes without an instance and nodes said to lack room differ",
                g.name
            );
            explained += usize::from(why > 0);
        } else {
            for a in kept
                .iter()
                .map(|a| a.index)
                .chain(placed.iter().map(|x| x.index))
            {
                assert!(a < g.count, "{}[{a}] beyond count {}", g.name, g.count);
            }
            let why = failed(&format!("group {:?}: ", g.name));
            let mut missing = 0;
            for i in 0..g.count {
                let here = kept.iter().filter(|a| a.index == i).count()
                    + placed.iter().filter(|x| x.index == i).count();
                assert!(here <= 1, "{}[{i}]: {here} instances", g.name);
                missing += usize::from(here == 0);
            }
            assert_eq!(
                missing, why,
                "{}: instances missing and instances said unplaceable differ",
                g.name
            );
            explained += usize::from(why > 0);
        }
    }
    assert_eq!(
        explained,
        p.failures.len(),
        "failures about nothing: {:?}",
        p.failures
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x0d20_7e12),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_plan_oversubscribes_or_forgets_an_instance(case in arb_case()) {
        let (nodes, allocs, job) = case;
        let (nodes, allocs) = (nodes_from(&nodes), allocs_from(&allocs));
        let (job, previous) = job_from(&job);
        let p = plan(&nodes, &allocs, &job, previous.as_ref());
        check_capacity(&nodes, &allocs, &job, &p);
        check_constraints(&nodes, &allocs, &job, &p);
        check_accounting(&nodes, &allocs, &job, &p);
    }
}
