//! The allocations this node holds, converged onto the scheduler's
//! assignments.
//!
//! Split by responsibility:
//!
//! - [`state`]: what is known of each allocation (tasks, restarts, last
//!   report, network);
//! - [`status`]: the one derivation of an allocation's status, and its
//!   reports;
//! - [`plan`]: the decisions, pure ([`plan::plan_assignments`] on a new list,
//!   [`plan::plan_tick`] as time passes);
//! - `executor`: performs them through the runtime and the node network;
//! - `spec`: an assignment's task as the runtime's `TaskSpec`;
//! - [`services`]: what the health checks need to know of each allocation;
//! - [`events`]: what happened to its tasks since the last poll, sent with
//!   its report;
//! - [`gc`]: removal of finished allocations' files.
//!
//! [`Allocs::converge`] reads what is on disk, plans and executes;
//! [`Allocs::poll`] refreshes task states, plans, executes and returns the
//! reports that changed.

pub mod disconnect;
pub mod events;
mod executor;
pub mod gc;
pub mod plan;
pub mod services;
pub mod spec;
pub mod state;
pub mod status;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::assignment::{AllocReport, Assignment, Refused};
use crate::net::wiring::NodeNetwork;
use crate::runtime::{Runtime, RuntimeError};

pub use gc::collect_finished;
pub use services::{AllocChecks, Target};
use state::{Disk, State, Track};

/// Why a log or exec request names no task of this node.
#[derive(Debug, thiserror::Error)]
pub enum TaskLookupError {
    /// The allocation has no task here.
    #[error("allocation {alloc_id} has no tasks on this node")]
    NoTasks {
        /// The allocation asked for.
        alloc_id: String,
    },
    /// The task named is not one of the allocation's.
    #[error("allocation {alloc_id} has no task {task:?} (it has: {})", tasks.join(", "))]
    NoSuchTask {
        /// The allocation asked for.
        alloc_id: String,
        /// The task asked for.
        task: String,
        /// The tasks it has.
        tasks: Vec<String>,
    },
    /// No task named, and the allocation has several.
    #[error("allocation {alloc_id} has several tasks ({}); name one with --task", tasks.join(", "))]
    Ambiguous {
        /// The allocation asked for.
        alloc_id: String,
        /// The tasks it has.
        tasks: Vec<String>,
    },
    /// The task directories could not be listed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The allocations on this node.
pub struct Allocs {
    runtime: Arc<Runtime>,
    state: State,
    /// Final reports of allocations stopped without being tracked here (or
    /// refused), waiting to be sent.
    finished: Vec<AllocReport>,
    /// The node's networking, once up; see [`Allocs::set_network`].
    network: Option<Arc<NodeNetwork>>,
    /// Why there is no networking, for the message of a refused start.
    network_missing: String,
    /// Node policy: may a job ask for `network = "host"`?
    allow_host_network: bool,
    /// The tasks as the last poll saw them, for their events.
    seen: events::Seen,
}

impl Allocs {
    /// Manager over `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Allocs {
        Allocs {
            runtime,
            state: State::default(),
            finished: Vec::new(),
            network: None,
            network_missing: "the node's networking is not set up yet (no subnet from the \
                              scheduler, no --subnet)"
                .into(),
            allow_host_network: false,
            seen: events::Seen::default(),
        }
    }

    /// Lets jobs ask for the node's own network (`network = "host"`): node
    /// policy, `allow_host_network`.
    pub fn with_host_network(mut self, allow: bool) -> Allocs {
        self.allow_host_network = allow;
        self
    }

    /// The allocations tracked here (for the metrics).
    pub fn tracked(&self) -> impl Iterator<Item = &state::Tracked> {
        self.state.allocs.values()
    }

    /// The runtime the tasks run under.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The node's networking, or why there is none; allocations started
    /// from now on get their network from it.
    pub fn set_network(&mut self, network: Result<Arc<NodeNetwork>, String>) {
        match network {
            Ok(n) => self.network = Some(n),
            Err(why) => {
                self.network = None;
                self.network_missing = why;
            }
        }
    }

    /// The node's networking, when it is up.
    pub fn network(&self) -> Option<&Arc<NodeNetwork>> {
        self.network.as_ref()
    }

    /// The allocation ids with a task directory on disk: those whose
    /// network [`NodeNetwork::reconcile`] keeps.
    pub fn ids_on_disk(&self) -> Result<BTreeSet<String>, RuntimeError> {
        Ok(self.runtime.list()?.into_iter().map(|(a, _)| a).collect())
    }

    /// Reports of the tasks found on disk, grouped by allocation: sent in
    /// `Register` after an agent restart, before any assignment arrives.
    pub fn on_disk(&self) -> Result<Vec<AllocReport>, RuntimeError> {
        let mut by_alloc: std::collections::BTreeMap<String, _> = Default::default();
        for (alloc, task) in self.runtime.list()? {
            let state = self.runtime.state(&alloc, &task)?;
            by_alloc
                .entry(alloc)
                .or_insert_with(std::collections::BTreeMap::new)
                .insert(task, Track::new(state));
        }
        Ok(by_alloc
            .iter()
            .map(|(id, tasks)| status::report(id, tasks, false, None))
            .collect())
    }

    /// Converges on the node's full list of assignments (`refused`: those
    /// that could not be decoded).
    pub async fn converge(&mut self, assignments: &[Assignment], refused: &[Refused]) {
        let disk = self.read_disk(assignments);
        let actions = plan::plan_assignments(&self.state, assignments, refused, &disk);
        self.state
            .refused
            .retain(|id| refused.iter().any(|r| &r.alloc_id == id));
        self.execute(actions).await;
    }

