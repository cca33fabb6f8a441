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
//! ready, not draining, passes the constraints of the job, group and tasks
//! ([`constrain`]), and has the group's CPU and memory free after
//! counting every live allocation on it) and scorers ([`rank`]: bin-pack,
//! minus a penalty per instance of the same group already there, plus
//! the affinities a node matches and the group's [`spread`]s, and one per
//! earlier failure of the instance on the node: [`failed`]), ties
//! broken by node id so that the same input always gives the same plan.
//! [`PlanConfig`] carries what the operator sets for every job (the
//! default scoring algorithm).
//!
//! Each instance is scored on a bounded number of feasible nodes, not all
//! of them ([`select`]: the best of `max(16, log2 N)` candidates, walking
//! the nodes from a start fixed by the job and group), which keeps a plan
//! O(N + K·log N) for K instances on N nodes; an instance is refused only
//! when no node at all can take it, and its explanation counts every node.

use std::collections::{BTreeMap, HashMap};

use crate::job::{Algorithm, GroupSpec, JobSpec, Resources};
use crate::reconcile::{reconcile, GroupChanges, Want};
use crate::state::{AllocRecord, AllocStatus, DesiredState, NodeRecord};

pub mod constrain;
pub mod failed;
pub(crate) mod failures;
pub mod feasible;
pub mod rank;
pub mod select;
pub mod spread;

use spread::GroupSpread;

/// What the operator sets for every plan (`drover scheduler --algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanConfig {
    /// The scoring algorithm of jobs that name none.
    pub algorithm: Algorithm,
    /// Feasible nodes scored per instance: `None` for
    /// [`select::limit`] (`max(16, log2 N)`), `Some(usize::MAX)` to score
    /// every node (the exact but O(N) per instance way; benchmarks compare
    /// with it).
    pub max_candidates: Option<usize>,
}

use constrain::{GroupRules, JobTally};

/// What a submission would do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New allocations to create.
    pub place: Vec<Placement>,
    /// Ids of allocations to stop.
    pub stop: Vec<String>,
    /// Instances that fit nowhere, with the reason.
    pub failures: Vec<String>,
    /// Per group with instances left unplaced: how many, and which of
    /// `failures` say why (what [`crate::queue`] records as pending).
    pub unplaced: Vec<Unplaced>,
}

/// Instances of one group that this plan could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// Group name.
    pub group: String,
    /// Instances wanted but not placed.
    pub count: u32,
    /// The positions in [`Plan::failures`] of the explanations given
    /// while placing this group.
    pub failures: std::ops::Range<usize>,
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
    /// Allocations of the job (any group) already on it.
    pub job_instances: u32,
    /// Its position in the node list (what per-node tables are indexed by).
    pub position: usize,
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
    /// The group's constraints and affinities (job's, group's, tasks').
    pub rules: &'a GroupRules<'a>,
    /// Nodes where this instance failed before, once per failure
    /// ([`failed`]); empty for a group-wide ask.
    pub failed_on: &'a [&'a str],
    /// The scoring algorithm: the job's, or the scheduler's default.
    pub algorithm: Algorithm,
    /// The group's spreads, with what they count so far.
    pub spread: &'a GroupSpread,
}

/// Computes what is needed to bring `job` to its desired state.
///
/// `allocs` is every allocation in the cluster (for usage); `previous` is the
/// job's spec as currently stored, if any: groups whose spec changed have
/// their allocations replaced. Uses the default [`PlanConfig`].
pub fn plan(
    nodes: &[NodeRecord],
    allocs: &[AllocRecord],
    job: &JobSpec,
    previous: Option<&JobSpec>,
) -> Plan {
    plan_with(&PlanConfig::default(), nodes, allocs, job, previous)
}

