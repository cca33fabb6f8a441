//! Constraints and affinities in placement: the rules one group's
//! instances are placed under, gathered once per group from the job, the
//! group and each of its tasks, with the allocation counts that
//! `distinct_hosts` and `distinct_property` look at.
//!
//! Everything that costs is done in [`GroupRules::new`] (once per group):
//! the constraints are already compiled (regexes, version requirements)
//! by validation, and the per-value counts of `distinct_property` are
//! built here from the per-node counts. Checking a node is then lookups
//! and comparisons, with no allocation; a placement updates the counts in
//! place ([`GroupRules::placed`], [`JobTally::placed`]).
//!
//! Counted are the job's allocations that stay (still wanted: desired
//! run, not lost, not stopped by the plan) and those the plan places, as
//! for anti-affinity; scope as in Nomad: a job-level `distinct_hosts`
//! keeps any two allocations of the job apart, a group- or task-level one
//! two of the group.

use std::collections::HashMap;

use super::Candidate;
use crate::job::{Affinity, Constraint, GroupSpec, JobSpec, Rule, Target, Test};
use crate::state::NodeRecord;

/// The job's allocations per node, by position in the node list: kept
/// ones and those placed so far by the plan, whatever their group.
#[derive(Debug, Clone)]
pub struct JobTally {
    per_node: Vec<u32>,
}

impl JobTally {
    /// No allocation on any of `nodes` nodes.
    pub fn new(nodes: usize) -> JobTally {
        JobTally {
            per_node: vec![0; nodes],
        }
    }

    /// One more allocation of the job on node `i`.
    pub fn placed(&mut self, i: usize) {
        if let Some(n) = self.per_node.get_mut(i) {
            *n = n.saturating_add(1);
        }
    }

    /// The job's allocations on node `i`.
    pub fn on(&self, i: usize) -> u32 {
        self.per_node.get(i).copied().unwrap_or(0)
    }
}

/// Whose allocations a distinct constraint counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Job,
    Group,
}

/// One compiled check of the group's effective constraints.
#[derive(Debug)]
enum Check<'a> {
    /// The node's property passes the test.
    Node { target: &'a Target, test: &'a Test },
    /// No allocation of the scope on the node yet.
    DistinctHosts { scope: Scope },
    /// Fewer than `limit` allocations of the scope on nodes sharing the
    /// node's value of the property (nodes without it are refused).
    DistinctProperty {
        target: &'a Target,
        limit: u32,
        counts: HashMap<&'a str, u32>,
    },
}

/// A check with where it came from, for explanations.
#[derive(Debug)]
struct Named<'a> {
    check: Check<'a>,
    constraint: &'a Constraint,
    /// The task that declared it, if a task did.
    task: Option<&'a str>,
}

/// The constraints and affinities one group's instances are placed under.
#[derive(Debug)]
pub struct GroupRules<'a> {
    checks: Vec<Named<'a>>,
    affinities: Vec<&'a Affinity>,
    /// What a matching affinity's weight is divided by: 100, or the sum of
    /// the weights' sizes when larger, so that the affinity term stays
    /// within -1..=1, the span of bin-packing's.
    affinity_scale: f64,
}

