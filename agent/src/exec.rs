//! `drover exec` on the node: runs a command inside a running task,
//! joining all its namespaces and its cgroup.
//!
//! The scheduler relays the CLI's `ExecRequest` frames as
//! `SchedulerMessage::ExecInput` (the first carries `start`), and this
//! module answers with `AgentMessage::ExecOutput` frames, the last one with
//! `done`. Each session spawns a helper process, `drover __exec <json>`
//! ([`helper`]): joining a mount or user namespace needs a single-threaded
//! process, which the agent is not. The helper gets three pipes for the
//! command's stdin, stdout and stderr (with a terminal, the helper relays
//! the pseudo-terminal it opened in the container over the first two), a
//! control pipe for terminal resizes, and a report pipe on which it writes
//! how the command ended ([`HelperReport`]).
//!
//! Nothing here may block the agent's session loop: input is handed to a
//! session through a bounded channel with `try_send`, and a session whose
//! command does not read its input fast enough is ended with an error.
//! Output goes up the agent's stream with `send().await`, which only
//! slows the command down (its pipe fills) when the stream is busy.

pub mod helper;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as pb;
use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

pub use helper::{exec_main, HelperReport, HelperRequest};

use crate::allocs::Allocs;
use crate::cgroup;
use crate::runtime::{
    resolve_user_in_root, CgroupPlacement, Runtime, TaskSpec, TaskState, DEFAULT_PATH,
};

/// The hidden subcommand the helper is started with.
pub const EXEC_ARG: &str = "__exec";
/// Input frames queued per session before it is ended as stuck.
const INPUT_QUEUE: usize = 256;
/// Bytes per output frame.
const CHUNK: usize = 32 * 1024;
/// How long output is still read after the command exited (a background
/// process it started may hold the pipes open forever).
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// One frame of input for a session.
#[derive(Debug)]
enum Input {
    Stdin(Vec<u8>),
    Eof,
    Resize(u32, u32),
}

#[derive(Debug)]
struct Session {
    input: mpsc::Sender<Input>,
    cancel: CancellationToken,
}

/// The exec sessions of one scheduler connection; dropping it ends them
/// all (their commands are killed).
#[derive(Debug)]
pub struct ExecSessions {
    runtime: Arc<Runtime>,
    exe: PathBuf,
    tx: mpsc::Sender<pb::AgentMessage>,
    sessions: HashMap<u64, Session>,
    all: CancellationToken,
    _end_all: DropGuard,
}

impl ExecSessions {
    /// Sessions on tasks of `runtime`, whose helpers are `exe __exec`, that
    /// answer on `tx`.
    pub fn new(runtime: Arc<Runtime>, exe: PathBuf, tx: mpsc::Sender<pb::AgentMessage>) -> Self {
        let all = CancellationToken::new();
        Self {
            runtime,
            exe,
            tx,
            sessions: HashMap::new(),
            _end_all: all.clone().drop_guard(),
            all,
        }
    }

    /// Handles one frame from the scheduler without waiting on anything.
    pub fn handle(&mut self, allocs: &Allocs, frame: pb::ExecInput) {
        self.sessions.retain(|_, s| !s.cancel.is_cancelled());
        let id = frame.request_id;
        if frame.cancel {
            if let Some(s) = self.sessions.remove(&id) {
                debug!(request_id = id, "exec session cancelled by the scheduler");
                s.cancel.cancel();
            }
            return;
        }
        let Some(req) = frame.request else { return };
        if let Some(start) = req.start {
            self.start(allocs, id, start);
            return;
        }
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let mut frames = Vec::new();
        if !req.stdin.is_empty() {
            frames.push(Input::Stdin(req.stdin));
        }
        if req.stdin_eof {
            frames.push(Input::Eof);
        }
        if let Some(size) = req.resize {
            frames.push(Input::Resize(size.rows, size.cols));
        }
        for f in frames {
            match session.input.try_send(f) {
                Ok(()) => continue,
                // The command stopped reading (it may have exited already):
                // its end is reported by the session, with its own status.
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
            warn!(
                request_id = id,
                "exec input backlog full; ending the session"
            );
            session.cancel.cancel();
            self.reply(
                id,
                error_response(
                    "the command does not read its input fast enough; session ended",
                    None,
                ),
            );
            self.sessions.remove(&id);
            return;
        }
    }

    /// Sends one final frame from a task of its own (never blocks here).
    fn reply(&self, id: u64, response: pb::ExecResponse) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(output(id, response, true)).await;
        });
    }

    fn start(&mut self, allocs: &Allocs, id: u64, start: pb::ExecStart) {
        if self.sessions.contains_key(&id) {
            return;
        }
        // The node policy's `[sessions] max_exec_sessions`.
        let limits = self.runtime.policy().sessions;
        if self.sessions.len() >= limits.max_exec_sessions {
            let error = limits.exec_refusal();
            warn!(request_id = id, %error, "exec session refused");
            let tx = self.tx.clone();
            let mut refusal = output(id, error_response(&error, None), true);
            if let Some(pb::agent_message::Msg::ExecOutput(out)) = &mut refusal.msg {
                out.limit_reached = true;
            }
            tokio::spawn(async move {
                let _ = tx.send(refusal).await;
            });
            return;
        }
        let task = match allocs.resolve_task(&start.alloc_id, &start.task) {
            Ok(t) => t,
            Err(error) => {
                self.reply(id, error_response(&error.to_string(), None));
                return;
            }
        };
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let cancel = self.all.child_token();
        self.sessions.insert(
            id,
            Session {
                input,
                cancel: cancel.clone(),
            },
        );
        let ctx = SessionCtx {
            runtime: Arc::clone(&self.runtime),
            exe: self.exe.clone(),
            tx: self.tx.clone(),
            id,
        };
        tokio::spawn(async move {
            let alloc_id = start.alloc_id.clone();
            let _done = cancel.clone().drop_guard();
            let last = match ctx.run(start, task.clone(), input_rx, cancel).await {
                Ok(Some(last)) => last,
                // Cancelled: nobody is waiting for an answer.
                Ok(None) => return,
                Err(message) => {
                    info!(request_id = id, alloc_id = %alloc_id, task = %task, %message, "exec refused");
                    error_response(&message, None)
                }
            };
            let _ = ctx.tx.send(output(id, last, true)).await;
        });
    }
}

