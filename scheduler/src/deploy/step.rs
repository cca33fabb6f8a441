//! The pure decision of a deployment: given its record, the job and the
//! job's allocations at a moment, what changes in the record and what to
//! place and stop. No I/O and no clock: the caller reads, passes `now`,
//! writes what comes back, and calls again when an allocation's status
//! changes or at [`Decision::wake_at`].
//!
//! The rules, per group of the deployment (instance `i` of `0..count`):
//!
//! - An allocation of the new spec is *healthy* once it has been running
//!   with every declared check passing for `min_healthy_time_ms`, and
//!   *unhealthy* if it ends or is not healthy `healthy_deadline_ms` after
//!   its placement; the verdict sticks for the deployment.
//! - An old allocation at `i` is stopped only once the new one at `i` is
//!   healthy, so the healthy count never drops below what it was; at most
//!   `max_parallel` replacements are in flight (placed, not yet healthy).
//! - With `canary = N` and old allocations to replace, N replacements are
//!   placed first and nothing old is stopped until the group is promoted
//!   (by an operator, or by `auto_promote` once the canaries are healthy).
//! - Instances missing altogether are placed at once and surplus ones
//!   stopped, as the reconciler would, whatever the deployment's state.
//! - A deployment fails when a group makes no progress (no allocation
//!   turning healthy) for `progress_deadline_ms`, or, with no progress
//!   deadline, as soon as an allocation is unhealthy. It succeeds when
//!   every instance of every group is a healthy new allocation. A revert
//!   deployment never fails by deadline: the deadline decides whether to
//!   revert, never to give up on the known-good version (nomad #12940).
//! - An allocation due for replacement (failed, or running with a check
//!   critical past `healthy_deadline_ms`: [`crate::reschedule::unhealthy`])
//!   is not passed to the step (the caller steps over
//!   [`crate::reschedule::deployment_view`]): its slot is empty, so it is placed again
//!   and the replacement is tracked like any new allocation, within the
//!   same progress deadline (Nomad's "rescheduled if the update is still
//!   within the progress_deadline").

use std::collections::BTreeMap;

use super::record::{AllocHealth, Deployment, DeploymentStatus, GroupProgress};
use crate::job::{GroupSpec, JobSpec};
use crate::state::{AllocRecord, AllocStatus, DesiredState};
use drover_model::CheckStatus;

/// One allocation of the job as the step sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The record.
    pub alloc: &'a AllocRecord,
    /// Whether it runs the deployment's spec of its group (the same tasks
    /// and restart policy; a count change does not make it old).
    pub current: bool,
}

/// What one group needs now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupActions {
    /// Instance indexes to place with the new spec.
    pub place: Vec<u32>,
    /// Ids of allocations to stop.
    pub stop: Vec<String>,
}

/// What a step decided.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The record after the step.
    pub deployment: Deployment,
    /// Per group of the deployment.
    pub groups: BTreeMap<String, GroupActions>,
    /// When to step again if nothing happens before (a healthy time or a
    /// deadline coming due); `None` once the deployment is over.
    pub wake_at: Option<i64>,
}

impl Decision {
    /// Whether the record changed.
    pub fn changed(&self, before: &Deployment) -> bool {
        &self.deployment != before
    }

    /// It failed in this step, and a group asks for auto-revert: the
    /// caller goes back to the last stable version (a revert deployment
    /// itself never asks).
    pub fn revert_wanted(&self, before: &Deployment) -> bool {
        before.status == DeploymentStatus::Running
            && self.deployment.status == DeploymentStatus::Failed
            && wants_revert(&self.deployment)
    }
}

/// Whether a failure of `d` calls for going back to the last stable
/// version.
pub fn wants_revert(d: &Deployment) -> bool {
    !d.revert && d.groups.values().any(|g| g.update.auto_revert)
}

/// A new deployment of `job` at `version`, over the groups named in
/// `groups` with whether each has old allocations to replace (one
/// without needs no canary phase).
pub fn new_deployment(
    job: &JobSpec,
    version: u64,
    groups: &[(&str, bool)],
    revert: bool,
    now: i64,
) -> Deployment {
    let groups = groups
        .iter()
        .filter_map(|&(name, has_old)| {
            let update = job.group(name)?.update?;
            let canary_phase = has_old && !revert && update.canary > 0;
            Some((
                name.to_string(),
                GroupProgress {
                    update,
                    promoted: !canary_phase,
                    last_progress_unix_ms: now,
                    allocs: BTreeMap::new(),
                },
            ))
        })
        .collect();
    Deployment {
        job: job.name.clone(),
        version,
        status: DeploymentStatus::Running,
        description: if revert {
            "reverting to a stable version".into()
        } else {
            "deployment started".into()
        },
        revert,
        reverted_to: None,
        created_unix_ms: now,
        modified_unix_ms: now,
        groups,
    }
}

