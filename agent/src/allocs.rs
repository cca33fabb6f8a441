//! Converging the node onto its assignments.
//!
//! The scheduler sends the full list of allocations this node should hold.
//! [`Allocs::converge`] starts what is missing (adopting tasks that already
//! run from before an agent restart), stops what is marked stop or no longer
//! listed, and [`Allocs::poll`] watches task states, applies the group's
//! restart policy and yields the allocation statuses that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use futures::future::join_all;

use crate::net::wiring::{AllocNetwork, NetworkMode, NodeNetwork};
use crate::runtime::{Rootfs, Runtime, RuntimeError, TaskSpec, TaskState, Volume};

/// What the node knows of one allocation.
struct Alloc {
    assignment: pb::Assignment,
    /// Task name -> tracking.
    tasks: BTreeMap<String, Track>,
    /// Last status sent up, to send only changes.
    reported: Option<pb::AllocStatus>,
    stopping: bool,
    /// Its network, while set up ([`Allocs::set_network`]).
    net: Option<AllocNetwork>,
    /// The address it had, reported even after its network is removed.
    ip: Option<std::net::Ipv4Addr>,
}

#[derive(Debug, Clone)]
struct Track {
    state: TaskState,
    restarts: u32,
    /// When a pending restart is due.
    restart_at: Option<Instant>,
}

/// The allocations on this node.
pub struct Allocs {
    runtime: Runtime,
    allocs: BTreeMap<String, Alloc>,
    /// Final statuses of allocations stopped without being tracked here,
    /// waiting to be reported.
    finished: Vec<pb::AllocStatus>,
    /// The node's networking, once up; see [`Allocs::set_network`].
    network: Option<Arc<NodeNetwork>>,
    /// Why there is no networking, for the message of a refused start.
    network_missing: String,
    /// Node policy: may a job ask for `network = "host"`?
    allow_host_network: bool,
}

fn alloc_of(a: &pb::Assignment) -> (&str, &str) {
    a.allocation
        .as_ref()
        .map(|x| (x.id.as_str(), x.desired.as_str()))
        .unwrap_or(("", ""))
}

/// A DNS-safe host name for an allocation: `<job>-<group>-<index>`.
fn hostname_for(a: &pb::Allocation) -> String {
    let mut h = format!("{}-{}-{}", a.job, a.group, a.index);
    h.truncate(63);
    h.trim_end_matches('-').to_string()
}

fn spec_for(a: &pb::Allocation, t: &pb::Task) -> TaskSpec {
    let mut env: BTreeMap<String, String> =
        t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in [
        ("DROVER_ALLOC_ID", a.id.clone()),
        ("DROVER_ALLOC_NAME", a.name.clone()),
        ("DROVER_ALLOC_INDEX", a.index.to_string()),
        ("DROVER_JOB", a.job.clone()),
        ("DROVER_GROUP", a.group.clone()),
        ("DROVER_TASK", t.name.clone()),
    ] {
        env.entry(k.to_string()).or_insert(v);
    }
    let res = t.resources.unwrap_or_default();
    TaskSpec {
        alloc_id: a.id.clone(),
        task: t.name.clone(),
        hostname: hostname_for(a),
        command: t.command.clone(),
        env,
        kill_timeout_ms: u64::try_from(t.kill_timeout_ms).unwrap_or(0),
        cpu_millis: u64::try_from(res.cpu_millis).unwrap_or(0),
        memory_mb: u64::try_from(res.memory_mb).unwrap_or(0),
        // The job format has no pids limit yet: the node's default.
        pids_max: crate::runtime::DEFAULT_PIDS_MAX,
        logs: t
            .logs
            .as_ref()
            .map_or_else(crate::runtime::logs::LogLimits::default, |l| {
                crate::runtime::logs::LogLimits {
                    max_size_bytes: u64::try_from(l.max_size_mb)
                        .unwrap_or(0)
                        .saturating_mul(1024 * 1024),
                    max_files: u32::try_from(l.max_files).unwrap_or(0),
                }
            }),
        rootfs: Some(
            match t.rootfs.as_ref().map(|r| (r.kind.as_str(), &r.path)) {
                Some(("dir", path)) => Rootfs::Dir {
                    path: PathBuf::from(path),
                },
                Some(("oci", path)) => Rootfs::Oci {
                    image: PathBuf::from(path),
                },
                // The scheduler validated the kind; the host view is the default.
                _ => Rootfs::Host,
            },
        ),
        // Filled in by the caller from the allocation's network.
        network: None,
        // The scheduler checked the shape; the runtime checks them against
        // the node policy and the rootfs before anything starts.
        user: Some(t.user.clone()).filter(|u| !u.is_empty()),
        workdir: (!t.workdir.is_empty()).then(|| PathBuf::from(&t.workdir)),
        volumes: t
            .volumes
            .iter()
            .map(|v| match v.kind.as_str() {
                "tmpfs" => Volume::Tmpfs {
                    target: PathBuf::from(&v.target),
                    size_mb: u64::try_from(v.size_mb).unwrap_or(0),
                },
                // "bind", the only other kind the scheduler accepts.
                _ => Volume::Bind {
                    source: PathBuf::from(&v.source),
                    target: PathBuf::from(&v.target),
                    read_only: v.read_only,
                },
            })
            .collect(),
        // Set by the runtime from the node policy.
        user_namespace: None,
        run_as: None,
    }
}

