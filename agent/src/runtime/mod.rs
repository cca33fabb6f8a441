//! Container runtime: starts, observes and stops tasks, each under its own
//! supervisor process.
//!
//! The agent never parents a task directly. [`Runtime::start`] re-executes the
//! `drover` binary as `drover __supervise <task_dir>` in a new session; that
//! supervisor ([`supervise_main`]) unshares PID, mount, UTS, IPC and network
//! namespaces, runs the task as PID 1 of its PID namespace and records each
//! transition in `<task_dir>/state.json`. The files in the task directory are
//! the whole interface between the two, so an agent that is killed or
//! upgraded loses no task and no exit status: a new agent finds the tasks
//! with [`Runtime::list`] and reads them with [`Runtime::state`].
//!
//! Each task runs in its own cgroup `<parent>/<alloc_id>/<task>` (see
//! [`crate::cgroup`]; v1 or v2, whichever the host has) limiting memory, CPU
//! and pids; an OOM kill is reported as such ([`TaskState::Exited`]
//! `oom_killed`). Before exec the task gets rlimits, a Docker-like
//! capability bounding set and `no_new_privs` ([`KEPT_CAPABILITIES`]).
//!
//! A task may get a root filesystem of its own ([`Rootfs`]: a read-only view
//! of the host, an overlay over a rootfs directory, or an overlay over the
//! unpacked layers of a local OCI image, see [`ImageCache`]), entered with
//! `pivot_root`, with a fresh `/proc`, a minimal `/dev`, a read-only `/sys`
//! and tmpfs `/tmp`; without one it shares the host's mount tree.
//!
//! Every task also gets a cgroup namespace (rooted at its own cgroup) and,
//! unless the node policy turns it off, a user namespace: container ids
//! `0..size` are host ids `host_base..` ([`IdMap`], from
//! [`NodePolicy::user_namespace`]), joined as the task's last step before
//! exec, so root inside has no capability over any of its other namespaces
//! (see `identity.rs`). Overlay lower layers (a `dir` rootfs, an image's
//! layers) are mounted idmapped into it, so their files keep their owners
//! inside; what the task writes lands in its upper dir owned by the mapped
//! ids. The task runs as [`TaskSpec::user`] (looked up in its own
//! `/etc/passwd`), in [`TaskSpec::workdir`], with [`TaskSpec::volumes`]
//! (bind mounts of host paths the policy allows, tmpfs). [`Runtime::start`]
//! checks all of it against the node policy ([`Runtime::with_policy`])
//! before anything exists (`admit.rs`); [`Runtime::collect_image_garbage`]
//! drops image layers no task uses.

mod admit;
mod error;
mod files;
mod identity;
mod image_cache;
mod launch;
mod limits;
pub mod logs;
mod mask;
mod oci;
mod pidfd;
mod pull;
mod rootfs;
mod spec;
mod state_watch;
mod supervisor;
mod task_cgroup;
mod volume;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::{sleep, Instant};
use tracing::{debug, info, warn};

use crate::io_error::IoError;
use crate::policy::NodePolicy;
pub use error::{RuntimeError, SpecProblem};
use files::{
    now_unix_ms, process_alive, read_pid, supervisor_alive, validate_name, write_json, TaskDir,
};
pub(crate) use identity::resolve_user_in_root;
pub use identity::{IdMap, IdentityError, RunAs};
pub(crate) use limits::Hardening;
pub use limits::{
    CgroupPlacement, DEFAULT_CGROUP_PARENT, DEFAULT_CGROUP_ROOT, KEPT_CAPABILITIES, NOFILE_LIMIT,
};
pub use mask::{MASKED_PATHS, READONLY_PATHS};
pub use oci::{
    choose_garbage, CacheListing, CachePin, CachedImage, CachedLayer, ImageCache, ImageDefaults,
    ImageRecord, LayerUse, OciError, ResolvedImage,
};
pub(crate) use pidfd::PidFd;
pub use pull::PullEvent;
pub use rootfs::{MountError, Rootfs, RootfsError, DEV_ENTRIES, DEV_NODES};
use spec::resolve_command_in_layers;
pub use spec::{TaskNetwork, TaskSpec, TaskState, DEFAULT_PIDS_MAX};
pub use state_watch::StateWatch;
pub use supervisor::supervise_main;
pub use volume::{Volume, VolumeError, DEFAULT_TMPFS_MB, HOST_WRITABLE_DIRS, RESERVED_TARGETS};