fn output(request_id: u64, response: pb::ExecResponse, done: bool) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::ExecOutput(pb::ExecOutput {
            request_id,
            response: Some(response),
            done,
            limit_reached: false,
        })),
    }
}

fn error_response(message: &str, exit_code: Option<i32>) -> pb::ExecResponse {
    pb::ExecResponse {
        error: message.to_owned(),
        exit_code,
        ..Default::default()
    }
}

struct SessionCtx {
    runtime: Arc<Runtime>,
    exe: PathBuf,
    tx: mpsc::Sender<pb::AgentMessage>,
    id: u64,
}

/// A command to run inside a running task, as `drover exec` and exec
/// health checks ask for it.
#[derive(Debug, Clone, Copy)]
pub struct ExecCommand<'a> {
    /// The allocation.
    pub alloc_id: &'a str,
    /// Its task whose container runs the command.
    pub task: &'a str,
    /// argv.
    pub command: &'a [String],
    /// Variables added to the task's environment.
    pub env: &'a [(String, String)],
    /// Another user than the task's (`uid[:gid]` or a name), or empty.
    pub user: &'a str,
    /// `(rows, cols)` of a pseudo-terminal, or `None` for pipes.
    pub tty: Option<(u16, u16)>,
}

impl<'a> ExecCommand<'a> {
    /// `start` on `task` (the one it names, resolved); `env` holds
    /// `start.env` as pairs.
    fn from_start(start: &'a pb::ExecStart, task: &'a str, env: &'a [(String, String)]) -> Self {
        ExecCommand {
            alloc_id: &start.alloc_id,
            task,
            command: &start.command,
            env,
            user: &start.user,
            tty: start.tty.then(|| {
                let size = start.size.unwrap_or_default();
                (clamp16(size.rows, 24), clamp16(size.cols, 80))
            }),
        }
    }
}