    /// What [`plan::plan_assignments`] needs to know of the disk.
    fn read_disk(&self, assignments: &[Assignment]) -> Disk {
        let mut disk = Disk::default();
        match self.runtime.list() {
            Ok(list) => {
                for (alloc, task) in list {
                    disk.tasks.entry(alloc).or_default().push(task);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list tasks on disk"),
        }
        for a in assignments {
            // Only a task with no directory at all is absent: a state that
            // cannot be read right now (a partial write, EIO) belongs to a
            // task that may be running.
            let none = a.group.tasks.iter().all(|t| {
                matches!(
                    self.runtime.recorded_state(&a.alloc.id, &t.name),
                    Err(RuntimeError::NotFound { .. })
                )
            });
            if none {
                disk.no_dirs.insert(a.alloc.id.clone());
            }
        }
        disk
    }

    /// Refreshes task states, applies the restart policy and pending stops
    /// ([`plan::plan_tick`]), and returns the reports that changed since
    /// last sent.
    pub async fn poll(&mut self) -> Vec<AllocReport> {
        self.refresh_states();
        let actions = plan::plan_tick(&self.state, Instant::now());
        let restarted = actions
            .iter()
            .any(|a| matches!(a, plan::Action::Restart { .. }));
        self.execute(actions).await;
        if restarted {
            // A task restarted just now may have ended already (a command
            // that fails at once): its restart policy applies before the
            // report, or the allocation would be reported failed (all its
            // tasks ended, no restart due) until the next tick.
            let again = plan::plan_tick(&self.state, Instant::now());
            self.execute(again).await;
        }
        let mut changed = std::mem::take(&mut self.finished);
        for alloc in self.state.allocs.values_mut() {
            let report = alloc.report();
            if alloc.reported.as_ref() != Some(&report) {
                alloc.reported = Some(report.clone());
                changed.push(report);
            }
        }
        // Events ride on the allocation's report, sent for them if it did
        // not change otherwise.
        for (id, events) in self.seen.events(&self.state, drover_model::now_ms()) {
            match changed.iter_mut().find(|r| r.alloc_id == id) {
                Some(r) => r.events.extend(events),
                None => {
                    if let Some(alloc) = self.state.allocs.get(&id) {
                        let mut r = alloc.report();
                        r.events = events;
                        changed.push(r);
                    }
                }
            }
        }
        changed
    }

    /// Reads again the state of every task not known to have ended.
    fn refresh_states(&mut self) {
        for (id, alloc) in &mut self.state.allocs {
            for (name, track) in &mut alloc.tasks {
                let started = matches!(
                    track.state,
                    crate::runtime::TaskState::Running { .. }
                        | crate::runtime::TaskState::Exited { .. }
                );
                if track.image.is_none() && started {
                    track.image = Some(self.runtime.image_digest(id, name).unwrap_or_default());
                }
                if track.state.is_terminal() {
                    continue;
                }
                match self.runtime.state(id, name) {
                    Ok(state) => track.state = state,
                    Err(error) => {
                        tracing::warn!(alloc_id = %id, task = %name, %error, "cannot read task state");
                    }
                }
            }
        }
    }

    /// The report of `alloc_id` as it stands, if it is tracked here.
    pub fn report_of(&self, alloc_id: &str) -> Option<AllocReport> {
        self.state.allocs.get(alloc_id).map(|a| a.report())
    }

    /// Every tracked allocation whose services have health checks (see
    /// [`services::alloc_checks`]), for [`crate::checks::Checks::sync`].
    pub fn check_targets(&self) -> Vec<AllocChecks> {
        self.state
            .allocs
            .iter()
            .filter_map(|(id, a)| services::alloc_checks(id, a))
            .collect()
    }

    /// Makes the next [`Allocs::poll`] report every allocation again, as a
    /// new scheduler session must hear them all.
    pub fn forget_reported(&mut self) {
        for a in self.state.allocs.values_mut() {
            a.reported = None;
        }
        self.state.refused.clear();
    }

    /// The allocations whose files are in use: every one tracked here but
    /// those that have finished and whose end the scheduler has been told.
    pub fn in_use(&self) -> BTreeSet<String> {
        self.state
            .allocs
            .iter()
            .filter(|(_, a)| !(a.finished() && a.reported_as_is()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets allocations whose files [`collect_finished`] removed, and
    /// removes their networks; the scheduler may still list them,
    /// finished: nothing is started again for them (see
    /// [`plan::plan_assignments`]).
    pub async fn forget_collected(&mut self, alloc_ids: &BTreeSet<String>) {
        for id in alloc_ids {
            if self.state.allocs.get(id).is_none_or(|a| a.finished()) {
                self.remove_network(id).await;
                self.state.allocs.remove(id);
            }
        }
    }

    /// The task a log or exec request is for: the one named, or the
    /// allocation's only task.
    pub fn resolve_task(&self, alloc_id: &str, task: &str) -> Result<String, TaskLookupError> {
        let tasks: Vec<String> = match self.state.allocs.get(alloc_id) {
            Some(a) => a.tasks.keys().cloned().collect(),
            None => self
                .runtime
                .list()?
                .into_iter()
                .filter(|(a, _)| a == alloc_id)
                .map(|(_, t)| t)
                .collect(),
        };
        let alloc_id = alloc_id.to_string();
        if tasks.is_empty() {
            return Err(TaskLookupError::NoTasks { alloc_id });
        }
        if !task.is_empty() {
            return if tasks.iter().any(|t| t == task) {
                Ok(task.to_string())
            } else {
                Err(TaskLookupError::NoSuchTask {
                    alloc_id,
                    task: task.to_string(),
                    tasks,
                })
            };
        }
        match tasks.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(TaskLookupError::Ambiguous { alloc_id, tasks }),
        }
    }
}

#[cfg(test)]
mod tests;