/// `PATH` given to a task whose environment does not set one; also the
/// search path used to validate a bare command name.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long [`Runtime::start`] waits for the supervisor to report.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Runtime::stop`] waits for the final state after SIGKILL.
const FINAL_STATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between reads of `state.json` while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// An idle task cgroup this old is a leftover, not one being set up: a
/// supervisor moves its task in well within [`START_TIMEOUT`].
const STALE_CGROUP_AGE: Duration = Duration::from_secs(30);
/// Interval between `waitpid` polls of a supervisor that closed its stdout.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How long the runtime retries removing a cgroup that still lists tasks.
const CGROUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts, observes and stops supervised tasks below one state directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    state_root: PathBuf,
    exe: PathBuf,
    proc_root: PathBuf,
    cgroups: CgroupPlacement,
    images: ImageCache,
    policy: NodePolicy,
    puller: oci::registry::Puller,
    pull_events: tokio::sync::broadcast::Sender<pull::PullEvent>,
}

impl Runtime {
    /// `state_root` e.g. `<data_dir>/allocs`; `exe` is the drover binary to
    /// re-execute as the supervisor (`std::env::current_exe()` in production).
    /// OCI image layers are cached in `<state_root>/../images` unless
    /// [`Runtime::with_image_cache`] says otherwise.
    pub fn new(state_root: PathBuf, exe: PathBuf) -> Self {
        let images = ImageCache::new(
            state_root
                .parent()
                .map_or_else(|| state_root.join("images"), |p| p.join("images")),
        );
        Self {
            state_root,
            exe,
            proc_root: PathBuf::from("/proc"),
            cgroups: CgroupPlacement::default(),
            images,
            policy: NodePolicy::default(),
            puller: oci::registry::Puller::default(),
            pull_events: tokio::sync::broadcast::channel(pull::PULL_EVENTS_QUEUE).0,
        }
    }

