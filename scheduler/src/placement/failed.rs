//! Rescheduling's part in ranking: an instance that failed on a node is
//! placed elsewhere when another node can take it (bad nodes stop
//! attracting it: nomad #12920), and on the same node when it is the only
//! one. A penalty, never a filter.

use std::collections::BTreeMap;

use super::rank::Scorer;
use super::{Ask, Candidate};
use crate::state::{AllocRecord, AllocStatus};

/// Penalty per earlier failure of the instance on the node: more than
/// bin-packing (at most 1) and anti-affinity (0.5 per instance) can make
/// up, so any node where it has not failed wins.
pub const FAILED_PENALTY: f64 = 2.0;

/// Prefers nodes where the instance being placed has failed least.
pub struct FailedBefore;

impl Scorer for FailedBefore {
    fn score(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> f64 {
        let failures = ask.failed_on.iter().filter(|n| **n == c.node.id).count();
        -FAILED_PENALTY * failures as f64
    }
}

/// The nodes each instance (group, index) of job `job` failed on, one
/// entry per failed allocation, whatever its desired state (a replaced one
/// is desired stop and still counts). An allocation running with a check
/// critical, or replaced (for being unhealthy), counts as failed there.
pub fn by_instance<'a>(
    job: &str,
    allocs: &'a [AllocRecord],
) -> BTreeMap<(&'a str, u32), Vec<&'a str>> {
    let mut out: BTreeMap<(&str, u32), Vec<&str>> = BTreeMap::new();
    let failed = |a: &AllocRecord| {
        a.status == AllocStatus::Failed
            || a.reschedule.critical_unix_ms.is_some()
            || !a.reschedule.replaced_by.is_empty()
    };
    for a in allocs.iter().filter(|a| a.job == job && failed(a)) {
        out.entry((a.group.as_str(), a.index))
            .or_default()
            .push(a.node_id.as_str());
    }
    out
}

/// Group `group`'s part of [`by_instance`], by index.
pub fn of_group<'a>(
    failed: &BTreeMap<(&'a str, u32), Vec<&'a str>>,
    group: &str,
) -> BTreeMap<u32, Vec<&'a str>> {
    failed
        .range((group, 0)..=(group, u32::MAX))
        .map(|((_, i), nodes)| (*i, nodes.clone()))
        .collect()
}

/// `ask` for instance `index`, knowing where it failed before.
pub fn ask_for<'a>(
    ask: &Ask<'a>,
    failed_on: &'a BTreeMap<u32, Vec<&'a str>>,
    index: u32,
) -> Ask<'a> {
    Ask {
        failed_on: failed_on.get(&index).map_or(&[], Vec::as_slice),
        ..*ask
    }
}