/// The helper's request for `what`, whose task must be running: its pid,
/// namespaces' owner, cgroup, environment, user and working directory.
pub fn helper_request(runtime: &Runtime, what: &ExecCommand<'_>) -> Result<HelperRequest, String> {
    let (alloc_id, task) = (what.alloc_id, what.task);
    let state = runtime
        .state(alloc_id, task)
        .map_err(|e| format!("task {task} of allocation {alloc_id}: {e}"))?;
    let pid = match state {
        TaskState::Running { pid, .. } => pid,
        TaskState::Pending => {
            return Err(format!(
                "task {task} of allocation {alloc_id} is still starting; retry in a moment"
            ))
        }
        TaskState::Exited { message, .. } => {
            return Err(format!(
                "task {task} of allocation {alloc_id} is not running ({message})"
            ))
        }
        TaskState::Failed { message } => {
            return Err(format!(
                "task {task} of allocation {alloc_id} is not running (failed: {message})"
            ))
        }
    };
    if what.command.first().is_none_or(String::is_empty) {
        return Err("no command given: drover exec ALLOC -- COMMAND [ARG...]".to_owned());
    }
    let dir = runtime
        .task_dir(alloc_id, task)
        .map_err(|e| e.to_string())?;
    let spec_path = dir.join("spec.json");
    let spec_bytes =
        std::fs::read(&spec_path).map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let spec: TaskSpec = serde_json::from_slice(&spec_bytes)
        .map_err(|e| format!("parsing {}: {e}", spec_path.display()))?;
    let cgroup_path = dir.join("cgroup.json");
    let placement: CgroupPlacement = match std::fs::read(&cgroup_path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("parsing {}: {e}", cgroup_path.display()))?,
        Err(e) => return Err(format!("reading {}: {e}", cgroup_path.display())),
    };
    placement.validate().map_err(|e| e.to_string())?;
    let cgroups = cgroup::detect(&placement.root).map_err(|e| e.to_string())?;
    let cgroup_procs = cgroups.procs_files(&placement.task_path(&spec));

    let mut env: BTreeMap<String, String> = spec.env.clone();
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    for (k, v) in what.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(format!("-e {k}={v}: bad environment variable"));
        }
        env.insert(k.clone(), v.clone());
    }
    // As `docker exec` and `kubectl exec`: the task's own user unless the
    // caller names one (looked up in the task's files, as it sees them).
    let run_as = if what.user.is_empty() {
        spec.run_as.unwrap_or_default()
    } else {
        let root = Path::new("/proc").join(pid.to_string()).join("root");
        resolve_user_in_root(what.user, &root, spec.user_namespace.as_ref())
            .map_err(|e| format!("--user: {e}"))?
    };
    Ok(HelperRequest {
        pid,
        run_as,
        cgroup_procs,
        command: what.command.to_vec(),
        env,
        cwd: working_dir(&dir, &spec),
        tty: what.tty,
        control_fd: -1,
        report_fd: -1,
        seccomp: spec.seccomp.clone(),
    })
}

fn clamp16(v: u32, default: u16) -> u16 {
    if v == 0 {
        default
    } else {
        u16::try_from(v).unwrap_or(u16::MAX)
    }
}