/// Wire form of a task state.
fn task_pb(name: &str, t: &Track) -> pb::TaskState {
    let mut out = pb::TaskState {
        name: name.to_string(),
        restarts: t.restarts,
        ..Default::default()
    };
    match &t.state {
        TaskState::Pending => out.state = "pending".into(),
        TaskState::Running { pid, .. } => {
            out.state = "running".into();
            out.pid = *pid;
        }
        TaskState::Exited {
            exit_code,
            signal,
            message,
            oom_killed,
            ..
        } => {
            out.state = if t.restart_at.is_some() {
                "restarting".into()
            } else {
                "exited".into()
            };
            out.exit_code = *exit_code;
            out.signal = *signal;
            // The supervisor's message says so already; make sure an OOM
            // kill is visible even in a record written by an older one.
            out.message = if *oom_killed && !message.contains("OOM") {
                format!("{message} (killed by the OOM killer)")
            } else {
                message.clone()
            };
        }
        TaskState::Failed { message } => {
            out.state = "failed".into();
            out.message = message.clone();
        }
    }
    out
}

impl Alloc {
    /// Every task has ended and none waits for a restart: the status is
    /// final.
    fn finished(&self) -> bool {
        !self.tasks.is_empty()
            && self
                .tasks
                .values()
                .all(|t| t.state.is_terminal() && t.restart_at.is_none())
    }

    fn status(&self) -> pb::AllocStatus {
        let id = alloc_of(&self.assignment).0.to_string();
        let tasks: Vec<pb::TaskState> = self.tasks.iter().map(|(n, t)| task_pb(n, t)).collect();
        let all_done = self.finished();
        let status = if self
            .tasks
            .values()
            .any(|t| matches!(t.state, TaskState::Failed { .. }))
        {
            "failed"
        } else if all_done {
            let clean = self.tasks.values().all(|t| {
                matches!(
                    t.state,
                    TaskState::Exited {
                        exit_code: Some(0),
                        ..
                    }
                )
            });
            if clean || self.stopping {
                "complete"
            } else {
                "failed"
            }
        } else if self
            .tasks
            .values()
            .any(|t| matches!(t.state, TaskState::Running { .. }) || t.restart_at.is_some())
        {
            "running"
        } else {
            "pending"
        };
        pb::AllocStatus {
            alloc_id: id,
            status: status.into(),
            tasks,
            ip: self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }
}

impl Allocs {
    /// Manager over `runtime`.
    pub fn new(runtime: Runtime) -> Allocs {
        Allocs {
            runtime,
            allocs: BTreeMap::new(),
            finished: Vec::new(),
            network: None,
            network_missing: "the node's networking is not set up yet (no subnet from the \
                              scheduler, no --subnet)"
                .into(),
            allow_host_network: false,
        }
    }