/// Promotes every group of running deployment `d` still in its canary
/// phase, at `now`: refused (with why) unless every canary is healthy.
pub fn promote(d: &Deployment, now: i64) -> Result<Deployment, String> {
    if d.status != DeploymentStatus::Running {
        return Err(format!(
            "deployment of version {} is {}, not running",
            d.version,
            d.status.as_str()
        ));
    }
    let waiting: Vec<&String> = d
        .groups
        .iter()
        .filter(|(_, g)| !g.promoted)
        .map(|(name, _)| name)
        .collect();
    if waiting.is_empty() {
        return Err(format!(
            "deployment of version {} has no canaries to promote",
            d.version
        ));
    }
    let mut next = d.clone();
    for (name, g) in next.groups.iter_mut().filter(|(_, g)| !g.promoted) {
        if !g.canaries_healthy() {
            return Err(format!(
                "group {name:?}: {} of {} canaries healthy; promote once they all are",
                g.allocs
                    .values()
                    .filter(|h| h.canary && h.healthy == Some(true))
                    .count(),
                g.update.canary
            ));
        }
        g.promoted = true;
        g.last_progress_unix_ms = now;
    }
    next.description = "promoted".into();
    next.modified_unix_ms = now;
    Ok(next)
}

/// One step of deployment `d` of `job` over the job's allocations at
/// `now`.
pub fn step(d: &Deployment, job: &JobSpec, allocs: &[Observed<'_>], now: i64) -> Decision {
    let mut next = d.clone();
    let running = d.status == DeploymentStatus::Running;
    let mut wake = Wake(None);
    let mut failure = None;
    let mut all_done = true;
    let mut waiting = false;
    let mut slots = BTreeMap::new();
    for (name, progress) in next.groups.iter_mut() {
        let Some(group) = job.group(name) else {
            continue;
        };
        let mine: Vec<Observed<'_>> = allocs
            .iter()
            .filter(|o| &o.alloc.group == name && wanted(o.alloc))
            .copied()
            .collect();
        if running {
            observe(progress, group, &mine, d.created_unix_ms, now, &mut wake);
            if !progress.promoted && progress.update.auto_promote && progress.canaries_healthy() {
                progress.promoted = true;
                progress.last_progress_unix_ms = now;
            }
        }
        let s = Slots::new(group.count, &mine, progress);
        let done = progress.promoted && s.all_healthy(progress);
        all_done &= done;
        waiting |= !progress.promoted && progress.canaries_healthy();
        if running && !d.revert && failure.is_none() {
            failure = deadline(progress, done, now, &mut wake)
                .map(|why| format!("group {name:?}: {why}"));
        }
        slots.insert(name.clone(), s);
    }
    if running {
        next.description = match (&failure, all_done) {
            (Some(why), _) => {
                next.status = DeploymentStatus::Failed;
                why.clone()
            }
            (None, true) => {
                next.status = DeploymentStatus::Successful;
                "every allocation of the new version is healthy".into()
            }
            (None, false) if waiting => "canaries healthy; waiting for promotion".into(),
            (None, false) => d.description.clone(),
        };
        if &next != d {
            next.modified_unix_ms = now;
        }
    }
    let rolling =
        next.status == DeploymentStatus::Running || next.status == DeploymentStatus::Successful;
    let groups = next
        .groups
        .iter()
        .filter_map(|(name, progress)| {
            let s = slots.get(name)?;
            Some((
                name.clone(),
                s.actions(progress, rolling, d.created_unix_ms),
            ))
        })
        .collect();
    Decision {
        wake_at: wake.0.filter(|_| next.status == DeploymentStatus::Running),
        deployment: next,
        groups,
    }
}

/// An allocation still wanted in its slot: desired to run and not lost
/// with its node.
fn wanted(a: &AllocRecord) -> bool {
    a.desired == DesiredState::Run && a.status != AllocStatus::Lost
}

/// The earliest time to step again.
struct Wake(Option<i64>);

impl Wake {
    fn at(&mut self, t: i64) {
        self.0 = Some(self.0.map_or(t, |w| w.min(t)));
    }
}

/// Updates the health of the group's new-version allocations.
fn observe(
    progress: &mut GroupProgress,
    group: &GroupSpec,
    mine: &[Observed<'_>],
    created: i64,
    now: i64,
    wake: &mut Wake,
) {
    let declared: usize = group.services.iter().map(|s| s.checks.len()).sum();
    let u = progress.update;
    let min_healthy = i64::try_from(u.min_healthy_time_ms).unwrap_or(i64::MAX);
    let deadline = i64::try_from(u.healthy_deadline_ms).unwrap_or(i64::MAX);
    let promoted = progress.promoted;
    for o in mine.iter().filter(|o| o.current) {
        let a = o.alloc;
        let h = progress.allocs.entry(a.id.clone()).or_insert(AllocHealth {
            since_unix_ms: a.created_unix_ms.max(created),
            ok_since_unix_ms: None,
            healthy: None,
            canary: !promoted,
        });
        if h.healthy.is_some() {
            continue;
        }
        if a.status.is_terminal() {
            h.healthy = Some(false);
            continue;
        }
        let ok = a.status == AllocStatus::Running
            && a.checks.len() >= declared
            && a.checks.iter().all(|c| c.status == CheckStatus::Passing);
        if ok {
            let since = *h.ok_since_unix_ms.get_or_insert(now);
            if now.saturating_sub(since) >= min_healthy {
                h.healthy = Some(true);
                progress.last_progress_unix_ms = now;
                continue;
            }
            wake.at(since.saturating_add(min_healthy));
        } else {
            h.ok_since_unix_ms = None;
        }
        let due = h.since_unix_ms.saturating_add(deadline);
        if now >= due {
            h.healthy = Some(false);
        } else {
            wake.at(due);
        }
    }
}

/// Why the group fails now, if it does.
fn deadline(progress: &GroupProgress, done: bool, now: i64, wake: &mut Wake) -> Option<String> {
    let pd = progress.update.progress_deadline_ms;
    if pd == 0 {
        let bad = progress
            .allocs
            .iter()
            .find(|(_, h)| h.healthy == Some(false));
        return bad.map(|(id, _)| format!("allocation {id} is unhealthy (no progress deadline)"));
    }
    let waiting_for_promotion = !progress.promoted && progress.canaries_healthy();
    if done || waiting_for_promotion {
        return None;
    }
    let due = progress
        .last_progress_unix_ms
        .saturating_add(i64::try_from(pd).unwrap_or(i64::MAX));
    if now >= due {
        return Some(format!(
            "no allocation became healthy within progress_deadline_ms = {pd}"
        ));
    }
    wake.at(due);
    None
}

/// The group's instances `0..count`: the new-version allocation holding
/// each (at most one), the old ones beside it, and what is surplus.
struct Slots<'a> {
    current: Vec<Option<&'a AllocRecord>>,
    old: Vec<Vec<&'a AllocRecord>>,
    surplus: Vec<&'a AllocRecord>,
}

impl<'a> Slots<'a> {
    fn new(count: u32, mine: &[Observed<'a>], progress: &GroupProgress) -> Slots<'a> {
        let n = usize::try_from(count).unwrap_or(0);
        let mut s = Slots {
            current: vec![None; n],
            old: vec![Vec::new(); n],
            surplus: Vec::new(),
        };
        let rank = |a: &AllocRecord| match progress.allocs.get(&a.id).and_then(|h| h.healthy) {
            Some(true) => 0,
            None => 1,
            Some(false) => 2,
        };
        let mut sorted: Vec<&Observed<'a>> = mine.iter().collect();
        sorted.sort_by_key(|o| {
            (
                o.alloc.index,
                rank(o.alloc),
                std::cmp::Reverse(o.alloc.created_unix_ms),
            )
        });
        for o in sorted {
            let Some(i) = usize::try_from(o.alloc.index).ok().filter(|i| *i < n) else {
                s.surplus.push(o.alloc);
                continue;
            };
            match (o.current, s.current[i]) {
                (true, None) => s.current[i] = Some(o.alloc),
                (true, Some(_)) => s.surplus.push(o.alloc),
                (false, _) => s.old[i].push(o.alloc),
            }
        }
        s
    }

    fn healthy(&self, i: usize, progress: &GroupProgress) -> bool {
        self.current[i]
            .is_some_and(|a| progress.allocs.get(&a.id).and_then(|h| h.healthy) == Some(true))
    }

    fn all_healthy(&self, progress: &GroupProgress) -> bool {
        (0..self.current.len()).all(|i| self.healthy(i, progress))
    }

    /// What the group needs: surplus stopped and missing instances placed
    /// always; while `rolling`, old allocations replaced as the strategy
    /// allows.
    /// Replacements in flight are the new allocations placed since the
    /// deployment began (`created`) and not yet healthy; ones from before
    /// (a revert's) hold no part of the budget.
    fn actions(&self, progress: &GroupProgress, rolling: bool, created: i64) -> GroupActions {
        let mut out = GroupActions {
            stop: self.surplus.iter().map(|a| a.id.clone()).collect(),
            ..GroupActions::default()
        };
        let n = self.current.len();
        let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        out.place.extend(
            (0..n)
                .filter(|&i| self.current[i].is_none() && self.old[i].is_empty())
                .map(index),
        );
        if !rolling {
            return out;
        }
        let candidates = (0..n).filter(|&i| self.current[i].is_none() && !self.old[i].is_empty());
        let u = progress.update;
        let budget = if progress.promoted {
            for i in (0..n).filter(|&i| self.healthy(i, progress)) {
                out.stop.extend(self.old[i].iter().map(|a| a.id.clone()));
            }
            let in_flight = (0..n)
                .filter(|&i| {
                    self.current[i].is_some_and(|a| a.created_unix_ms >= created)
                        && !self.healthy(i, progress)
                })
                .count();
            usize::try_from(u.max_parallel)
                .unwrap_or(usize::MAX)
                .saturating_sub(in_flight)
        } else {
            usize::try_from(u.canary.saturating_sub(progress.canaries())).unwrap_or(0)
        };
        out.place.extend(candidates.take(budget).map(index));
        out.place.sort_unstable();
        out
    }
}
