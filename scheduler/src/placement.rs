//! Placement: a pure function from a cluster snapshot and a job to a plan.
//!
//! No I/O happens here. The caller reads nodes and allocations from the
//! store, calls [`plan`], and writes the result in one guarded transaction.
//! That keeps placement testable on a simulated cluster of thousands of
//! nodes in milliseconds.
//!
//! Feasibility: the node is ready, not draining, and has the group's CPU and
//! memory free after counting every live allocation on it. Score: bin-pack
//! (prefer the node that is fullest after placing), minus a penalty per
//! instance of the same group already there (anti-affinity), ties broken by
//! node id so that the same input always gives the same plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::job::{GroupSpec, JobKind, JobSpec, Resources};
use crate::state::{AllocRecord, AllocStatus, Desired, NodeRecord, NodeStatus};

/// What a submission would do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New allocations to create.
    pub place: Vec<Placement>,
    /// Ids of allocations to stop.
    pub stop: Vec<String>,
    /// Instances that fit nowhere, with the reason.
    pub failures: Vec<String>,
}

/// One new allocation: an instance of a group on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Group name.
    pub group: String,
    /// Instance index.
    pub index: u32,
    /// Chosen node.
    pub node_id: String,
    /// What it reserves.
    pub resources: Resources,
}

/// Penalty subtracted from a node's score per instance of the same group on it.
const ANTI_AFFINITY_PENALTY: f64 = 0.5;

/// Computes what is needed to bring `job` to its desired state.
///
/// `allocs` is every allocation in the cluster (for usage); `previous` is the
/// job's spec as currently stored, if any: groups whose spec changed have
/// their allocations replaced.
pub fn plan(
    nodes: &[NodeRecord],
    allocs: &[AllocRecord],
    job: &JobSpec,
    previous: Option<&JobSpec>,
) -> Plan {
    let mut out = Plan::default();
    let pos: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut used = Usage {
        index: &pos,
        by_node: vec![Resources::default(); nodes.len()],
    };
    for a in allocs.iter().filter(|a| a.is_live()) {
        used.add(&a.node_id, a.resources);
    }

    // The job's allocations that still count toward its groups.
    let mut keep: BTreeMap<&str, Vec<&AllocRecord>> = BTreeMap::new();
    for a in allocs
        .iter()
        .filter(|a| a.job == job.name && a.desired == Desired::Run)
    {
        // Every allocation still wanted fills its slot, failed ones too:
        // the node's restart policy is the retry mechanism, and replacing
        // failures here would start a new copy every reconcile pass, forever.
        // Lost allocations are marked desired=stop when their node goes down.
        if a.status == AllocStatus::Lost {
            continue;
        }
        let changed =
            previous.is_some_and(|p| !same_instances(p.group(&a.group), job.group(&a.group)));
        if job.group(&a.group).is_none() || changed {
            out.stop.push(a.id.clone());
            used.release(a);
        } else {
            keep.entry(a.group.as_str()).or_default().push(a);
        }
    }

    for group in &job.groups {
        let mut existing = keep.remove(group.name.as_str()).unwrap_or_default();
        existing.sort_by_key(|a| (a.index, a.created_unix_ms));
        let mut per_node: Vec<u32> = vec![0; nodes.len()];
        let wanted: Vec<Want> = match job.kind {
            JobKind::System => {
                let mut have: BTreeSet<&str> = BTreeSet::new();
                for a in &existing {
                    if have.insert(a.node_id.as_str()) {
                        if let Some(&i) = pos.get(a.node_id.as_str()) {
                            per_node[i] += 1;
                        }
                    } else {
                        out.stop.push(a.id.clone());
                        used.release(a);
                    }
                }
                let mut next = existing.iter().map(|a| a.index + 1).max().unwrap_or(0);
                nodes
                    .iter()
                    .filter(|n| eligible(n) && !have.contains(n.id.as_str()))
                    .map(|n| {
                        let w = Want::On(next, n.id.clone());
                        next += 1;
                        w
                    })
                    .collect()
            }
            JobKind::Service | JobKind::Batch => {
                let mut have: BTreeSet<u32> = BTreeSet::new();
                for a in &existing {
                    if a.index < group.count && have.insert(a.index) {
                        if let Some(&i) = pos.get(a.node_id.as_str()) {
                            per_node[i] += 1;
                        }
                    } else {
                        out.stop.push(a.id.clone());
                        used.release(a);
                    }
                }
                (0..group.count)
                    .filter(|i| !have.contains(i))
                    .map(Want::Any)
                    .collect()
            }
        };
        let need = group.resources();
        for want in wanted {
            match want {
                Want::On(index, node_id) => {
                    let Some(&i) = pos.get(node_id.as_str()) else {
                        continue;
                    };
                    if fits(&nodes[i], used.by_node[i], need) {
                        used.by_node[i] = used.by_node[i].plus(need);
                        out.place.push(placement(group, index, &nodes[i].id, need));
                    } else {
                        out.failures.push(format!(
                            "group {:?}: node {} lacks {} millicores / {} MiB free",
                            group.name, nodes[i].id, need.cpu_millis, need.memory_mb
                        ));
                    }
                }
                Want::Any(index) => match best_node(nodes, &used.by_node, &per_node, need) {
                    Some(i) => {
                        used.by_node[i] = used.by_node[i].plus(need);
                        per_node[i] += 1;
                        out.place.push(placement(group, index, &nodes[i].id, need));
                    }
                    None => out
                        .failures
                        .push(explain(group, index, nodes, &used.by_node, need)),
                },
            }
        }
    }
    out
}