    /// Whether `a` finished (its recorded status says so) and none of its
    /// tasks has files here: it ran on this node and was collected.
    fn collected(&self, a: &pb::Assignment) -> bool {
        let (Some(alloc), Some(group)) = (&a.allocation, &a.group) else {
            return false;
        };
        matches!(alloc.status.as_str(), "complete" | "failed" | "lost")
            && group.tasks.iter().all(|t| {
                matches!(
                    self.runtime.recorded_state(&alloc.id, &t.name),
                    Err(RuntimeError::NotFound { .. })
                )
            })
    }

    /// The allocations whose files are in use: every one tracked here but
    /// those that have finished and whose end the scheduler has been told.
    pub fn in_use(&self) -> BTreeSet<String> {
        self.allocs
            .iter()
            .filter(|(_, a)| !(a.finished() && a.reported.as_ref() == Some(&a.status())))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets allocations whose files [`collect_finished`] removed, and
    /// removes their networks; the scheduler may still list them,
    /// finished: nothing is started again for them (see `converge`).
    pub async fn forget_collected(&mut self, alloc_ids: &BTreeSet<String>) {
        for id in alloc_ids {
            if self.allocs.get(id).is_none_or(Alloc::finished) {
                Self::remove_network(self.network.as_ref(), id).await;
                self.allocs.remove(id);
            }
        }
    }

    /// Lets jobs ask for the node's own network (`network = "host"`): node
    /// policy, `allow_host_network`.
    pub fn with_host_network(mut self, allow: bool) -> Allocs {
        self.allow_host_network = allow;
        self
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

    /// Sets up `alloc`'s network for its group's mode before any of its
    /// tasks starts. `fresh`: none of its tasks exists on disk yet.
    async fn network_for(
        &self,
        alloc: &pb::Allocation,
        group: &pb::Group,
        fresh: bool,
    ) -> Result<AllocNetwork, String> {
        let mode = NetworkMode::parse(&group.network)
            .map_err(|e| format!("group {:?}: {e}", group.name))?;
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
                task: crate::runtime::TaskNetwork::default(),
            });
        }
        let Some(net) = &self.network else {
            return Err(format!("cannot start allocation: {}", self.network_missing));
        };
        net.setup(&alloc.id, &hostname_for(alloc), mode, fresh)
            .await
            .map_err(|e| format!("setting up the allocation's network: {e}"))
    }

    /// Removes `alloc_id`'s network when there is any; logged on failure
    /// (retried by the next call, or by the reconcile at the next start).
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

    /// Statuses of tasks found on disk, grouped by allocation: sent in
    /// `Register` after an agent restart, before any assignment arrives.
    pub fn on_disk(&self) -> Result<Vec<pb::AllocStatus>, RuntimeError> {
        let mut by_alloc: BTreeMap<String, Vec<pb::TaskState>> = BTreeMap::new();
        for (alloc, task) in self.runtime.list()? {
            let state = self.runtime.state(&alloc, &task)?;
            let t = Track {
                state,
                restarts: 0,
                restart_at: None,
            };
            by_alloc.entry(alloc).or_default().push(task_pb(&task, &t));
        }
        Ok(by_alloc
            .into_iter()
            .map(|(alloc_id, tasks)| {
                let status = if tasks.iter().any(|t| t.state == "running") {
                    "running"
                } else if tasks.iter().all(|t| t.exit_code == Some(0)) {
                    "complete"
                } else {
                    "failed"
                };
                pb::AllocStatus {
                    alloc_id,
                    status: status.into(),
                    tasks,
                    ..Default::default()
                }
            })
            .collect())
    }

