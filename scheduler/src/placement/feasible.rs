//! Feasibility: the chain of filters a node must pass to take one more
//! instance of a group. A node turned away is counted under the first
//! filter that refuses it, which is how [`explain`] says why nothing fits.
//!
//! A new placement constraint (node attributes, ports, ...) is one more
//! [`Filter`] in [`FILTERS`]: its `feasible` looks at the [`Candidate`]
//! (node, usage so far) and the [`Ask`] (job, group, resources), and its
//! `refusal` names the nodes it turns away in explanations. A check of one
//! more resource is one more [`Free`].

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
}

/// The filters, in the order nodes are checked and refusals counted.
pub const FILTERS: &[&dyn Filter] = &[&READY, &NOT_DRAINING, &CPU_FREE, &MEMORY_FREE];

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

/// A filter on one resource: what is claimed on the node plus what the
/// instance needs must not exceed the node's capacity.
pub struct Free {
    refusal: &'static str,
    of: fn(Resources) -> u64,
}

impl Filter for Free {
    fn refusal(&self) -> &'static str {
        self.refusal
    }

    fn feasible(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> bool {
        (self.of)(c.used).saturating_add((self.of)(ask.need)) <= (self.of)(c.node.resources)
    }
}

/// The node has the CPU free.
pub const CPU_FREE: Free = Free {
    refusal: "short of CPU",
    of: |r| r.cpu_millis,
};

/// The node has the memory free.
pub const MEMORY_FREE: Free = Free {
    refusal: "short of memory",
    of: |r| r.memory_mb,
};

/// Why instance `index` fits on none of `candidates`: how many nodes each
/// filter turned away.
pub fn explain<'a>(
    ask: &Ask<'_>,
    index: u32,
    candidates: impl ExactSizeIterator<Item = Candidate<'a>>,
) -> String {
    Refusals::count(ask, candidates).describe(ask, index)
}

/// How many nodes each filter turned away, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusals {
    total: usize,
    refused: [usize; FILTERS.len()],
}

impl Refusals {
    /// Counts every candidate under the first filter that refuses it.
    pub fn count<'a>(
        ask: &Ask<'_>,
        candidates: impl ExactSizeIterator<Item = Candidate<'a>>,
    ) -> Refusals {
        let mut out = Refusals {
            total: candidates.len(),
            refused: [0; FILTERS.len()],
        };
        for c in candidates {
            if let Some(i) = FILTERS.iter().position(|f| !f.feasible(&c, ask)) {
                out.refused[i] += 1;
            }
        }
        out
    }

    /// The explanation for instance `index`.
    pub fn describe(&self, ask: &Ask<'_>, index: u32) -> String {
        let counts: Vec<String> = FILTERS
            .iter()
            .zip(self.refused)
            .map(|(f, n)| format!("{n} {}", f.refusal()))
            .collect();
        format!(
            "group {:?} instance {index}: no node can take {} millicores and {} MiB \
             ({} nodes: {})",
            ask.group.name,
            ask.need.cpu_millis,
            ask.need.memory_mb,
            self.total,
            counts.join(", ")
        )
    }
}
