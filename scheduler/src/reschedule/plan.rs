//! Rescheduling in a placement pass: which failed allocations are due at
//! `now`, the allocations as reconcile should see them (due ones no longer
//! holding their slot), and the plan with each replacement matched to the
//! allocation it replaces.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::{failed_and_wanted, outlook, Lineage, Outlook};
use crate::job::JobSpec;
use crate::placement::{self, Placement, Plan};
use crate::state::{AllocRecord, DesiredState, NodeRecord};

/// A placement that replaces a failed allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// Id of the failed allocation, to be marked replaced.
    pub old: String,
    /// The replacement's lineage.
    pub lineage: Lineage,
}

/// A placement pass with rescheduling.
#[derive(Debug, Default)]
pub struct Planned {
    /// What placement decided.
    pub plan: Plan,
    /// Due replacements by (group, index): the placement of that instance
    /// in `plan`, if any, replaces the allocation named.
    pub replacing: BTreeMap<(String, u32), Replacement>,
    /// Failed allocations a replacement already names that are still
    /// desired run (a write cut short): (failed id, replacement id).
    pub unmarked: Vec<(String, String)>,
}

impl Planned {
    /// The failed allocation placement `p` replaces, if it is a reschedule.
    pub fn replacing(&self, p: &Placement) -> Option<&Replacement> {
        self.replacing.get(&(p.group.clone(), p.index))
    }
}

/// The failed allocations of a job that a pass at `now` acts on.
#[derive(Debug, Default)]
pub struct Due<'a> {
    /// Due for replacement, with the lineage of their replacement.
    pub due: Vec<(&'a AllocRecord, Lineage)>,
    /// Already replaced but not yet marked so, with their replacement's id.
    pub unmarked: Vec<(&'a AllocRecord, &'a str)>,
}

impl Due<'_> {
    /// Whether the pass has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty() && self.unmarked.is_empty()
    }
}

/// Failed allocations of `job` among `allocs` due for replacement at
/// `now`, and those already replaced but not yet marked so.
pub fn due<'a>(job: &JobSpec, allocs: &'a [AllocRecord], now: i64) -> Due<'a> {
    let mine = || allocs.iter().filter(|a| a.job == job.name);
    let named: BTreeMap<&str, &str> = mine()
        .filter_map(|a| {
            let l = a.reschedule.lineage.as_ref()?;
            Some((l.previous.as_str(), a.id.as_str()))
        })
        .collect();
    let mut out = Due::default();
    for a in mine().filter(|a| failed_and_wanted(a)) {
        if let Some(by) = named.get(a.id.as_str()) {
            out.unmarked.push((a, *by));
            continue;
        }
        if let Some(Outlook::Replace(l)) = outlook(job, a) {
            if l.eligible_unix_ms <= now {
                out.due.push((a, l));
            }
        }
    }
    out
}

/// The ids of the allocations of `job` among `allocs` that a pass at `now`
/// frees from their slot: due for replacement, or replaced already but
/// not yet marked so. A deployment steps over [`view`] of them, so that
/// it places the slot again.
pub fn freed<'a>(job: &JobSpec, allocs: &'a [AllocRecord], now: i64) -> BTreeSet<&'a str> {
    let Due { due, unmarked } = due(job, allocs, now);
    due.iter()
        .map(|(a, _)| a.id.as_str())
        .chain(unmarked.iter().map(|(a, _)| a.id.as_str()))
        .collect()
}

/// `allocs` (of `job`) as a deployment steps over them at `now`: those
/// [`freed`] no longer hold their slot (desired stop), so the deployment
/// places it again and tracks the replacement.
pub fn deployment_view<'a>(
    job: &JobSpec,
    allocs: &'a [AllocRecord],
    now: i64,
) -> Cow<'a, [AllocRecord]> {
    view(allocs, &freed(job, allocs, now))
}

/// `allocs` as reconcile should see them: the failed allocations in
/// `free` no longer hold their slot (desired stop), so it is placed again.
pub fn view<'a>(allocs: &'a [AllocRecord], free: &BTreeSet<&str>) -> Cow<'a, [AllocRecord]> {
    if free.is_empty() {
        return Cow::Borrowed(allocs);
    }
    Cow::Owned(
        allocs
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if free.contains(a.id.as_str()) {
                    a.desired = DesiredState::Stop;
                }
                a
            })
            .collect(),
    )
}

/// [`placement::plan`] at `now`: failed allocations that are due free
/// their slot, and the placement of that slot replaces them.
pub fn plan(
    config: &placement::PlanConfig,
    nodes: &[NodeRecord],
    allocs: &[AllocRecord],
    job: &JobSpec,
    previous: Option<&JobSpec>,
    now: i64,
    managed: &std::collections::BTreeMap<&str, placement::Managed<'_>>,
) -> Planned {
    let Due { due, unmarked } = due(job, allocs, now);
    let free: BTreeSet<&str> = due
        .iter()
        .map(|(a, _)| a.id.as_str())
        .chain(unmarked.iter().map(|(a, _)| a.id.as_str()))
        .collect();
    let seen = view(allocs, &free);
    let plan = placement::plan_managed(config, nodes, &seen, job, previous, managed);
    let replacing = due
        .into_iter()
        .map(|(a, lineage)| {
            let r = Replacement {
                old: a.id.clone(),
                lineage,
            };
            ((a.group.clone(), a.index), r)
        })
        .collect();
    Planned {
        plan,
        replacing,
        unmarked: unmarked
            .into_iter()
            .map(|(a, by)| (a.id.clone(), by.to_string()))
            .collect(),
    }
}
