//! Launching one task: its directory and files, the detached supervisor
//! process, and the wait for the supervisor's first report (running,
//! exited or failed), for [`Runtime::start`].

use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};
use tokio::time::{sleep, Instant};
use tracing::{debug, info, warn};

use super::files::{
    open_append, sync_written, write_json, write_json_with, Durability, TaskDir, SUPERVISE_ARG,
};
use super::{
    PidFd, ResolvedImage, Runtime, RuntimeError, TaskSpec, TaskState, EXIT_POLL_INTERVAL,
    POLL_INTERVAL, START_TIMEOUT,
};
use crate::io_error::IoError;

impl Runtime {
    /// Writes the task's files, spawns its supervisor and waits until it
    /// reports; on a timeout kills what it started.
    pub(super) async fn spawn_and_wait(
        &self,
        dir: &TaskDir,
        spec: &TaskSpec,
        image: Option<&ResolvedImage>,
    ) -> Result<TaskState, RuntimeError> {
        let (alloc_id, task) = (spec.alloc_id.as_str(), spec.task.as_str());
        self.write_task_files(dir, spec, image)?;
        let mut child = self.spawn_supervisor(dir)?;
        let supervisor_pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        debug!(alloc_id = %alloc_id, task = %task, supervisor_pid, "supervisor spawned");
        // The spec and image record reach the disk while the supervisor
        // starts (it reads them from the page cache).
        let written = [Some(dir.spec()), image.map(|_| dir.image())];
        let spec_synced =
            tokio::task::spawn_blocking(move || sync_written(written.iter().flatten()));
        let state = match first_report(dir, &mut child).await? {
            Some(state) => state,
            None => {
                warn!(alloc_id = %alloc_id, task = %task, supervisor_pid, "supervisor did not report; killing it");
                let _ = child.start_kill();
                let _ = child.wait().await;
                if let Some(TaskState::Running { pid, .. }) = dir.read_state()? {
                    if let Ok(Some(fd)) = PidFd::open(pid) {
                        let _ = fd.signal(Signal::SIGKILL);
                    }
                }
                return Err(RuntimeError::Timeout {
                    what: "the supervisor to start the task",
                    task_dir: dir.dir.clone(),
                    after: START_TIMEOUT,
                });
            }
        };
        match spec_synced.await {
            Ok(Ok(())) => {}
            // The task runs and its spec is written; only a power loss
            // could now lose the record of it (and the task with it).
            Ok(Err(error)) => {
                warn!(alloc_id = %alloc_id, task = %task, %error, "the task's spec may not survive a power loss")
            }
            Err(error) => {
                warn!(alloc_id = %alloc_id, task = %task, %error, "syncing the task's spec")
            }
        }
        // Reap the supervisor whenever it ends; if the agent dies first, the
        // supervisor is re-parented and reaped by init instead.
        let (a, t) = (alloc_id.to_owned(), task.to_owned());
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => debug!(alloc_id = %a, task = %t, %status, "supervisor exited"),
                Err(e) => warn!(alloc_id = %a, task = %t, error = %e, "waiting for supervisor"),
            }
        });
        match &state {
            TaskState::Running { pid, .. } => {
                info!(alloc_id = %alloc_id, task = %task, pid, supervisor_pid, "task running")
            }
            other => {
                info!(alloc_id = %alloc_id, task = %task, state = ?other, "task did not keep running")
            }
        }
        Ok(state)
    }

    /// The task directory with what the supervisor reads: `spec.json`,
    /// `image.json` (or none), `cgroup.json`.
    fn write_task_files(
        &self,
        dir: &TaskDir,
        spec: &TaskSpec,
        image: Option<&ResolvedImage>,
    ) -> Result<(), RuntimeError> {
        fs::create_dir_all(&dir.dir).map_err(IoError::on("create directory", &dir.dir))?;
        // Every task's root is the same host uid (one range per node): the
        // allocation's directory (specs with their env, logs, the overlay
        // upper dirs) must not be reachable by another task that sees the
        // host's files (`Rootfs::Host`). Only root (agent, supervisor,
        // exec helper) enters it; tasks use their mounts.
        if let Some(alloc_dir) = dir.dir.parent() {
            fs::set_permissions(
                alloc_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .map_err(IoError::on("chmod 0700", alloc_dir))?;
        }
        // Both made durable while the supervisor starts, and before `start`
        // returns.
        write_json_with(&dir.spec(), spec, Durability::ProcessCrash)?;
        match image {
            Some(image) => write_json_with(&dir.image(), image, Durability::ProcessCrash)?,
            None => match fs::remove_file(dir.image()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(IoError::new("remove", dir.image(), e).into());
                }
                _ => {}
            },
        }
        write_json_with(&dir.cgroup(), &self.cgroups, Durability::ProcessCrash)
    }

    /// `drover __supervise <dir>`, detached.
    fn spawn_supervisor(&self, dir: &TaskDir) -> Result<Child, RuntimeError> {
        let log = open_append(&dir.supervisor_log())?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg(SUPERVISE_ARG)
            .arg(&dir.dir)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            // The supervisor writes a byte here once the task runs, so that
            // we need not poll state.json; EOF when it exits.
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // A process group of its own from the first instruction, so
            // that no terminal or group signal meant for the agent (Ctrl-C
            // on `drover dev`) reaches it or the task (which gets a session
            // of its own).
            .process_group(0)
            .kill_on_drop(false);
        // No `pre_exec`: without one the standard library spawns with
        // posix_spawn (vfork-like: no copy of the agent's page tables), a
        // few hundred microseconds to milliseconds less per start than a
        // fork.
        command
            .spawn()
            .map_err(|source| RuntimeError::SpawnSupervisor {
                exe: self.exe.clone(),
                task_dir: dir.dir.clone(),
                source,
            })
    }
}