/// Whether instances of `a` and `b` are interchangeable: the same tasks and
/// restart policy. A different `count` alone only scales.
fn same_instances(a: Option<&GroupSpec>, b: Option<&GroupSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.tasks == b.tasks && a.restart == b.restart,
        _ => false,
    }
}

enum Want {
    Any(u32),
    On(u32, String),
}

fn placement(group: &GroupSpec, index: u32, node_id: &str, need: Resources) -> Placement {
    Placement {
        group: group.name.clone(),
        index,
        node_id: node_id.to_string(),
        resources: need,
    }
}

/// Resources claimed on each node, by position in the node list.
struct Usage<'a> {
    index: &'a HashMap<&'a str, usize>,
    by_node: Vec<Resources>,
}

impl Usage<'_> {
    fn add(&mut self, node_id: &str, r: Resources) {
        if let Some(&i) = self.index.get(node_id) {
            self.by_node[i] = self.by_node[i].plus(r);
        }
    }

    fn release(&mut self, a: &AllocRecord) {
        if !a.is_live() {
            return;
        }
        if let Some(&i) = self.index.get(a.node_id.as_str()) {
            let u = &mut self.by_node[i];
            u.cpu_millis = u.cpu_millis.saturating_sub(a.resources.cpu_millis);
            u.memory_mb = u.memory_mb.saturating_sub(a.resources.memory_mb);
        }
    }
}

fn eligible(n: &NodeRecord) -> bool {
    n.status == NodeStatus::Ready && !n.draining
}

fn fits(n: &NodeRecord, used: Resources, need: Resources) -> bool {
    eligible(n)
        && used.cpu_millis.saturating_add(need.cpu_millis) <= n.resources.cpu_millis
        && used.memory_mb.saturating_add(need.memory_mb) <= n.resources.memory_mb
}

/// The feasible node with the best score, by position. Nodes are scanned in
/// order and only a strictly better score wins, so ties go to the earlier
/// node: callers pass nodes sorted by id for a deterministic plan.
fn best_node(
    nodes: &[NodeRecord],
    used: &[Resources],
    per_node: &[u32],
    need: Resources,
) -> Option<usize> {
    let frac = |used: u64, need: u64, cap: u64| {
        if cap == 0 {
            1.0
        } else {
            used.saturating_add(need) as f64 / cap as f64
        }
    };
    let mut best: Option<(f64, usize)> = None;
    for (i, n) in nodes.iter().enumerate() {
        let u = used[i];
        if !fits(n, u, need) {
            continue;
        }
        let binpack = (frac(u.cpu_millis, need.cpu_millis, n.resources.cpu_millis)
            + frac(u.memory_mb, need.memory_mb, n.resources.memory_mb))
            / 2.0;
        let score = binpack - ANTI_AFFINITY_PENALTY * f64::from(per_node[i]);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

fn explain(
    group: &GroupSpec,
    index: u32,
    nodes: &[NodeRecord],
    used: &[Resources],
    need: Resources,
) -> String {
    let (mut down, mut draining, mut cpu, mut mem) = (0, 0, 0, 0);
    for (n, &u) in nodes.iter().zip(used) {
        if n.status != NodeStatus::Ready {
            down += 1;
        } else if n.draining {
            draining += 1;
        } else if u.cpu_millis.saturating_add(need.cpu_millis) > n.resources.cpu_millis {
            cpu += 1;
        } else if u.memory_mb.saturating_add(need.memory_mb) > n.resources.memory_mb {
            mem += 1;
        }
    }
    format!(
        "group {:?} instance {index}: no node can take {} millicores and {} MiB \
         ({} nodes: {down} down, {draining} draining, {cpu} short of CPU, {mem} short of memory)",
        group.name,
        need.cpu_millis,
        need.memory_mb,
        nodes.len()
    )
}

#[cfg(test)]
mod tests;
