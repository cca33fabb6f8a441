//! Feasibility: the chain of filters a node must pass to take one more
//! instance of a group. A node turned away is counted under the first
//! filter that refuses it, which is how [`explain`] says why nothing fits.
//!
//! A new placement constraint (node attributes, ports, ...) is one more
//! [`Filter`] in [`FILTERS`]: its `feasible` looks at the [`Candidate`]
//! (node, usage so far) and the [`Ask`] (job, group, resources), and its
//! `refusal` names the nodes it turns away in explanations. A check of one
//! more resource is one more [`Free`].

use super::failures::thousands;
use super::{Ask, Candidate};
use crate::job::Resources;
use crate::state::{NodeRecord, NodeStatus};

/// One feasibility check.
///
/// Filters must be monotone within one group's placement: usage and the
/// group's instance counts only grow while it is placed, and a node a
/// filter turned away for one instance is not looked at again for the
/// next ([`super::select`]).
pub trait Filter: Sync {
    /// How explanations count the nodes this filter turns away, after the
    /// count: "down", "short of CPU".
    fn refusal(&self) -> &'static str;

    /// Whether the candidate can take the ask.
    fn feasible(&self, candidate: &Candidate<'_>, ask: &Ask<'_>) -> bool;

    /// Which part of a filter made of several (one per constraint) turned
    /// the candidate away, so that explanations count each apart.
    fn part(&self, _candidate: &Candidate<'_>, _ask: &Ask<'_>) -> Option<usize> {
        None
    }

    /// How explanations name the nodes this filter (or its `part`) turned
    /// away, after the count.
    fn describe(&self, _ask: &Ask<'_>, _part: Option<usize>) -> String {
        self.refusal().to_owned()
    }
}

/// The filters, in the order nodes are checked and refusals counted.
pub const FILTERS: &[&dyn Filter] = &[&READY, &NOT_DRAINING, &CONSTRAINTS, &CPU_FREE, &MEMORY_FREE];

/// Whether a node may take any work at all: its agent is connected and it
/// is not draining. System groups want an instance on each of these.
pub fn eligible(node: &NodeRecord) -> bool {
    [READY, NOT_DRAINING].iter().all(|f| (f.ok)(node))
}

/// Whether every filter admits the candidate.
pub fn feasible(candidate: &Candidate<'_>, ask: &Ask<'_>) -> bool {
    FILTERS.iter().all(|f| f.feasible(candidate, ask))
}

/// A filter on the node record alone.
pub struct NodeIs {
    refusal: &'static str,
    ok: fn(&NodeRecord) -> bool,
}

impl Filter for NodeIs {
    fn refusal(&self) -> &'static str {
        self.refusal
    }

    fn feasible(&self, c: &Candidate<'_>, _: &Ask<'_>) -> bool {
        (self.ok)(c.node)
    }
}

/// The node's agent is connected.
pub const READY: NodeIs = NodeIs {
    refusal: "down",
    ok: |n| n.status == NodeStatus::Ready,
};

/// The operator has not drained the node.
pub const NOT_DRAINING: NodeIs = NodeIs {
    refusal: "draining",
    ok: |n| !n.draining,
};

/// The constraints of the job, the group and its tasks
/// ([`super::constrain`]); explanations count each constraint apart.
pub struct Constraints;

/// The node passes every constraint of the group.
pub const CONSTRAINTS: Constraints = Constraints;

impl Filter for Constraints {
    fn refusal(&self) -> &'static str {
        "filtered by a constraint"
    }

    fn feasible(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> bool {
        ask.rules.admits(c)
    }

    fn part(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> Option<usize> {
        ask.rules.refusing(c)
    }

    fn describe(&self, ask: &Ask<'_>, part: Option<usize>) -> String {
        part.map_or_else(|| self.refusal().to_owned(), |i| ask.rules.describe(i))
    }
}

/// A filter on one resource: what is claimed on the node plus what the
/// instance needs must not exceed the node's capacity.
pub struct Free {
    refusal: &'static str,
    unit: &'static str,
    of: fn(Resources) -> u64,
}

impl Filter for Free {
    fn refusal(&self) -> &'static str {
        self.refusal
    }

    fn feasible(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> bool {
        (self.of)(c.used).saturating_add((self.of)(ask.need)) <= (self.of)(c.node.resources)
    }

    fn describe(&self, ask: &Ask<'_>, _: Option<usize>) -> String {
        format!(
            "{} (need {} {})",
            self.refusal,
            (self.of)(ask.need),
            self.unit
        )
    }
}

/// The node has the CPU free.
pub const CPU_FREE: Free = Free {
    refusal: "short of CPU",
    unit: "millicores",
    of: |r| r.cpu_millis,
};

/// The node has the memory free.
pub const MEMORY_FREE: Free = Free {
    refusal: "short of memory",
    unit: "MiB",
    of: |r| r.memory_mb,
};

/// Why an instance of the ask's group fits on none of `candidates`, stage
/// by stage: each node is counted under the first filter (and, for
/// constraints, the first constraint) that turns it away, largest count
/// first: `10 nodes evaluated: 6 filtered by constraint ${attr.arch} =
/// arm64, 3 short of memory (need 512 MiB), 1 draining`.
pub fn explain<'a>(
    ask: &Ask<'_>,
    candidates: impl ExactSizeIterator<Item = Candidate<'a>>,
) -> String {
    let total = candidates.len();
    // (filter, part, nodes): a handful of entries, searched linearly.
    let mut stages: Vec<(usize, Option<usize>, usize)> = Vec::new();
    for c in candidates {
        let Some(f) = FILTERS.iter().position(|f| !f.feasible(&c, ask)) else {
            continue;
        };
        let part = FILTERS[f].part(&c, ask);
        match stages.iter_mut().find(|s| s.0 == f && s.1 == part) {
            Some(s) => s.2 += 1,
            None => stages.push((f, part, 1)),
        }
    }
    stages.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    if total == 0 {
        return "no nodes in the cluster".to_string();
    }
    let counts: Vec<String> = stages
        .iter()
        .map(|&(f, part, n)| format!("{} {}", thousands(n), FILTERS[f].describe(ask, part)))
        .collect();
    format!(
        "{} node{} evaluated: {}",
        thousands(total),
        if total == 1 { "" } else { "s" },
        counts.join(", ")
    )
}
