//! The decisions of convergence, without I/O: given what the node holds
//! ([`State`]), what is on disk ([`Disk`]), the scheduler's assignments and
//! the time, which [`Action`]s to take. `executor` performs them.
//! The same split as `net/routes.rs` (`plan_routes`, `sync_routes`).
//!
//! Two moments call for decisions: a new list of assignments
//! ([`plan_assignments`]: start, adopt, stop, forget) and the passing of
//! time ([`plan_tick`]: restarts by the group's policy, stops of what
//! failed or is being stopped, release of finished allocations' networks).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::assignment::{AllocStatus, Assignment, DesiredState, JobKind, Refused};
use crate::runtime::TaskState;

use super::state::{Disk, State, Tracked};
use super::status;

/// One step the executor takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Tasks on disk of an allocation this process does not track (from
    /// before an agent restart) that the scheduler does not want running:
    /// stop those still running, release its network, and report it
    /// complete when the scheduler still lists it.
    StopUntracked {
        /// The allocation.
        alloc_id: String,
        /// Its tasks on disk.
        tasks: Vec<String>,
        /// Report its final status (it is listed, marked stop).
        report: bool,
    },
    /// Report complete an allocation marked stop that never started here.
    ReportStopped {
        /// The allocation.
        alloc_id: String,
    },
    /// Report failed an assignment this agent could not decode.
    Refuse(Refused),
    /// Stop every task of a tracked allocation (unlisted, or marked stop)
    /// and cancel its pending restarts.
    Stop {
        /// The allocation.
        alloc_id: String,
    },
    /// Release the network of an unlisted allocation whose final status is
    /// out, and stop tracking it.
    Forget {
        /// The allocation.
        alloc_id: String,
    },
    /// Keep the scheduler's latest word on a tracked allocation.
    Update(Box<Assignment>),
    /// Set up the network of a new allocation and start (or adopt from
    /// disk) each of its tasks.
    Start {
        /// What to start.
        assignment: Box<Assignment>,
        /// None of its tasks has a directory: nothing of it can run.
        fresh: bool,
    },
    /// Start an exited task again, now.
    Restart {
        /// The allocation.
        alloc_id: String,
        /// The task.
        task: String,
    },
    /// Start an exited task again at `at`.
    ScheduleRestart {
        /// The allocation.
        alloc_id: String,
        /// The task.
        task: String,
        /// When.
        at: Instant,
    },
    /// Drop a task's pending restart.
    CancelRestart {
        /// The allocation.
        alloc_id: String,
        /// The task.
        task: String,
    },
    /// Stop one task that still runs (again, if an earlier stop failed).
    StopTask {
        /// The allocation.
        alloc_id: String,
        /// The task.
        task: String,
    },
    /// Restart a running task on its deployment's pinned image: it started
    /// on another digest (the tag moved while the deployment's first
    /// instances started side by side, before the pin reached this node).
    Repin {
        /// The allocation.
        alloc_id: String,
        /// The task.
        task: String,
        /// The pinned reference it runs.
        runs: String,
        /// The deployment's.
        pinned: String,
    },
    /// Release the network of an allocation over for good.
    RemoveNetwork {
        /// The allocation.
        alloc_id: String,
    },
}

/// What to do on the scheduler's full list of this node's assignments.
/// `refused`: the assignments that could not be decoded (their
/// allocations are left as they are: neither stopped nor started).
pub fn plan_assignments(
    state: &State,
    assignments: &[Assignment],
    refused: &[Refused],
    disk: &Disk,
) -> Vec<Action> {
    let wanted: BTreeMap<&str, &Assignment> = assignments
        .iter()
        .map(|a| (a.alloc.id.as_str(), a))
        .collect();
    let refused_ids: BTreeSet<&str> = refused.iter().map(|r| r.alloc_id.as_str()).collect();
    let tracked = &state.allocs;
    let wants_run = |id: &str| {
        wanted
            .get(id)
            .is_some_and(|a| a.alloc.desired == DesiredState::Run)
    };
    let mut actions = Vec::new();
    // Tasks on disk that this process does not track (from before an agent
    // restart): wanted ones are adopted below; the rest, stopped or
    // forgotten while the agent was down, are stopped now, so nothing runs
    // that the scheduler does not know of.
    for (id, tasks) in &disk.tasks {
        let keep = tracked.contains_key(id) || wants_run(id) || refused_ids.contains(id.as_str());
        if !keep {
            actions.push(Action::StopUntracked {
                alloc_id: id.clone(),
                tasks: tasks.clone(),
                report: wanted.contains_key(id.as_str()),
            });
        }
    }
    // Marked stop before this node ever started it: nothing to stop, but
    // the scheduler waits for a final status.
    for (id, a) in &wanted {
        if a.alloc.desired == DesiredState::Stop
            && !tracked.contains_key(*id)
            && !disk.tasks.contains_key(*id)
        {
            actions.push(Action::ReportStopped {
                alloc_id: id.to_string(),
            });
        }
    }
    for (id, alloc) in tracked {
        if refused_ids.contains(id.as_str()) {
            continue;
        }
        actions.extend(plan_tracked(id, alloc, wanted.get(id.as_str()).copied()));
    }
    // Start (or adopt) what is new and wanted running; not what has
    // finished here already and whose files were collected.
    for (id, a) in &wanted {
        let no_dirs = disk.no_dirs.contains(*id);
        if a.alloc.desired == DesiredState::Run
            && !tracked.contains_key(*id)
            && !(a.alloc.status.is_terminal() && no_dirs)
        {
            actions.push(Action::Start {
                assignment: Box::new((*a).clone()),
                fresh: no_dirs,
            });
        }
    }
    for r in refused {
        let id = r.alloc_id.as_str();
        if !tracked.contains_key(id) && !disk.tasks.contains_key(id) && !state.refused.contains(id)
        {
            actions.push(Action::Refuse(r.clone()));
        }
    }
    actions
}

