//! Placement: *where* each instance goes. [`plan`] is a pure function from
//! a cluster snapshot and a job to a plan.
//!
//! No I/O happens here. The caller reads nodes and allocations from the
//! store, calls [`plan`], and writes the result in guarded transactions
//! (several when the plan is larger than one store transaction holds).
//! That keeps placement testable on a simulated cluster of thousands of
//! nodes in milliseconds.
//!
//! [`crate::reconcile`] says what to place and stop; then each instance is
//! placed by a chain of feasibility filters ([`feasible`]: the node is
//! ready, not draining, and has the group's CPU and memory free after
//! counting every live allocation on it) and scorers ([`rank`]: bin-pack,
//! minus a penalty per instance of the same group already there), ties
//! broken by node id so that the same input always gives the same plan.

use std::collections::{BTreeMap, HashMap};

use crate::job::{GroupSpec, JobSpec, Resources};
use crate::reconcile::{reconcile, GroupChanges, Want};
use crate::state::{AllocRecord, AllocStatus, DesiredState, NodeRecord};

pub mod feasible;
pub mod rank;

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

/// A node as placement sees it while planning.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a NodeRecord,
    /// What live allocations and this plan's placements claim on it.
    pub used: Resources,
    /// Instances of the group being placed already on it.
    pub instances: u32,
}

/// What is being placed: one instance of a group.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The job.
    pub job: &'a JobSpec,
    /// The group.
    pub group: &'a GroupSpec,
    /// What one instance reserves.
    pub need: Resources,
}

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
    plan_managed(nodes, allocs, job, previous, &BTreeMap::new())
}

/// A group whose instances another rule decides (a deployment, see
/// [`crate::deploy`]) instead of [`reconcile`]: which indexes to place and
/// which allocations to stop.
#[derive(Debug, Clone, Copy)]
pub struct Managed<'a> {
    /// Instance indexes to place.
    pub place: &'a [u32],
    /// Ids of the group's allocations to stop.
    pub stop: &'a [String],
}

/// [`plan`], with the groups named in `managed` placed and stopped as it
/// says; their other wanted allocations are kept as they are.
pub fn plan_managed(
    nodes: &[NodeRecord],
    allocs: &[AllocRecord],
    job: &JobSpec,
    previous: Option<&JobSpec>,
    managed: &BTreeMap<&str, Managed<'_>>,
) -> Plan {
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|n| feasible::eligible(n))
        .map(|n| n.id.as_str())
        .collect();
    let mut wanted = reconcile(job, previous, allocs, &eligible);
    if !managed.is_empty() {
        wanted
            .replaced
            .retain(|a| !managed.contains_key(a.group.as_str()));
        for g in wanted.groups.iter_mut() {
            if let Some(m) = managed.get(g.group.name.as_str()) {
                *g = managed_group(g.group, job, allocs, m);
            }
        }
    }
    let mut usage = Usage::new(nodes, allocs);
    let mut out = Plan::default();
    for a in wanted.replaced {
        out.stop.push(a.id.clone());
        usage.release(a);
    }
    for group in &wanted.groups {
        place_group(&mut usage, job, group, &mut out);
    }
    out
}

/// The changes of a group another rule decides.
fn managed_group<'a>(
    group: &'a GroupSpec,
    job: &JobSpec,
    allocs: &'a [AllocRecord],
    m: &Managed<'_>,
) -> GroupChanges<'a> {
    let (stop, kept) = allocs
        .iter()
        .filter(|a| a.job == job.name && a.group == group.name)
        .filter(|a| a.desired == DesiredState::Run && a.status != AllocStatus::Lost)
        .partition(|a| m.stop.contains(&a.id));
    GroupChanges {
        group,
        kept,
        stop,
        place: m.place.iter().map(|&i| Want::Any(i)).collect(),
    }
}

