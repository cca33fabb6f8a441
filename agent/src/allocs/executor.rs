//! Performs the [`Action`]s of a plan: starts, adopts, restarts and stops
//! tasks through the runtime, sets up and removes allocations' networks,
//! and queues the reports of allocations it no longer tracks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;

use drover_model::EventType;

use crate::assignment::{
    AllocReport, AllocStatus, Allocation, Assignment, Group, NetworkMode, Refused, Task, TaskEvent,
    TaskReport, TaskStatus,
};
use crate::net::wiring::{AllocNetwork, NodeNetwork};
use crate::runtime::{TaskNetwork, TaskState};

use super::plan::Action;
use super::spec::task_spec;
use super::state::{Track, Tracked};
use super::{status, Allocs};

impl Allocs {
    /// Performs `actions`: the stops of tracked allocations together, then
    /// the starts together, everything else in order before them.
    pub(super) async fn execute(&mut self, actions: Vec<Action>) {
        let mut stops = Vec::new();
        let mut starts = Vec::new();
        for action in actions {
            match action {
                Action::Stop { alloc_id } => stops.push(alloc_id),
                Action::Start { assignment, fresh } => starts.push((*assignment, fresh)),
                Action::StopUntracked {
                    alloc_id,
                    tasks,
                    report,
                } => self.stop_untracked(alloc_id, tasks, report).await,
                Action::ReportStopped { alloc_id } => self.finished.push(AllocReport {
                    alloc_id,
                    status: AllocStatus::Complete,
                    tasks: Vec::new(),
                    ip: None,
                    checks: Vec::new(),
                    events: Vec::new(),
                }),
                Action::Refuse(refused) => self.refuse(refused),
                Action::Forget { alloc_id } => {
                    self.remove_network(&alloc_id).await;
                    self.state.allocs.remove(&alloc_id);
                }
                Action::Update(a) => {
                    if let Some(alloc) = self.state.allocs.get_mut(&a.alloc.id) {
                        alloc.assignment = *a;
                    }
                }
                Action::Restart { alloc_id, task } => self.restart(&alloc_id, &task).await,
                Action::ScheduleRestart { alloc_id, task, at } => {
                    self.set_restart(&alloc_id, &task, Some(at));
                }
                Action::CancelRestart { alloc_id, task } => {
                    self.set_restart(&alloc_id, &task, None);
                }
                Action::StopTask { alloc_id, task } => self.stop_task(&alloc_id, &task).await,
                Action::Repin {
                    alloc_id,
                    task,
                    runs,
                    pinned,
                } => self.repin(&alloc_id, &task, &runs, &pinned).await,
                Action::RemoveNetwork { alloc_id } => {
                    if self.remove_network(&alloc_id).await {
                        if let Some(alloc) = self.state.allocs.get_mut(&alloc_id) {
                            alloc.net = None;
                        }
                    }
                }
            }
        }
        if !stops.is_empty() {
            self.stop_all(&stops).await;
        }
        if !starts.is_empty() {
            self.start_all(starts).await;
        }
    }

    fn track_mut(&mut self, alloc_id: &str, task: &str) -> Option<&mut Track> {
        self.state.allocs.get_mut(alloc_id)?.tasks.get_mut(task)
    }

    fn set_restart(&mut self, alloc_id: &str, task: &str, at: Option<Instant>) {
        if let Some(track) = self.track_mut(alloc_id, task) {
            track.restart_at = at;
        }
    }

    /// Reports a refused assignment failed, each of its tasks with the
    /// reason, once per session.
    fn refuse(&mut self, refused: Refused) {
        let message = format!("assignment refused by the agent: {}", refused.error);
        let events = super::events::refused(&refused.tasks, &message, drover_model::now_ms());
        self.finished.push(AllocReport {
            alloc_id: refused.alloc_id.clone(),
            status: AllocStatus::Failed,
            tasks: refused
                .tasks
                .iter()
                .map(|name| TaskReport {
                    name: name.clone(),
                    status: TaskStatus::Failed,
                    pid: 0,
                    exit_code: None,
                    signal: None,
                    message: message.clone(),
                    restarts: 0,
                    image_digest: String::new(),
                })
                .collect(),
            ip: None,
            checks: Vec::new(),
            events,
        });
        self.state.refused.insert(refused.alloc_id);
    }