/// Waits for the supervisor's first state past pending; `None` when it did
/// not report within [`START_TIMEOUT`].
async fn first_report(dir: &TaskDir, child: &mut Child) -> Result<Option<TaskState>, RuntimeError> {
    let mut report = child.stdout.take();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(state) = dir.read_state()? {
            if state != TaskState::Pending {
                return Ok(Some(state));
            }
        }
        let exited = child
            .try_wait()
            .map_err(IoError::on("waitpid supervisor", &dir.dir))?;
        if let Some(status) = exited {
            return supervisor_ended(dir, status).map(Some);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        wait_for_word(&mut report).await;
    }
}

/// The state of a task whose supervisor exited before reporting one.
fn supervisor_ended(
    dir: &TaskDir,
    status: std::process::ExitStatus,
) -> Result<TaskState, RuntimeError> {
    // It may have written its final state just before exiting.
    if let Some(state) = dir.read_state()?.filter(|s| *s != TaskState::Pending) {
        return Ok(state);
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("with code {code}"),
        (None, Some(sig)) => format!("by signal {sig}"),
        _ => "abnormally".to_owned(),
    };
    let state = TaskState::Failed {
        message: format!(
            "supervisor exited {how} before starting the task; see {}",
            dir.supervisor_log().display()
        ),
    };
    write_json(&dir.state(), &state)?;
    Ok(state)
}

/// Woken by the supervisor's report (or EOF: it is exiting, and `try_wait`
/// will see it within a millisecond or so), or after a poll interval.
async fn wait_for_word(report: &mut Option<ChildStdout>) {
    match report.as_mut() {
        Some(out) => {
            let mut byte = [0u8; 8];
            tokio::select! {
                read = out.read(&mut byte) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        *report = None;
                    }
                }
                () = sleep(POLL_INTERVAL) => {}
            }
        }
        None => sleep(EXIT_POLL_INTERVAL).await,
    }
}