/// Stops a group's surplus, then places its wanted instances one by one,
/// each seeing the usage of those placed before it.
fn place_group(usage: &mut Usage<'_>, job: &JobSpec, g: &GroupChanges<'_>, out: &mut Plan) {
    for a in &g.stop {
        out.stop.push(a.id.clone());
        usage.release(a);
    }
    let mut instances: Vec<u32> = vec![0; usage.nodes.len()];
    for a in &g.kept {
        if let Some(i) = usage.position(&a.node_id) {
            instances[i] += 1;
        }
    }
    let ask = Ask {
        job,
        group: g.group,
        need: g.group.resources(),
    };
    for want in &g.place {
        match *want {
            Want::On(index, node_id) => {
                let Some(i) = usage.position(node_id) else {
                    continue;
                };
                if feasible::feasible(&usage.candidate(i, &instances), &ask) {
                    usage.claim(i, ask.need);
                    out.place.push(placement(g.group, index, node_id, ask.need));
                } else {
                    out.failures.push(format!(
                        "group {:?}: node {node_id} lacks {} millicores / {} MiB free",
                        g.group.name, ask.need.cpu_millis, ask.need.memory_mb
                    ));
                }
            }
            Want::Any(index) => match best_node(usage, &instances, &ask) {
                Some(i) => {
                    usage.claim(i, ask.need);
                    instances[i] += 1;
                    let node_id = &usage.nodes[i].id;
                    out.place.push(placement(g.group, index, node_id, ask.need));
                }
                None => out.failures.push(feasible::explain(
                    &ask,
                    index,
                    (0..usage.nodes.len()).map(|i| usage.candidate(i, &instances)),
                )),
            },
        }
    }
}

fn placement(group: &GroupSpec, index: u32, node_id: &str, need: Resources) -> Placement {
    Placement {
        group: group.name.clone(),
        index,
        node_id: node_id.to_string(),
        resources: need,
    }
}

/// The feasible node with the best score, by position. Nodes are scanned in
/// order and only a strictly better score wins, so ties go to the earlier
/// node: callers pass nodes sorted by id for a deterministic plan.
fn best_node(usage: &Usage<'_>, instances: &[u32], ask: &Ask<'_>) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for i in 0..usage.nodes.len() {
        let c = usage.candidate(i, instances);
        if !feasible::feasible(&c, ask) {
            continue;
        }
        let score = rank::score(&c, ask);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// Resources claimed on each node, by position in the node list.
struct Usage<'a> {
    nodes: &'a [NodeRecord],
    index: HashMap<&'a str, usize>,
    by_node: Vec<Resources>,
}

impl<'a> Usage<'a> {
    /// What every live allocation claims.
    fn new(nodes: &'a [NodeRecord], allocs: &[AllocRecord]) -> Usage<'a> {
        let mut usage = Usage {
            nodes,
            index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id.as_str(), i))
                .collect(),
            by_node: vec![Resources::default(); nodes.len()],
        };
        for a in allocs.iter().filter(|a| a.is_live()) {
            if let Some(i) = usage.position(&a.node_id) {
                usage.claim(i, a.resources);
            }
        }
        usage
    }

    fn position(&self, node_id: &str) -> Option<usize> {
        self.index.get(node_id).copied()
    }

    fn candidate(&self, i: usize, instances: &[u32]) -> Candidate<'a> {
        Candidate {
            node: &self.nodes[i],
            used: self.by_node[i],
            instances: instances[i],
        }
    }

    fn claim(&mut self, i: usize, r: Resources) {
        self.by_node[i] = self.by_node[i].plus(r);
    }

    fn release(&mut self, a: &AllocRecord) {
        if !a.is_live() {
            return;
        }
        if let Some(i) = self.position(&a.node_id) {
            let u = &mut self.by_node[i];
            u.cpu_millis = u.cpu_millis.saturating_sub(a.resources.cpu_millis);
            u.memory_mb = u.memory_mb.saturating_sub(a.resources.memory_mb);
        }
    }
}

#[cfg(test)]
mod tests;
