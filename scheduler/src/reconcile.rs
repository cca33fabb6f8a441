//! Reconcile: *what* to place and what to stop for one job, comparing what
//! it wants with the allocations it has. Where new instances go is
//! [`crate::placement`]'s business, not this module's.
//!
//! Pure and deterministic: no I/O, no clock, no node capacity. The rules:
//!
//! - Every allocation still wanted (desired run, not lost) fills its slot,
//!   failed ones too: replacing failures here would start a new copy every
//!   reconcile pass, forever. A failed one frees its slot only once its
//!   reschedule delay has passed ([`crate::reschedule`] shows reconcile
//!   the allocations with it desired stop). Lost allocations were marked
//!   desired=stop when their node went down, and their slot is free.
//! - Allocations of a group that is gone, or whose instances changed (tasks
//!   or restart policy; a new `count` alone only scales), are replaced.
//! - Service and batch groups want instances `0..count`; a second holder of
//!   an index, or one past `count`, is stopped.
//! - System groups want one instance on every eligible node; a second one on
//!   a node is stopped.
//! - A periodic job wants no instance of its own: its children (jobs of
//!   their own, see [`crate::periodic`]) run its groups.

use std::collections::{BTreeMap, BTreeSet};

use crate::job::{GroupSpec, JobKind, JobSpec};
use crate::state::{AllocRecord, AllocStatus, DesiredState};

/// An instance to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want<'a> {
    /// Instance `index`, on whichever node placement picks.
    Any(u32),
    /// Instance `index` on this node (system jobs).
    On(u32, &'a str),
}

/// What one group of the job needs.
#[derive(Debug)]
pub struct GroupChanges<'a> {
    /// The group.
    pub group: &'a GroupSpec,
    /// Its allocations that stay, by index then creation time.
    pub kept: Vec<&'a AllocRecord>,
    /// Its allocations to stop: duplicates and instances past `count`.
    pub stop: Vec<&'a AllocRecord>,
    /// Instances to place, in the order they should be placed.
    pub place: Vec<Want<'a>>,
}

/// What a job needs, before any node is chosen.
#[derive(Debug)]
pub struct Reconciled<'a> {
    /// Allocations of groups that are gone or whose instances changed, in
    /// the order of `allocs`.
    pub replaced: Vec<&'a AllocRecord>,
    /// Per group of the job, in the job's order.
    pub groups: Vec<GroupChanges<'a>>,
}

/// Compares `job` with its allocations among `allocs` (every allocation in
/// the cluster may be passed). `previous` is the job's spec as stored, if
/// it is running; `eligible` are the ids of the nodes that may take work,
/// in node order (where system groups want an instance).
pub fn reconcile<'a>(
    job: &'a JobSpec,
    previous: Option<&JobSpec>,
    allocs: &'a [AllocRecord],
    eligible: &[&'a str],
) -> Reconciled<'a> {
    let mut replaced = Vec::new();
    let mut keep: BTreeMap<&str, Vec<&AllocRecord>> = BTreeMap::new();
    for a in allocs
        .iter()
        .filter(|a| a.job == job.name && a.desired == DesiredState::Run)
    {
        if a.status == AllocStatus::Lost {
            continue;
        }
        let changed =
            previous.is_some_and(|p| !same_instances(p.group(&a.group), job.group(&a.group)));
        if job.group(&a.group).is_none() || changed {
            replaced.push(a);
        } else {
            keep.entry(a.group.as_str()).or_default().push(a);
        }
    }
    let groups = job
        .groups
        .iter()
        .map(|group| {
            let mut existing = keep.remove(group.name.as_str()).unwrap_or_default();
            existing.sort_by_key(|a| (a.index, a.created_unix_ms));
            let (kept, stop, place) = match job.kind {
                JobKind::System => system_group(existing, eligible),
                _ if job.periodic.is_some() => counted_group(0, existing),
                JobKind::Service | JobKind::Batch => counted_group(group.count, existing),
            };
            GroupChanges {
                group,
                kept,
                stop,
                place,
            }
        })
        .collect();
    Reconciled { replaced, groups }
}