    /// Enforces `policy` on every task started from now on: rootfs dirs,
    /// images and bind volume sources it allows, and the user namespace
    /// every task gets ([`NodePolicy::default`] until this is called:
    /// user namespaces on, no host path allowed).
    pub fn with_policy(mut self, policy: NodePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The node policy in force.
    pub fn policy(&self) -> &NodePolicy {
        &self.policy
    }

    /// Caches unpacked OCI image layers below `root` (`<root>/layers/<sha256>/`)
    /// instead of `<state_root>/../images`. The path must not contain `,`,
    /// `:` or `\` (layer directories become overlay options).
    pub fn with_image_cache(mut self, root: PathBuf) -> Self {
        self.images = ImageCache::new(root);
        self
    }

    /// The cache of unpacked OCI image layers.
    pub fn image_cache(&self) -> &ImageCache {
        &self.images
    }

    /// Puts tasks' cgroups below `parent` (relative to each hierarchy, e.g.
    /// `drover`) under the cgroupfs `root` instead of the defaults
    /// ([`DEFAULT_CGROUP_ROOT`], [`DEFAULT_CGROUP_PARENT`]).
    pub fn with_cgroups(mut self, root: PathBuf, parent: PathBuf) -> Self {
        self.cgroups = CgroupPlacement { root, parent };
        self
    }

    /// Reads process liveness from `proc_root` instead of `/proc` (tests).
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// The directory of one task: `<state_root>/<alloc_id>/<task>`.
    pub fn task_dir(&self, alloc_id: &str, task: &str) -> Result<PathBuf, RuntimeError> {
        validate_name("alloc id", alloc_id)?;
        validate_name("task name", task)?;
        Ok(self.state_root.join(alloc_id).join(task))
    }

    fn existing_dir(&self, alloc_id: &str, task: &str) -> Result<TaskDir, RuntimeError> {
        let dir = TaskDir::new(self.task_dir(alloc_id, task)?);
        if dir.dir.is_dir() {
            Ok(dir)
        } else {
            Err(RuntimeError::NotFound {
                alloc_id: alloc_id.to_owned(),
                task: task.to_owned(),
            })
        }
    }

    /// Validates the spec, writes `spec.json`, starts the supervisor detached
    /// and waits (up to 5 s) until it reports the task running, exited or
    /// failed. A failed start leaves no process behind.
    ///
    /// With [`Rootfs::Oci`], the image is resolved first (blobs verified,
    /// layers unpacked into the cache; see [`ImageCache::resolve`]) and its
    /// defaults applied ([`TaskSpec::with_image_defaults`]): `spec.json`
    /// holds the resulting spec and `image.json` the resolved image. A bad
    /// image is refused before any task directory or process exists.
    pub async fn start(&self, spec: &TaskSpec) -> Result<TaskState, RuntimeError> {
        let (alloc_id, task) = (spec.alloc_id.as_str(), spec.task.as_str());
        let dir = TaskDir::new(self.task_dir(alloc_id, task)?);
        spec.validate()?;
        admit::check_rootfs(&self.policy, spec)?;
        admit::check_host_root(&self.policy, spec, &self.state_root)?;
        // Held until image.json is written: no garbage collection of the
        // image cache can remove the layers this task is about to use.
        let _pin = match &spec.rootfs {
            Some(Rootfs::Oci { image }) => {
                Some(self.images.pin().map_err(|source| OciError::Cache {
                    image: image.clone(),
                    digest: String::new(),
                    op: "flock(LOCK_SH)",
                    path: self.images.root().join("lock"),
                    source,
                })?)
            }
            _ => None,
        };
        let (spec, image) = match &spec.rootfs {
            Some(Rootfs::Oci { image }) => {
                let resolved = match rootfs::registry_ref(image) {
                    Some(r) => self.pull_image(spec, &dir, &r).await?,
                    None => self.resolve_image(image).await?,
                };
                let spec = spec.with_image_defaults(image, &resolved.defaults)?;
                spec.validate()?;
                resolve_command_in_layers(&spec, image, &resolved.layers)?;
                let spec = admit::admit(&self.policy, &spec, Some(&resolved.layers))?;
                (spec, Some(resolved))
            }
            _ => (admit::admit(&self.policy, spec, None)?, None),
        };
        let spec = &spec;
        self.cgroups.validate()?;

        let created = !dir.dir.exists();
        if !created {
            self.ensure_ended(&dir, alloc_id, task)?;
            // A restart in the same directory: logs are appended to.
            for stale in [dir.state(), dir.supervisor_pid()] {
                match fs::remove_file(&stale) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(IoError::new("remove", stale, e).into());
                    }
                    _ => {}
                }
            }
        }
        self.sweep_cgroups();
        // The image's use (for `drover node images` and the cache's
        // collection) is recorded while the supervisor starts.
        let recorded = image.clone().map(|image| {
            let cache = self.images.clone();
            tokio::task::spawn_blocking(move || cache.record_use(&image, oci::now_ms()))
        });
        let result = self.spawn_and_wait(&dir, spec, image.as_ref()).await;
        if let Some(recorded) = recorded {
            match recorded.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(alloc_id = %alloc_id, task = %task, %error, "recording the image's use in the cache")
                }
                Err(error) => {
                    warn!(alloc_id = %alloc_id, task = %task, %error, "recording the image's use in the cache (task)")
                }
            }
        }
        if result.is_err() && created {
            // Nothing runs (spawn_and_wait kills what it started): undo.
            let _ = fs::remove_dir_all(&dir.dir);
            if let Some(alloc_dir) = dir.dir.parent() {
                let _ = fs::remove_dir(alloc_dir);
            }
        }
        result
    }

    /// Resolves an OCI image off the async executor ([`ImageCache::resolve`]).
    pub async fn resolve_image(&self, image: &Path) -> Result<ResolvedImage, RuntimeError> {
        let cache = self.images.clone();
        let path = image.to_owned();
        let resolved = tokio::task::spawn_blocking(move || cache.resolve(&path))
            .await
            .map_err(|e| OciError::Read {
                image: image.to_owned(),
                what: "the image (resolver task)".to_owned(),
                source: io::Error::other(e.to_string()),
            })??;
        debug!(image = %image.display(), manifest = %resolved.manifest, layers = resolved.layers.len(), "image resolved");
        Ok(resolved)
    }

    /// The task's state as last recorded in `state.json`, without settling
    /// anything (see [`Runtime::state`]); `None` before the first record.
    pub fn recorded_state(
        &self,
        alloc_id: &str,
        task: &str,
    ) -> Result<Option<TaskState>, RuntimeError> {
        self.existing_dir(alloc_id, task)?.read_state()
    }

    /// The task's current state. If `state.json` says pending or running but
    /// the supervisor is gone, the record is settled here ("supervisor
    /// died"): `Exited` without a status when the task is gone too (written
    /// back to `state.json`); while processes of the task remain they are
    /// killed and the task is still reported running.
    pub fn state(&self, alloc_id: &str, task: &str) -> Result<TaskState, RuntimeError> {
        let dir = self.existing_dir(alloc_id, task)?;
        self.observe(&dir, alloc_id, task)
    }

    fn observe(
        &self,
        dir: &TaskDir,
        alloc_id: &str,
        task: &str,
    ) -> Result<TaskState, RuntimeError> {
        let recorded = dir.read_state()?;
        if let Some(state) = recorded.as_ref().filter(|s| s.is_terminal()) {
            return Ok(state.clone());
        }
        let supervisor = read_pid(&dir.supervisor_pid())?;
        if let Some(pid) = supervisor {
            if supervisor_alive(&self.proc_root, pid, alloc_id, task) {
                return Ok(recorded.unwrap_or(TaskState::Pending));
            }
        }
        // The supervisor is gone; it may have written a final state and
        // exited between our two reads.
        let recorded = dir.read_state()?;
        let settled = match recorded {
            Some(state) if state.is_terminal() => return Ok(state),
            // Nothing would record its exit or copy its output (its next
            // write would fail with EPIPE anyway), and a restart must not
            // run beside it: the processes in its cgroup are killed, and it
            // is reported running until none is left, then exited with its
            // status lost.
            Some(state @ TaskState::Running { pid, .. })
                if self.kill_unsupervised(dir).unwrap_or_else(|error| {
                    // Not settled while its processes cannot be listed.
                    warn!(alloc_id = %alloc_id, task = %task, pid, %error, "listing the task's cgroup");
                    1
                }) > 0 =>
            {
                warn!(
                    alloc_id = %alloc_id,
                    task = %task,
                    pid,
                    supervisor = ?supervisor,
                    "supervisor died while its task runs; killed the processes of its cgroup"
                );
                return Ok(state);
            }
            Some(TaskState::Running { pid, .. }) => TaskState::Exited {
                pid,
                exit_code: None,
                signal: None,
                finished_unix_ms: now_unix_ms(),
                message: "supervisor died; the task was killed and its exit status is lost"
                    .to_owned(),
                oom_killed: false,
            },
            _ => TaskState::Failed {
                message: format!(
                    "supervisor died before starting the task; see {}",
                    dir.supervisor_log().display()
                ),
            },
        };
        warn!(alloc_id = %alloc_id, task = %task, state = ?settled, "supervisor died");
        write_json(&dir.state(), &settled)?;
        Ok(settled)
    }

    /// Refuses (`StillRunning`) while the task is pending or running, or
    /// while the process recorded running is still alive.
    fn ensure_ended(&self, dir: &TaskDir, alloc_id: &str, task: &str) -> Result<(), RuntimeError> {
        let state = self.observe(dir, alloc_id, task)?;
        if let TaskState::Pending | TaskState::Running { .. } = state {
            return Err(RuntimeError::StillRunning {
                alloc_id: alloc_id.to_owned(),
                task: task.to_owned(),
                pid: running_pid(&state),
            });
        }
        self.ensure_no_unsupervised_task(dir, alloc_id, task)
    }

    /// Refuses when `state.json` names a task that still runs although its
    /// supervisor is dead.
    fn ensure_no_unsupervised_task(
        &self,
        dir: &TaskDir,
        alloc_id: &str,
        task: &str,
    ) -> Result<(), RuntimeError> {
        match dir.read_state()? {
            Some(TaskState::Running { pid, .. }) if process_alive(&self.proc_root, pid) => {
                Err(RuntimeError::StillRunning {
                    alloc_id: alloc_id.to_owned(),
                    task: task.to_owned(),
                    pid: Some(pid),
                })
            }
            _ => Ok(()),
        }
    }

    /// Stops the task: SIGTERM, up to `kill_timeout_ms` for it to exit, then
    /// SIGKILL; returns the final state once it is recorded and the
    /// supervisor has reaped the task and exited. Idempotent on a task that
    /// has already ended.
    pub async fn stop(&self, alloc_id: &str, task: &str) -> Result<TaskState, RuntimeError> {
        let dir = self.existing_dir(alloc_id, task)?;
        let kill_timeout =
            Duration::from_millis(dir.read_spec()?.map_or(5_000, |s| s.kill_timeout_ms));
        // A supervisor that is still starting will report soon.
        let deadline = Instant::now() + START_TIMEOUT;
        while self.observe(&dir, alloc_id, task)? == TaskState::Pending {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    what: "a pending task to start before stopping it",
                    task_dir: dir.dir.clone(),
                    after: START_TIMEOUT,
                });
            }
            sleep(POLL_INTERVAL).await;
        }

        let Some(TaskState::Running { pid, .. }) = dir.read_state()? else {
            return self
                .wait_final(&dir, alloc_id, task, None, FINAL_STATE_TIMEOUT)
                .await;
        };
        let fd = PidFd::open(pid).map_err(|source| RuntimeError::Syscall {
            syscall: "pidfd_open",
            pid,
            source,
        })?;
        // Opened before re-reading: if state.json still says running and
        // the supervisor lives, it has not reaped the task, so the pidfd is
        // the task's. (Without a supervisor, init may have reaped it and
        // the pid be another process's: `observe` kills what is left in
        // the task's cgroup instead.)
        let still_running =
            matches!(dir.read_state()?, Some(TaskState::Running { pid: p, .. }) if p == pid);
        let supervised = self.supervisor_pidfd(&dir, alloc_id, task)?.is_some();
        let Some(fd) = fd.filter(|_| still_running && supervised) else {
            return self
                .wait_final(&dir, alloc_id, task, None, FINAL_STATE_TIMEOUT)
                .await;
        };
        info!(alloc_id = %alloc_id, task = %task, pid, ?kill_timeout, "stopping task (SIGTERM)");
        self.send(&fd, Signal::SIGTERM)?;
        if let Ok(state) = self
            .wait_final(&dir, alloc_id, task, Some(&fd), kill_timeout)
            .await
        {
            return Ok(state);
        }
        warn!(alloc_id = %alloc_id, task = %task, pid, "task outlived kill_timeout; SIGKILL");
        self.send(&fd, Signal::SIGKILL)?;
        self.wait_final(&dir, alloc_id, task, Some(&fd), FINAL_STATE_TIMEOUT)
            .await
    }

    fn send(&self, fd: &PidFd, sig: Signal) -> Result<(), RuntimeError> {
        fd.signal(sig).map_err(|source| RuntimeError::Syscall {
            syscall: if sig == Signal::SIGKILL {
                "pidfd_send_signal(SIGKILL)"
            } else {
                "pidfd_send_signal(SIGTERM)"
            },
            pid: fd.pid(),
            source,
        })
    }

    /// Waits up to `timeout` for the task to end by itself; returns its
    /// final state once the supervisor has recorded it, reaped the task,
    /// removed its cgroup and exited.
    pub async fn wait(
        &self,
        alloc_id: &str,
        task: &str,
        timeout: Duration,
    ) -> Result<TaskState, RuntimeError> {
        let dir = self.existing_dir(alloc_id, task)?;
        self.wait_final(&dir, alloc_id, task, None, timeout).await
    }

    /// A pidfd for the task's live supervisor, if there is one.
    fn supervisor_pidfd(
        &self,
        dir: &TaskDir,
        alloc_id: &str,
        task: &str,
    ) -> Result<Option<PidFd>, RuntimeError> {
        let Some(pid) = read_pid(&dir.supervisor_pid())? else {
            return Ok(None);
        };
        let fd = PidFd::open(pid).map_err(|source| RuntimeError::Syscall {
            syscall: "pidfd_open",
            pid,
            source,
        })?;
        // Checked after opening: the pidfd then refers to the supervisor and
        // not to a process that reused its pid.
        Ok(fd.filter(|_| supervisor_alive(&self.proc_root, pid, alloc_id, task)))
    }

    /// Waits until the state is final (and, for a `Failed` state, the task
    /// process is gone), or `timeout` passes. The supervisor exits right
    /// after recording the final state, so its exit is what wakes us; state
    /// is re-read at least every [`POLL_INTERVAL`] regardless.
    async fn wait_final(
        &self,
        dir: &TaskDir,
        alloc_id: &str,
        task: &str,
        fd: Option<&PidFd>,
        timeout: Duration,
    ) -> Result<TaskState, RuntimeError> {
        let deadline = Instant::now() + timeout;
        let supervisor = self.supervisor_pidfd(dir, alloc_id, task)?;
        loop {
            let state = self.observe(dir, alloc_id, task)?;
            let done = match &state {
                TaskState::Exited { .. } => true,
                TaskState::Failed { .. } => fd.is_none_or(PidFd::exited),
                _ => false,
            };
            if done {
                self.wait_supervisor_gone(dir, alloc_id, task).await?;
                // The supervisor removes it; not if it died. The task has
                // stopped either way: a failure here is for `remove` to report.
                if let Err(error) = self.remove_cgroup(dir, alloc_id) {
                    warn!(alloc_id = %alloc_id, task = %task, %error, "removing the task's cgroup");
                }
                return Ok(state);
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    what: "the task's final state",
                    task_dir: dir.dir.clone(),
                    after: timeout,
                });
            }
            match &supervisor {
                Some(sup) if !sup.exited() => {
                    sup.wait_exited(POLL_INTERVAL).await;
                }
                _ => sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// After the final state is on disk the supervisor reaps the task and
    /// exits; waiting for that means no task process (not even a zombie)
    /// remains when `stop` returns.
    async fn wait_supervisor_gone(
        &self,
        dir: &TaskDir,
        alloc_id: &str,
        task: &str,
    ) -> Result<(), RuntimeError> {
        let Some(supervisor) = self.supervisor_pidfd(dir, alloc_id, task)? else {
            return Ok(());
        };
        if !supervisor.wait_exited(FINAL_STATE_TIMEOUT).await {
            warn!(alloc_id = %alloc_id, task = %task, supervisor_pid = supervisor.pid(), "supervisor still alive after recording the final state");
        }
        Ok(())
    }

    /// `(alloc_id, task)` pairs with a task directory on disk, sorted; used to
    /// re-adopt tasks after an agent restart.
    pub fn list(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let mut out = Vec::new();
        for alloc in read_dir_names(&self.state_root)? {
            let alloc_dir = self.state_root.join(&alloc);
            for task in read_dir_names(&alloc_dir)? {
                if TaskDir::new(alloc_dir.join(&task)).spec().is_file() {
                    out.push((alloc.clone(), task));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the task's directory (and the alloc directory once empty),
    /// with a rootfs task's overlay upper and work dirs in it.
    /// Refuses while the task is pending or running.
    pub fn remove(&self, alloc_id: &str, task: &str) -> Result<(), RuntimeError> {
        let dir = self.existing_dir(alloc_id, task)?;
        self.ensure_ended(&dir, alloc_id, task)?;
        self.remove_cgroup(&dir, alloc_id)?;
        let had_image = dir.image().exists();
        fs::remove_dir_all(&dir.dir).map_err(IoError::on("remove directory", &dir.dir))?;
        if let Some(alloc_dir) = dir.dir.parent() {
            // Fails harmlessly while other tasks of the alloc remain.
            let _ = fs::remove_dir(alloc_dir);
        }
        debug!(alloc_id = %alloc_id, task = %task, "task directory removed");
        if had_image {
            // Its layers may have been the last use of some; best effort.
            if let Err(error) = self.collect_image_garbage() {
                warn!(alloc_id = %alloc_id, task = %task, %error, "image cache garbage collection");
            }
        }
        Ok(())
    }
}

fn running_pid(state: &TaskState) -> Option<i32> {
    match state {
        TaskState::Running { pid, .. } => Some(*pid),
        _ => None,
    }
}

/// Names of the subdirectories of `dir` that are valid ids; none if `dir`
/// does not exist.
fn read_dir_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::new("read directory", dir, e).into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(IoError::on("read directory", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if validate_name("entry", &name).is_ok() && entry.path().is_dir() {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