    /// Stops the tasks on disk of an allocation not tracked here, then
    /// removes its network; queues its final report when `report`.
    async fn stop_untracked(&mut self, alloc: String, tasks: Vec<String>, report: bool) {
        let mut states = BTreeMap::new();
        // A task that could not be stopped may still run in the
        // allocation's network: it keeps it (and its address) until a
        // later converge stops it.
        let mut still_running = false;
        for task in tasks {
            let state = match self.runtime.state(&alloc, &task) {
                Ok(s) if s.is_terminal() => s,
                _ => {
                    tracing::info!(alloc_id = %alloc, task = %task, "stopping task the scheduler no longer wants");
                    match self.runtime.stop(&alloc, &task).await {
                        Ok(s) => s,
                        Err(error) => {
                            tracing::warn!(alloc_id = %alloc, task = %task, %error, "stop failed; keeping the allocation's network");
                            still_running = true;
                            continue;
                        }
                    }
                }
            };
            states.insert(task, Track::new(state));
        }
        if still_running {
            return;
        }
        self.remove_network(&alloc).await;
        if report {
            let mut r = status::report(&alloc, &states, true, None);
            r.status = AllocStatus::Complete;
            self.finished.push(r);
        }
    }

    /// Marks the allocations stopping and stops all their tasks, the
    /// allocations side by side.
    async fn stop_all(&mut self, ids: &[String]) {
        let runtime = &self.runtime;
        let mut work = Vec::new();
        for id in ids {
            let Some(alloc) = self.state.allocs.get_mut(id) else {
                continue;
            };
            alloc.stopping = true;
            work.push((id.clone(), alloc.tasks.keys().cloned().collect::<Vec<_>>()));
        }
        let stops = work.into_iter().map(|(id, tasks)| async move {
            let mut out = Vec::new();
            for t in tasks {
                tracing::info!(alloc_id = %id, task = %t, "stopping task");
                let r = runtime.stop(&id, &t).await;
                out.push((t, r));
            }
            (id, out)
        });
        for (id, results) in join_all(stops).await {
            for (t, r) in results {
                let Some(track) = self.track_mut(&id, &t) else {
                    continue;
                };
                track.restart_at = None;
                match r {
                    Ok(state) => track.state = state,
                    Err(error) => {
                        tracing::warn!(alloc_id = %id, task = %t, %error, "stop failed");
                    }
                }
            }
        }
    }

    /// Stops one task; a failure is retried by a later tick.
    async fn stop_task(&mut self, alloc_id: &str, task: &str) {
        match self.runtime.stop(alloc_id, task).await {
            Ok(state) => {
                if let Some(track) = self.track_mut(alloc_id, task) {
                    track.state = state;
                }
            }
            Err(error) => {
                tracing::warn!(alloc_id = %alloc_id, task = %task, %error, "stop failed; will retry");
            }
        }
    }

    /// Starts an exited task again, in its allocation's network: a restart
    /// of its group's policy.
    async fn restart(&mut self, alloc_id: &str, task: &str) {
        self.start_again(alloc_id, task, true).await;
    }

    /// Stops a running task and starts it on its deployment's pinned image
    /// (`pinned`; it runs `runs`). Not counted against the restart policy:
    /// the task did not fail.
    async fn repin(&mut self, alloc_id: &str, task: &str, runs: &str, pinned: &str) {
        tracing::warn!(alloc_id = %alloc_id, task = %task, runs = %runs, pinned = %pinned, "task runs another image digest than its deployment; restarting it on the deployment's");
        self.runtime.note_event(
            alloc_id,
            TaskEvent {
                time_unix_ms: drover_model::now_ms(),
                task: task.to_owned(),
                kind: EventType::Restarting,
                message: format!(
                    "restarting on the deployment's image {pinned}: it started on {runs} \
                     (the tag moved while the deployment's first instances started)"
                ),
            },
        );
        self.stop_task(alloc_id, task).await;
        if self
            .track_mut(alloc_id, task)
            .is_some_and(|t| t.state.is_terminal())
        {
            self.start_again(alloc_id, task, false).await;
        }
    }

    /// Starts an exited task again, in its allocation's network; `counted`:
    /// as one of its restart policy's attempts.
    async fn start_again(&mut self, alloc_id: &str, task: &str, counted: bool) {
        let Some(alloc) = self.state.allocs.get(alloc_id) else {
            return;
        };
        let network = alloc.net.as_ref().map(|n| n.task.clone());
        let spec = alloc
            .assignment
            .group
            .tasks
            .iter()
            .find(|t| t.name == task)
            .map(|t| task_spec(&alloc.assignment.alloc, t, network));
        let runtime = Arc::clone(&self.runtime);
        let Some(track) = self.track_mut(alloc_id, task) else {
            return;
        };
        track.restart_at = None;
        // Looked up again once it runs (a pin may have changed it).
        track.image = None;
        if counted {
            track.restarts += 1;
            crate::counters::restarted();
        }
        let Some(spec) = spec else {
            return;
        };
        tracing::info!(alloc_id = %alloc_id, task = %task, restarts = track.restarts, "restarting task");
        track.state = match crate::counters::timed_start(runtime.start(&spec)).await {
            Ok(s) => s,
            Err(e) => TaskState::Failed {
                message: e.to_string(),
            },
        };
    }