/// The task's working directory: the spec's, else its image's, else `/`.
fn working_dir(dir: &Path, spec: &TaskSpec) -> PathBuf {
    if let Some(w) = spec.workdir.as_ref().filter(|w| w.is_absolute()) {
        return w.clone();
    }
    std::fs::read(dir.join("image.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::runtime::ResolvedImage>(&b).ok())
        .and_then(|i| i.defaults.working_dir)
        .filter(|w| !w.is_empty())
        .map_or_else(|| PathBuf::from("/"), |w| Path::new("/").join(w))
}

impl SessionCtx {
    /// Runs one session; `Ok(None)` when it was cancelled, otherwise the
    /// last frame to send.
    async fn run(
        &self,
        start: pb::ExecStart,
        task: String,
        input: mpsc::Receiver<Input>,
        cancel: CancellationToken,
    ) -> Result<Option<pb::ExecResponse>, String> {
        let id = self.id;
        let alloc_id = start.alloc_id.clone();
        let env: Vec<(String, String)> = start.env.clone().into_iter().collect();
        let what = ExecCommand::from_start(&start, &task, &env);
        let request = helper_request(&self.runtime, &what)?;
        let (mut child, control_w, report_r) = spawn_helper(
            &self.exe,
            request,
            [Stdio::piped(), Stdio::piped(), Stdio::piped()],
        )?;
        info!(request_id = id, alloc_id = %alloc_id, task = %task, command = ?start.command, tty = start.tty, helper_pid = child.id(), "exec session started");

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let control = tokio::net::unix::pipe::Sender::from_owned_fd(control_w)
            .map_err(|e| format!("control pipe: {e}"))?;
        let mut report = tokio::net::unix::pipe::Receiver::from_owned_fd(report_r)
            .map_err(|e| format!("report pipe: {e}"))?;

        let feeder = tokio::spawn(feed(input, stdin, control));
        let out = stdout.map(|s| tokio::spawn(pump(s, self.tx.clone(), id, false)));
        let err = stderr.map(|s| tokio::spawn(pump(s, self.tx.clone(), id, true)));
        let abort_all = || {
            feeder.abort();
            if let Some(h) = &out {
                h.abort();
            }
            if let Some(h) = &err {
                h.abort();
            }
        };

        let mut report_buf = Vec::new();
        let status = tokio::select! {
            status = child.wait() => status,
            () = cancel.cancelled() => {
                // The helper's death kills the command (PR_SET_PDEATHSIG).
                let _ = child.start_kill();
                let _ = child.wait().await;
                abort_all();
                info!(request_id = id, alloc_id = %alloc_id, task = %task, "exec session cancelled; command killed");
                return Ok(None);
            }
        };
        feeder.abort();
        let _ =
            tokio::time::timeout(Duration::from_secs(1), report.read_to_end(&mut report_buf)).await;
        // Output the command wrote before it exited comes first.
        let drain = async {
            if let Some(h) = out {
                let _ = h.await;
            }
            if let Some(h) = err {
                let _ = h.await;
            }
        };
        if tokio::time::timeout(OUTPUT_DRAIN, drain).await.is_err() {
            debug!(
                request_id = id,
                "exec output still open after the command exited; not waiting"
            );
        }
        let last = last_frame(&report_buf, status);
        info!(request_id = id, alloc_id = %alloc_id, task = %task, exit_code = ?last.exit_code, signal = ?last.signal, error = %last.error, "exec session ended");
        Ok(Some(last))
    }
}

/// Spawns `exe __exec <request>` with `stdio` (stdin, stdout, stderr), a
/// control pipe and a report pipe; returns it, the control pipe's write
/// end (its closing kills the command) and the report's read end (one
/// [`HelperReport`] line, see [`parse_report`]). The helper is killed
/// when the returned child is dropped, and the command with it.
pub fn spawn_helper(
    exe: &Path,
    mut request: HelperRequest,
    stdio: [Stdio; 3],
) -> Result<(tokio::process::Child, OwnedFd, OwnedFd), String> {
    let (control_r, control_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    request.control_fd = control_r.as_raw_fd();
    request.report_fd = report_w.as_raw_fd();
    let json = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    let inherit = [request.control_fd, request.report_fd];

    let [stdin, stdout, stderr] = stdio;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(EXEC_ARG)
        .arg(json)
        .env_clear()
        .current_dir("/")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec and only calls
    // fcntl(2) and setsid(2), which are async-signal-safe, on integers
    // captured by value. The two descriptors stay open in the agent
    // until the spawn returns.
    unsafe {
        command.pre_exec(move || {
            for fd in inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Out of the agent's session: a terminal's signals for the
            // agent must not reach the helper.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("spawning {} {EXEC_ARG}: {e}", exe.display()))?;
    drop(control_r);
    drop(report_w);
    Ok((child, control_w, report_r))
}

/// The helper's report, from what it wrote on its report pipe; `None`
/// when it wrote none (it died first).
pub fn parse_report(report: &[u8]) -> Option<HelperReport> {
    report
        .split(|b| *b == b'\n')
        .find(|l| !l.is_empty())
        .and_then(|l| serde_json::from_slice(l).ok())
}

/// The session's last frame, from the helper's report (or, without one,
/// the helper's exit status).
fn last_frame(
    report: &[u8],
    status: std::io::Result<std::process::ExitStatus>,
) -> pb::ExecResponse {
    match parse_report(report) {
        Some(HelperReport::Exited { code }) => pb::ExecResponse {
            exit_code: Some(code),
            ..Default::default()
        },
        Some(HelperReport::Signaled { signal }) => pb::ExecResponse {
            signal: Some(signal),
            ..Default::default()
        },
        Some(HelperReport::Failed { message, code }) => error_response(&message, Some(code)),
        None => {
            let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            error_response(
                &format!("the exec helper ended without a report ({how})"),
                Some(125),
            )
        }
    }
}

/// Writes stdin frames to the helper and resizes to its control pipe.
async fn feed(
    mut input: mpsc::Receiver<Input>,
    mut stdin: Option<tokio::process::ChildStdin>,
    control: tokio::net::unix::pipe::Sender,
) {
    let mut control = Some(control);
    while let Some(frame) = input.recv().await {
        match frame {
            Input::Stdin(data) => {
                if let Some(s) = stdin.as_mut() {
                    if s.write_all(&data).await.is_err() {
                        // The command closed its input; the rest is dropped.
                        stdin = None;
                    }
                }
            }
            Input::Eof => stdin = None,
            Input::Resize(rows, cols) => {
                if let Some(c) = control.as_mut() {
                    let line = format!("{rows} {cols}\n");
                    if c.write_all(line.as_bytes()).await.is_err() {
                        control = None;
                    }
                }
            }
        }
    }
    // Keep the control pipe open until the session ends: its end of file
    // tells the helper to kill the command.
    std::future::pending::<()>().await;
    drop(control);
}

/// Sends what `from` yields as stdout (or stderr) frames until end of file.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    tx: mpsc::Sender<pb::AgentMessage>,
    id: u64,
    is_stderr: bool,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf[..n].to_vec();
        let response = if is_stderr {
            pb::ExecResponse {
                stderr: data,
                ..Default::default()
            }
        } else {
            pb::ExecResponse {
                stdout: data,
                ..Default::default()
            }
        };
        if tx.send(output(id, response, false)).await.is_err() {
            return;
        }
    }
}