/// Whether instances of `a` and `b` are interchangeable: the same tasks and
/// restart policy. A different `count` alone only scales.
pub fn same_instances(a: Option<&GroupSpec>, b: Option<&GroupSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.tasks == b.tasks && a.restart == b.restart,
        _ => false,
    }
}

/// Kept allocations, allocations to stop, instances to place.
type Split<'a> = (Vec<&'a AllocRecord>, Vec<&'a AllocRecord>, Vec<Want<'a>>);

/// One instance per eligible node; new ones get indexes past the highest.
fn system_group<'a>(existing: Vec<&'a AllocRecord>, eligible: &[&'a str]) -> Split<'a> {
    let mut next = existing.iter().map(|a| a.index + 1).max().unwrap_or(0);
    let mut have: BTreeSet<&str> = BTreeSet::new();
    let (kept, stop) = existing
        .into_iter()
        .partition(|a| have.insert(a.node_id.as_str()));
    let place = eligible
        .iter()
        .filter(|n| !have.contains(*n))
        .map(|n| {
            let w = Want::On(next, n);
            next += 1;
            w
        })
        .collect();
    (kept, stop, place)
}

/// Instances `0..count`, each held once.
fn counted_group(count: u32, existing: Vec<&AllocRecord>) -> Split<'_> {
    let mut have: BTreeSet<u32> = BTreeSet::new();
    let (kept, stop) = existing
        .into_iter()
        .partition(|a| a.index < count && have.insert(a.index));
    let place = (0..count)
        .filter(|i| !have.contains(i))
        .map(Want::Any)
        .collect();
    (kept, stop, place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{alloc, job};

    fn ids(v: &[&AllocRecord]) -> Vec<String> {
        v.iter().map(|a| a.id.clone()).collect()
    }

    #[test]
    fn counted_groups_keep_failed_slots_refill_lost_ones_and_stop_surplus() {
        let allocs = [
            alloc("a0", 0, "n1", AllocStatus::Failed),
            alloc("a1", 1, "n1", AllocStatus::Lost),
            alloc("a2", 2, "n2", AllocStatus::Running),
            alloc("b0", 0, "n2", AllocStatus::Running),
        ];
        let spec = job("service", 2, "true");
        let r = reconcile(&spec, Some(&spec), &allocs, &["n1", "n2"]);
        assert!(r.replaced.is_empty());
        let g = &r.groups[0];
        assert_eq!(ids(&g.kept), ["a0"]);
        assert_eq!(
            ids(&g.stop),
            ["b0", "a2"],
            "a duplicate index, then past count"
        );
        assert_eq!(g.place, [Want::Any(1)]);
    }

    #[test]
    fn changed_instances_are_replaced_and_system_groups_want_every_eligible_node() {
        let allocs = [
            alloc("a0", 0, "n1", AllocStatus::Running),
            alloc("a1", 1, "n1", AllocStatus::Running),
        ];
        let (old, new) = (job("system", 1, "a"), job("system", 1, "b"));
        let r = reconcile(&new, Some(&old), &allocs, &["n1", "n2"]);
        assert_eq!(ids(&r.replaced), ["a0", "a1"]);
        assert_eq!(r.groups[0].place, [Want::On(0, "n1"), Want::On(1, "n2")]);

        let r = reconcile(&old, Some(&old), &allocs, &["n1", "n2"]);
        let g = &r.groups[0];
        assert_eq!(
            (ids(&g.kept), ids(&g.stop)),
            (vec!["a0".into()], vec!["a1".into()])
        );
        assert_eq!(
            g.place,
            [Want::On(2, "n2")],
            "indexes continue past the highest"
        );
    }
}