    /// Starts (or adopts) the new allocations side by side and tracks them.
    async fn start_all(&mut self, starts: Vec<(Assignment, bool)>) {
        let this = &*self;
        let started = join_all(
            starts
                .into_iter()
                .map(|(a, fresh)| async move { this.start_alloc(a, fresh).await }),
        )
        .await;
        for tracked in started {
            self.state
                .allocs
                .insert(tracked.assignment.alloc.id.clone(), tracked);
        }
    }

    /// The network comes first: all tasks of the allocation share it, and a
    /// refused one starts no task at all (each is failed with the reason).
    async fn start_alloc(&self, a: Assignment, fresh: bool) -> Tracked {
        let network = self.network_for(&a.alloc, &a.group, fresh).await;
        if let Err(message) = &network {
            tracing::warn!(alloc_id = %a.alloc.id, %message, "allocation not started");
        }
        let mut tasks = BTreeMap::new();
        for t in &a.group.tasks {
            let state = match &network {
                Ok(n) => self.start_or_adopt(&a.alloc, t, n).await,
                Err(message) => TaskState::Failed {
                    message: message.clone(),
                },
            };
            tasks.insert(t.name.clone(), Track::new(state));
        }
        let net = network.ok();
        Tracked {
            assignment: a,
            tasks,
            reported: None,
            stopping: false,
            ip: net.as_ref().and_then(|n| n.ip),
            net,
        }
    }

    async fn start_or_adopt(&self, alloc: &Allocation, t: &Task, net: &AllocNetwork) -> TaskState {
        // A task already on disk is adopted as it is, finished or not: an
        // agent restart must neither restart a running task nor re-run one
        // that completed while it was down.
        if let Ok(state) = self.runtime.state(&alloc.id, &t.name) {
            tracing::info!(alloc_id = %alloc.id, task = %t.name, ?state, "adopted task from disk");
            return state;
        }
        let spec = task_spec(alloc, t, Some(net.task.clone()));
        match crate::counters::timed_start(self.runtime.start(&spec)).await {
            Ok(state) => {
                tracing::info!(alloc_id = %alloc.id, alloc = %alloc.name, task = %t.name, ?state, "task started");
                state
            }
            Err(error) => {
                tracing::warn!(alloc_id = %alloc.id, task = %t.name, %error, "task failed to start");
                TaskState::Failed {
                    message: error.to_string(),
                }
            }
        }
    }

    /// Sets up `alloc`'s network for its group's mode before any of its
    /// tasks starts. `fresh`: none of its tasks exists on disk yet.
    pub(super) async fn network_for(
        &self,
        alloc: &Allocation,
        group: &Group,
        fresh: bool,
    ) -> Result<AllocNetwork, String> {
        let mode = group.network;
        if mode == NetworkMode::Host {
            if !self.allow_host_network {
                return Err(format!(
                    "group {:?} asks for network = \"host\", which this node's policy does not \
                     allow (allow_host_network = false in the node policy file)",
                    group.name
                ));
            }
            // The node's own network: nothing to set up, no bridge needed.
            return Ok(AllocNetwork {
                mode,
                ip: None,
                task: TaskNetwork::default(),
            });
        }
        let Some(net) = &self.network else {
            return Err(format!("cannot start allocation: {}", self.network_missing));
        };
        net.setup(&alloc.id, &alloc.hostname(), mode, fresh)
            .await
            .map_err(|e| format!("setting up the allocation's network: {e}"))
    }

    /// Removes `alloc_id`'s network when there is any; logged on failure
    /// (retried by the next call, or by the reconcile at the next start).
    pub(super) async fn remove_network(&self, alloc_id: &str) -> bool {
        remove_network(self.network.as_ref(), alloc_id).await
    }
}

async fn remove_network(network: Option<&Arc<NodeNetwork>>, alloc_id: &str) -> bool {
    let Some(net) = network else { return false };
    if !net.has_state(alloc_id) {
        return true;
    }
    match net.teardown(alloc_id).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(alloc_id = %alloc_id, %error, "cannot remove the allocation's network; will retry");
            false
        }
    }
}