impl<'a> GroupRules<'a> {
    /// No constraint, no affinity.
    pub fn none() -> GroupRules<'a> {
        GroupRules {
            checks: Vec::new(),
            affinities: Vec::new(),
            affinity_scale: 100.0,
        }
    }

    /// The rules of `group` of `job`, with the distinct counts taken from
    /// `instances` (the group's allocations per node) and `tally` (the
    /// job's).
    pub fn new(
        job: &'a JobSpec,
        group: &'a GroupSpec,
        nodes: &'a [NodeRecord],
        instances: &[u32],
        tally: &JobTally,
    ) -> GroupRules<'a> {
        let declared = job
            .constraints
            .iter()
            .map(|c| (c, Scope::Job, None))
            .chain(group.constraints.iter().map(|c| (c, Scope::Group, None)))
            .chain(group.tasks.iter().flat_map(|t| {
                t.constraints
                    .iter()
                    .map(move |c| (c, Scope::Group, Some(t.name.as_str())))
            }));
        let count = |scope: Scope, i: usize| match scope {
            Scope::Job => tally.on(i),
            Scope::Group => instances.get(i).copied().unwrap_or(0),
        };
        let checks = declared
            .map(|(constraint, scope, task)| {
                let check = match &constraint.rule {
                    Rule::Node { target, test } => Check::Node { target, test },
                    Rule::DistinctHosts => Check::DistinctHosts { scope },
                    Rule::DistinctProperty { target, limit } => {
                        let mut counts: HashMap<&str, u32> = HashMap::new();
                        for (i, n) in nodes.iter().enumerate() {
                            let here = count(scope, i);
                            if here == 0 {
                                continue;
                            }
                            if let Some(v) = n.property(target) {
                                let c = counts.entry(v).or_default();
                                *c = c.saturating_add(here);
                            }
                        }
                        Check::DistinctProperty {
                            target,
                            limit: *limit,
                            counts,
                        }
                    }
                };
                Named {
                    check,
                    constraint,
                    task,
                }
            })
            .collect();
        let affinities: Vec<&Affinity> = job.affinities.iter().chain(&group.affinities).collect();
        let total: f64 = affinities.iter().map(|a| f64::from(a.weight.abs())).sum();
        GroupRules {
            checks,
            affinities,
            affinity_scale: total.max(100.0),
        }
    }

    /// Whether the candidate passes every constraint.
    pub fn admits(&self, c: &Candidate<'_>) -> bool {
        self.checks.iter().all(|n| passes(&n.check, c))
    }

    /// The first constraint the candidate fails, by position.
    pub fn refusing(&self, c: &Candidate<'_>) -> Option<usize> {
        self.checks.iter().position(|n| !passes(&n.check, c))
    }

    /// How explanations name the nodes that constraint `i` turns away.
    pub fn describe(&self, i: usize) -> String {
        match self.checks.get(i) {
            Some(Named {
                constraint,
                task: Some(task),
                ..
            }) => format!("filtered by constraint {constraint} (task {task:?})"),
            Some(Named { constraint, .. }) => format!("filtered by constraint {constraint}"),
            None => "filtered by a constraint".into(),
        }
    }

    /// Counts one more allocation of the group on `node`, for the distinct
    /// constraints (the per-node counts are the caller's).
    pub fn placed(&mut self, node: &'a NodeRecord) {
        for n in &mut self.checks {
            if let Check::DistinctProperty { target, counts, .. } = &mut n.check {
                if let Some(v) = node.property(target) {
                    let c = counts.entry(v).or_default();
                    *c = c.saturating_add(1);
                }
            }
        }
    }

    /// The affinity score of a node: the weights of the affinities it
    /// matches, over [`Self::affinity_scale`]; 0 without affinities.
    pub fn affinity(&self, node: &NodeRecord) -> f64 {
        if self.affinities.is_empty() {
            return 0.0;
        }
        let matched: i32 = self
            .affinities
            .iter()
            .filter(|a| a.test.matches(node.property(&a.target)))
            .map(|a| a.weight)
            .sum();
        f64::from(matched) / self.affinity_scale
    }
}

fn passes(check: &Check<'_>, c: &Candidate<'_>) -> bool {
    let here = |scope: Scope| match scope {
        Scope::Job => c.job_instances,
        Scope::Group => c.instances,
    };
    match check {
        Check::Node { target, test } => test.matches(c.node.property(target)),
        Check::DistinctHosts { scope } => here(*scope) == 0,
        Check::DistinctProperty {
            target,
            limit,
            counts,
        } => c
            .node
            .property(target)
            .is_some_and(|v| counts.get(v).copied().unwrap_or(0) < *limit),
    }
}