    /// Converges on `list`, the node's full assignments.
    pub async fn converge(&mut self, list: Vec<pb::Assignment>) {
        let mut wanted: BTreeMap<String, pb::Assignment> = BTreeMap::new();
        for a in list {
            let (id, _) = alloc_of(&a);
            if !id.is_empty() {
                wanted.insert(id.to_string(), a);
            }
        }
        // Tasks on disk that this process does not track (from before an
        // agent restart): wanted ones are adopted below; the rest, stopped
        // or forgotten while the agent was down, are stopped now, so nothing
        // runs that the scheduler does not know of.
        self.stop_untracked(&wanted).await;
        // Stop what is no longer listed or is marked stop.
        let mut to_stop = Vec::new();
        for (id, alloc) in &mut self.allocs {
            let stop = match wanted.get(id) {
                None => true,
                Some(a) => alloc_of(a).1 == "stop",
            };
            // One that has finished by itself keeps its final status (a
            // failed allocation must not turn "complete" for being
            // stopped): there is nothing to stop.
            if stop && !alloc.stopping && !alloc.finished() {
                alloc.stopping = true;
                to_stop.push(id.clone());
            }
        }
        let runtime = &self.runtime;
        let stops = to_stop.iter().map(|id| {
            let tasks: Vec<String> = self
                .allocs
                .get(id)
                .map(|a| a.tasks.keys().cloned().collect())
                .unwrap_or_default();
            async move {
                let mut out = Vec::new();
                for t in tasks {
                    tracing::info!(alloc_id = %id, task = %t, "stopping task");
                    let r = runtime.stop(id, &t).await;
                    out.push((t, r));
                }
                (id.clone(), out)
            }
        });
        for (id, results) in join_all(stops).await {
            let Some(alloc) = self.allocs.get_mut(&id) else {
                continue;
            };
            for (t, r) in results {
                let Some(track) = alloc.tasks.get_mut(&t) else {
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
        // Forget unlisted allocations only once their final status is out.
        let done: Vec<String> = self
            .allocs
            .iter()
            .filter(|(id, a)| {
                !wanted.contains_key(*id)
                    && a.reported.as_ref().is_some_and(|r| r == &a.status())
                    && a.tasks.values().all(|t| t.state.is_terminal())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            Self::remove_network(self.network.as_ref(), &id).await;
            self.allocs.remove(&id);
        }
        for (id, a) in &wanted {
            if let Some(alloc) = self.allocs.get_mut(id) {
                alloc.assignment = a.clone();
            }
        }

        // Start (or adopt) what is new and wanted running; not what has
        // finished here already and whose files were collected.
        let new: Vec<pb::Assignment> = wanted
            .into_values()
            .filter(|a| {
                let (id, desired) = alloc_of(a);
                desired == "run" && !self.allocs.contains_key(id) && !self.collected(a)
            })
            .collect();
        let this = &*self;
        let starts = new.into_iter().map(|a| async move {
            let mut tasks = BTreeMap::new();
            let mut net = None;
            if let (Some(alloc), Some(group)) = (&a.allocation, &a.group) {
                // The network comes first: all tasks of the allocation
                // share it, and a refused one starts no task at all.
                // Only a task with no directory at all is new: a state that
                // cannot be read right now (a partial write, EIO) belongs
                // to a task that may be running in this network.
                let fresh = group.tasks.iter().all(|t| {
                    matches!(
                        this.runtime.state(&alloc.id, &t.name),
                        Err(crate::runtime::RuntimeError::NotFound { .. })
                    )
                });
                let network = this.network_for(alloc, group, fresh).await;
                if let Err(message) = &network {
                    tracing::warn!(alloc_id = %alloc.id, %message, "allocation not started");
                }
                for t in &group.tasks {
                    let state = match &network {
                        Ok(n) => this.start_or_adopt(alloc, t, n).await,
                        Err(message) => TaskState::Failed {
                            message: message.clone(),
                        },
                    };
                    tasks.insert(
                        t.name.clone(),
                        Track {
                            state,
                            restarts: 0,
                            restart_at: None,
                        },
                    );
                }
                net = network.ok();
            }
            (a, tasks, net)
        });
        for (a, tasks, net) in join_all(starts).await {
            let id = alloc_of(&a).0.to_string();
            self.allocs.insert(
                id,
                Alloc {
                    assignment: a,
                    tasks,
                    reported: None,
                    stopping: false,
                    ip: net.as_ref().and_then(|n| n.ip),
                    net,
                },
            );
        }
    }

    /// Stops on-disk tasks of allocations that are not tracked and not
    /// wanted running, and queues their final status.
    async fn stop_untracked(&mut self, wanted: &BTreeMap<String, pb::Assignment>) {
        let on_disk = match self.runtime.list() {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot list tasks on disk");
                return;
            }
        };
        let mut by_alloc: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (alloc, task) in on_disk {
            let keep = self.allocs.contains_key(&alloc)
                || wanted.get(&alloc).is_some_and(|a| alloc_of(a).1 == "run");
            if !keep {
                by_alloc.entry(alloc).or_default().push(task);
            }
        }
        // Marked stop before this node ever started them: nothing to stop,
        // but the scheduler waits for a final status.
        for (id, a) in wanted {
            if alloc_of(a).1 == "stop"
                && !self.allocs.contains_key(id)
                && !by_alloc.contains_key(id)
            {
                self.finished.push(pb::AllocStatus {
                    alloc_id: id.clone(),
                    status: "complete".into(),
                    tasks: Vec::new(),
                    ..Default::default()
                });
            }
        }
        for (alloc, tasks) in by_alloc {
            let mut states = Vec::new();
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
                let t = Track {
                    state,
                    restarts: 0,
                    restart_at: None,
                };
                states.push(task_pb(&task, &t));
            }
            if still_running {
                continue;
            }
            Self::remove_network(self.network.as_ref(), &alloc).await;
            if wanted.contains_key(&alloc) {
                self.finished.push(pb::AllocStatus {
                    alloc_id: alloc,
                    status: "complete".into(),
                    tasks: states,
                    ..Default::default()
                });
            }
        }
    }

    /// Makes the next [`Allocs::poll`] report every allocation again, as a
    /// new scheduler session must hear them all.
    pub fn forget_reported(&mut self) {
        for a in self.allocs.values_mut() {
            a.reported = None;
        }
    }

    async fn start_or_adopt(
        &self,
        alloc: &pb::Allocation,
        t: &pb::Task,
        net: &AllocNetwork,
    ) -> TaskState {
        // A task already on disk is adopted as it is, finished or not: an
        // agent restart must neither restart a running task nor re-run one
        // that completed while it was down.
        if let Ok(state) = self.runtime.state(&alloc.id, &t.name) {
            tracing::info!(alloc_id = %alloc.id, task = %t.name, ?state, "adopted task from disk");
            return state;
        }
        let mut spec = spec_for(alloc, t);
        spec.network = Some(net.task.clone());
        match self.runtime.start(&spec).await {
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

    /// Refreshes task states, restarts exited tasks as their group's policy
    /// allows, and returns the statuses that changed since last reported.
    pub async fn poll(&mut self) -> Vec<pb::AllocStatus> {
        let now = Instant::now();
        let mut changed = std::mem::take(&mut self.finished);
        for (id, alloc) in &mut self.allocs {
            let kind = alloc.assignment.job_kind.clone();
            let policy = alloc
                .assignment
                .group
                .as_ref()
                .and_then(|g| g.restart)
                .unwrap_or_default();
            let group_tasks: Vec<pb::Task> = alloc
                .assignment
                .group
                .as_ref()
                .map(|g| g.tasks.clone())
                .unwrap_or_default();
            for (name, track) in &mut alloc.tasks {
                // A restart that is due.
                if let Some(at) = track.restart_at {
                    if alloc.stopping {
                        track.restart_at = None;
                    } else if now < at {
                        continue;
                    } else {
                        track.restart_at = None;
                        track.restarts += 1;
                        if let (Some(a), Some(t)) = (
                            &alloc.assignment.allocation,
                            group_tasks.iter().find(|t| &t.name == name),
                        ) {
                            tracing::info!(alloc_id = %id, task = %name, restarts = track.restarts, "restarting task");
                            let mut spec = spec_for(a, t);
                            spec.network = alloc.net.as_ref().map(|n| n.task.clone());
                            track.state = match self.runtime.start(&spec).await {
                                Ok(s) => s,
                                Err(e) => TaskState::Failed {
                                    message: e.to_string(),
                                },
                            };
                        }
                    }
                }
                if !track.state.is_terminal() {
                    match self.runtime.state(id, name) {
                        Ok(state) => track.state = state,
                        Err(error) => {
                            tracing::warn!(alloc_id = %id, task = %name, %error, "cannot read task state");
                        }
                    }
                }
                // The restart policy applies to every exit not yet acted on,
                // however it was seen: a task can exit before `start` even
                // returns. `restarts` bounds it.
                if track.restart_at.is_none() && !alloc.stopping {
                    if let TaskState::Exited { exit_code, .. } = &track.state {
                        let wants_restart = (kind != "batch" || *exit_code != Some(0))
                            && i64::from(track.restarts) < policy.attempts;
                        if wants_restart {
                            let delay = u64::try_from(policy.delay_ms).unwrap_or(0);
                            track.restart_at =
                                now.checked_add(Duration::from_millis(delay)).or(Some(now));
                        }
                    }
                }
            }
            // A stop that failed earlier is tried again; so is stopping the
            // surviving tasks of an allocation that failed for good.
            let failed = alloc.status().status == "failed";
            if failed {
                for track in alloc.tasks.values_mut() {
                    track.restart_at = None;
                }
            }
            if alloc.stopping || failed {
                for (name, track) in &mut alloc.tasks {
                    if track.state.is_terminal() {
                        continue;
                    }
                    match self.runtime.stop(id, name).await {
                        Ok(state) => track.state = state,
                        Err(error) => {
                            tracing::warn!(alloc_id = %id, task = %name, %error, "stop failed; will retry");
                        }
                    }
                }
            }
            let st = alloc.status();
            // Over for good: nothing of it runs or will be restarted.
            let over = matches!(st.status.as_str(), "complete" | "failed")
                && alloc.tasks.values().all(|t| t.state.is_terminal());
            if over && alloc.net.is_some() && Self::remove_network(self.network.as_ref(), id).await
            {
                alloc.net = None;
            }
            if alloc.reported.as_ref() != Some(&st) {
                alloc.reported = Some(st.clone());
                changed.push(st);
            }
        }
        changed
    }

    /// The only task of an allocation, or the one named; for logs.
    pub fn log_task(&self, alloc_id: &str, task: &str) -> Result<String, String> {
        let tasks: Vec<String> = match self.allocs.get(alloc_id) {
            Some(a) => a.tasks.keys().cloned().collect(),
            None => self
                .runtime
                .list()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(a, _)| a == alloc_id)
                .map(|(_, t)| t)
                .collect(),
        };
        if tasks.is_empty() {
            return Err(format!("allocation {alloc_id} has no tasks on this node"));
        }
        if !task.is_empty() {
            return if tasks.iter().any(|t| t == task) {
                Ok(task.to_string())
            } else {
                Err(format!(
                    "allocation {alloc_id} has no task {task:?} (it has: {})",
                    tasks.join(", ")
                ))
            };
        }
        match tasks.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(format!(
                "allocation {alloc_id} has several tasks ({}); name one with --task",
                tasks.join(", ")
            )),
        }
    }
}

/// Removes the directories (logs, overlay upper dir, state) of finished
/// allocations not in `in_use` once every task of theirs ended more than
/// `keep` ago, as Nomad's client garbage-collects dead allocations:
/// `drover logs` works on a finished allocation until then. A whole
/// allocation or nothing: a task is never removed while another of its
/// allocation may still run (it would be started again). Only recorded
/// states are read, nothing is settled here. Blocking file-system work:
/// run it off the async loop. Returns the allocations removed.
pub fn collect_finished(
    runtime: &Runtime,
    in_use: &BTreeSet<String>,
    keep: Duration,
) -> BTreeSet<String> {
    let tasks = match runtime.list() {
        Ok(tasks) => tasks,
        Err(error) => {
            tracing::warn!(%error, "listing task directories for garbage collection");
            return BTreeSet::new();
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0);
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let mut by_alloc: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (alloc_id, task) in tasks {
        by_alloc.entry(alloc_id).or_default().push(task);
    }
    let mut removed = BTreeSet::new();
    for (alloc_id, tasks) in by_alloc {
        if in_use.contains(&alloc_id) {
            continue;
        }
        let old_enough = tasks.iter().all(|task| {
            let ended_ms = match runtime.recorded_state(&alloc_id, task) {
                Ok(Some(TaskState::Exited {
                    finished_unix_ms, ..
                })) => finished_unix_ms,
                // No time in the record: when it was written.
                Ok(Some(TaskState::Failed { .. })) => runtime
                    .task_dir(&alloc_id, task)
                    .ok()
                    .and_then(|d| std::fs::metadata(d.join("state.json")).ok())
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .unwrap_or(now),
                // Starting, running, or not recorded yet.
                _ => return false,
            };
            now.saturating_sub(ended_ms) >= keep_ms
        });
        if !old_enough {
            continue;
        }
        let mut all = true;
        for task in &tasks {
            if let Err(error) = runtime.remove(&alloc_id, task) {
                all = false;
                tracing::warn!(alloc_id = %alloc_id, task = %task, %error, "garbage-collecting a finished task");
            }
        }
        if all {
            tracing::info!(alloc_id = %alloc_id, tasks = tasks.len(), "finished allocation garbage-collected");
            removed.insert(alloc_id);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocs(allow_host: bool) -> (tempfile::TempDir, Allocs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(
            dir.path().join("allocs"),
            PathBuf::from("/nonexistent/drover"),
        );
        (dir, Allocs::new(rt).with_host_network(allow_host))
    }

    fn group(network: &str) -> pb::Group {
        pb::Group {
            name: "web".into(),
            network: network.into(),
            ..Default::default()
        }
    }

    fn alloc() -> pb::Allocation {
        pb::Allocation {
            id: "a1".into(),
            job: "j".into(),
            group: "web".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn host_network_needs_the_node_policy() {
        let (_d, refused) = allocs(false);
        let err = refused
            .network_for(&alloc(), &group("host"), true)
            .await
            .expect_err("refused");
        assert!(err.contains("allow_host_network"), "{err}");
        let (_d, allowed) = allocs(true);
        let net = allowed
            .network_for(&alloc(), &group("host"), true)
            .await
            .expect("allowed");
        assert_eq!(net.mode, NetworkMode::Host);
        assert_eq!(net.task.netns, None);
    }

    #[tokio::test]
    async fn without_node_networking_a_bridged_allocation_is_refused_with_the_reason() {
        let (_d, mut a) = allocs(false);
        a.set_network(Err("no subnet: pass --subnet".into()));
        let err = a
            .network_for(&alloc(), &group(""), true)
            .await
            .expect_err("refused");
        assert!(err.contains("pass --subnet"), "{err}");
        let err = a
            .network_for(&alloc(), &group("overlay"), true)
            .await
            .expect_err("refused");
        assert!(err.contains("network mode"), "{err}");
    }
}