/// A tracked allocation against its assignment (`None`: unlisted).
fn plan_tracked(id: &str, alloc: &Tracked, wanted: Option<&Assignment>) -> Vec<Action> {
    let mut actions = Vec::new();
    let stop = wanted.is_none_or(|a| a.alloc.desired == DesiredState::Stop);
    // One that has finished by itself keeps its final status (a failed
    // allocation must not turn complete for being stopped): there is
    // nothing to stop.
    if stop && !alloc.stopping && !alloc.finished() {
        actions.push(Action::Stop {
            alloc_id: id.to_string(),
        });
    } else if wanted.is_none() && alloc.reported_as_is() && alloc.all_terminal() {
        // Forgotten only once its final status is out.
        actions.push(Action::Forget {
            alloc_id: id.to_string(),
        });
    }
    if let Some(a) = wanted {
        actions.push(Action::Update(Box::new(a.clone())));
    }
    actions
}

/// The running tasks of `alloc` whose image is pinned for their deployment
/// (the latest assignment) to another digest than the one they run.
fn plan_repins<'a>(id: &'a str, alloc: &'a Tracked) -> impl Iterator<Item = Action> + 'a {
    let wanted = &alloc.assignment;
    let run = !alloc.stopping && wanted.alloc.desired == DesiredState::Run;
    wanted
        .group
        .tasks
        .iter()
        .filter(move |_| run)
        .filter_map(move |t| {
            let pinned = t.pinned_image.as_ref()?;
            let track = alloc.tasks.get(&t.name)?;
            let runs = track.image.as_ref().filter(|r| !r.is_empty())?;
            let running = matches!(track.state, TaskState::Running { .. });
            (running && track.restart_at.is_none() && runs != pinned).then(|| Action::Repin {
                alloc_id: id.to_owned(),
                task: t.name.clone(),
                runs: runs.clone(),
                pinned: pinned.clone(),
            })
        })
}

/// What to do as time passes, on task states just refreshed: restarts
/// that are due or to schedule, stops of what failed or is being stopped,
/// and the networks of allocations over for good.
pub fn plan_tick(state: &State, now: Instant) -> Vec<Action> {
    state
        .allocs
        .iter()
        .flat_map(|(id, alloc)| plan_alloc_tick(id, alloc, now))
        .collect()
}

fn plan_alloc_tick(id: &str, alloc: &Tracked, now: Instant) -> Vec<Action> {
    let policy = alloc.assignment.group.restart;
    let batch = alloc.assignment.job_kind == JobKind::Batch;
    let mut restarts = Vec::new();
    // The tasks as they will be once the restarts are scheduled.
    let mut projected = alloc.tasks.clone();
    for (name, track) in &alloc.tasks {
        let (alloc_id, task) = (id.to_string(), name.clone());
        if let Some(at) = track.restart_at {
            if alloc.stopping {
                restarts.push(Action::CancelRestart { alloc_id, task });
            } else if now >= at {
                restarts.push(Action::Restart { alloc_id, task });
            }
            continue;
        }
        // The restart policy applies to every exit not yet acted on,
        // however it was seen: a task can exit before `start` even
        // returns. `restarts` bounds it.
        if let TaskState::Exited { exit_code, .. } = &track.state {
            let wants_restart = !alloc.stopping
                && (!batch || *exit_code != Some(0))
                && track.restarts < policy.attempts;
            if wants_restart {
                let at = now.checked_add(policy.delay).unwrap_or(now);
                if let Some(p) = projected.get_mut(name) {
                    p.restart_at = Some(at);
                }
                restarts.push(Action::ScheduleRestart { alloc_id, task, at });
            }
        }
    }
    let projected_status = status::derive(&projected, alloc.stopping);
    let failed = projected_status == AllocStatus::Failed;
    let mut actions = Vec::new();
    if failed {
        // Failed for good: no restart, and the surviving tasks are stopped.
        for (name, track) in &alloc.tasks {
            if track.restart_at.is_some() {
                actions.push(Action::CancelRestart {
                    alloc_id: id.to_string(),
                    task: name.clone(),
                });
            }
        }
    } else {
        actions = restarts;
        actions.extend(plan_repins(id, alloc));
    }
    if alloc.stopping || failed {
        // A stop that failed earlier is tried again.
        for (name, track) in &alloc.tasks {
            if !track.state.is_terminal() {
                actions.push(Action::StopTask {
                    alloc_id: id.to_string(),
                    task: name.clone(),
                });
            }
        }
    }
    // Over for good: nothing of it runs or will be restarted.
    let over = matches!(
        projected_status,
        AllocStatus::Complete | AllocStatus::Failed
    ) && alloc.all_terminal();
    if over && alloc.net.is_some() {
        actions.push(Action::RemoveNetwork {
            alloc_id: id.to_string(),
        });
    }
    actions
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