/// [`plan`] with the operator's settings.
pub fn plan_with(
    config: &PlanConfig,
    nodes: &[NodeRecord],
    allocs: &[AllocRecord],
    job: &JobSpec,
    previous: Option<&JobSpec>,
) -> Plan {
    plan_managed(config, nodes, allocs, job, previous, &BTreeMap::new())
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

/// [`plan_with`], with the groups named in `managed` placed and stopped as
/// it says; their other wanted allocations are kept as they are.
pub fn plan_managed(
    config: &PlanConfig,
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
    let failures = failed::by_instance(&job.name, allocs);
    let mut usage = Usage::new(nodes, allocs);
    let mut out = Plan::default();
    for a in wanted.replaced {
        out.stop.push(a.id.clone());
        usage.release(a);
    }
    let mut tally = JobTally::new(nodes.len());
    for a in wanted.groups.iter().flat_map(|g| &g.kept) {
        if let Some(i) = usage.position(&a.node_id) {
            tally.placed(i);
        }
    }
    let algorithm = job.algorithm.unwrap_or(config.algorithm);
    for group in &wanted.groups {
        let failed_on = failed::of_group(&failures, &group.group.name);
        let ctx = GroupCtx {
            job,
            algorithm,
            failed_on: &failed_on,
            max_candidates: config.max_candidates,
        };
        place_group(&mut usage, &mut tally, &ctx, group, &mut out);
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
/// each seeing the usage (and spread counts) of those placed before it.
///
/// Once one instance fits nowhere, the group's later instances do not
/// either (placing only ever fills nodes), so they are not tried: the
/// failure path costs one scan of the nodes per group, and the plan says
/// once how many instances of the group are unplaceable and why.
fn place_group<'a>(
    usage: &mut Usage<'a>,
    tally: &mut JobTally,
    ctx: &GroupCtx<'a, '_>,
    g: &GroupChanges<'a>,
    out: &mut Plan,
) {
    let (placed_before, failed_before) = (out.place.len(), out.failures.len());
    let job = ctx.job;
    let mut instances = stop_and_count(usage, g, out);
    let need = g.group.resources();
    let mut rules = GroupRules::new(job, g.group, usage.nodes, &instances, tally);
    let mut spread = group_spread(usage, tally, ctx, g, &instances, &rules);
    let mut unplaced = failures::Unplaced::default();
    let mut selector = select::Selector::new(usage.nodes.len(), &job.name, &g.group.name)
        .with_limit(candidate_limit(ctx, g.group));
    for want in &g.place {
        let ask = Ask {
            job,
            group: g.group,
            need,
            rules: &rules,
            failed_on: &[],
            algorithm: ctx.algorithm,
            spread: &spread,
        };
        let chosen = match *want {
            Want::On(index, node_id) => {
                let Some(i) = usage.position(node_id) else {
                    continue;
                };
                let c = usage.candidate(i, &instances, tally);
                if !rules.admits(&c) {
                    // A system group runs only where its constraints hold.
                    continue;
                }
                if feasible::feasible(&c, &ask) {
                    out.place.push(placement(g.group, index, node_id, ask.need));
                    Some(i)
                } else {
                    unplaced.node(node_id);
                    None
                }
            }
            Want::Any(index) if !unplaced.any() => {
                let this = failed::ask_for(&ask, ctx.failed_on, index);
                match selector.select(usage, &instances, tally, &this) {
                    Some(i) => {
                        let node_id = &usage.nodes[i].id;
                        out.place.push(placement(g.group, index, node_id, ask.need));
                        Some(i)
                    }
                    None => {
                        unplaced.instance(Some(feasible::explain(
                            &ask,
                            (0..usage.nodes.len()).map(|i| usage.candidate(i, &instances, tally)),
                        )));
                        None
                    }
                }
            }
            Want::Any(_) => {
                unplaced.instance(None);
                None
            }
        };
        if let Some(i) = chosen {
            usage.claim(i, need);
            instances[i] += 1;
            tally.placed(i);
            rules.placed(&usage.nodes[i]);
            spread.placed(i);
        }
    }
    out.failures.extend(unplaced.lines(&g.group.name, need));
    let missing = g
        .place
        .len()
        .saturating_sub(out.place.len() - placed_before);
    if missing > 0 {
        out.unplaced.push(Unplaced {
            group: g.group.name.clone(),
            count: u32::try_from(missing).unwrap_or(u32::MAX),
            failures: failed_before..out.failures.len(),
        });
    }
}

/// Stops the group's surplus (releasing what it held) and counts its
/// kept instances per node.
fn stop_and_count(usage: &mut Usage<'_>, g: &GroupChanges<'_>, out: &mut Plan) -> Vec<u32> {
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
    instances
}

/// Feasible nodes scored per instance of `group`. Spreads and affinities
/// compare nodes across the whole cluster: like Nomad, they score every
/// feasible node rather than a sample.
fn candidate_limit(ctx: &GroupCtx<'_, '_>, group: &GroupSpec) -> Option<usize> {
    let job = ctx.job;
    let preferences = !(job.spreads.is_empty()
        && group.spreads.is_empty()
        && job.affinities.is_empty()
        && group.affinities.is_empty());
    if preferences {
        Some(usize::MAX)
    } else {
        ctx.max_candidates
    }
}

/// What placing one group of a plan needs besides the usage.
struct GroupCtx<'a, 'f> {
    job: &'a JobSpec,
    algorithm: Algorithm,
    failed_on: &'f BTreeMap<u32, Vec<&'a str>>,
    max_candidates: Option<usize>,
}

/// The spreads of `g` (the job's, then the group's), counting the group's
/// kept allocations that are still wanted: not terminal (a failed one
/// keeps its slot but runs nothing). Allocations stopped or replaced by
/// this plan are not among the kept.
fn group_spread(
    usage: &Usage<'_>,
    tally: &JobTally,
    ctx: &GroupCtx<'_, '_>,
    g: &GroupChanges<'_>,
    instances: &[u32],
    rules: &GroupRules<'_>,
) -> GroupSpread {
    let job = ctx.job;
    if job.spreads.is_empty() && g.group.spreads.is_empty() {
        return GroupSpread::default();
    }
    let none = GroupSpread::default();
    let base = &Ask {
        job,
        group: g.group,
        need: g.group.resources(),
        rules,
        failed_on: &[],
        algorithm: ctx.algorithm,
        spread: &none,
    };
    let counted: Vec<usize> = g
        .kept
        .iter()
        .filter(|a| a.is_live())
        .filter_map(|a| usage.position(&a.node_id))
        .collect();
    GroupSpread::new(
        usage.nodes,
        job.spreads.iter().chain(&g.group.spreads),
        g.group.count,
        &counted,
        |i| feasible::feasible(&usage.candidate(i, instances, tally), base),
    )
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

    fn candidate(&self, i: usize, instances: &[u32], tally: &JobTally) -> Candidate<'a> {
        Candidate {
            node: &self.nodes[i],
            used: self.by_node[i],
            instances: instances[i],
            job_instances: tally.on(i),
            position: i,
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
