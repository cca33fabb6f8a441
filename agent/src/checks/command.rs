//! An exec check: the command runs in its task exactly as `drover exec`
//! runs one (the same helper, [`crate::exec::helper`]: all the task's
//! namespaces, its cgroup, environment and user), without a terminal and
//! with no input, its stdout and stderr on one pipe whose first
//! [`MAX_CHECK_OUTPUT`] bytes are kept. Exit 0 passes.
//!
//! The runner's timeout drops this future: the helper is killed
//! (`kill_on_drop`), and the command with it (it dies with its helper,
//! `PR_SET_PDEATHSIG`).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drover_model::check::MAX_CHECK_OUTPUT;
use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::Outcome;
use crate::exec::{helper_request, parse_report, spawn_helper, ExecCommand, HelperReport};
use crate::runtime::Runtime;

/// How long output is still read after the command exited (a background
/// process it started may hold the pipe open).
const OUTPUT_DRAIN: Duration = Duration::from_millis(100);

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `command` in `task` of `alloc_id`.
pub(super) async fn run(
    runtime: Arc<Runtime>,
    exe: PathBuf,
    alloc_id: String,
    task: String,
    command: Vec<String>,
) -> Outcome {
    match run_inner(runtime, exe, alloc_id, task, command).await {
        Ok(outcome) => outcome,
        Err(message) => Outcome::fail(message),
    }
}

async fn run_inner(
    runtime: Arc<Runtime>,
    exe: PathBuf,
    alloc_id: String,
    task: String,
    command: Vec<String>,
) -> Result<Outcome, String> {
    // Reads the task's state and spec files: off the async loop.
    let request = tokio::task::spawn_blocking(move || {
        helper_request(
            &runtime,
            &ExecCommand {
                alloc_id: &alloc_id,
                task: &task,
                command: &command,
                env: &[],
                user: "",
                tty: None,
            },
        )
    })
    .await
    .map_err(|e| format!("exec check setup: {e}"))??;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let out_w2 = out_w.try_clone().map_err(|e| format!("dup: {e}"))?;
    let stdio = [Stdio::null(), Stdio::from(out_w), Stdio::from(out_w2)];
    // The control pipe's write end is held until the end: its closing
    // tells the helper to kill the command.
    let (mut child, _control, report_r) = spawn_helper(&exe, request, stdio)?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut reader = tokio::spawn(read_capped(out_r, Arc::clone(&output)));
    let _abort_reader = AbortOnDrop(reader.abort_handle());
    let mut report =
        pipe::Receiver::from_owned_fd(report_r).map_err(|e| format!("report pipe: {e}"))?;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for the exec helper: {e}"))?;
    let mut report_buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), report.read_to_end(&mut report_buf)).await;
    // Let the reader take what the command wrote before it exited.
    let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut reader).await;
    let text = {
        let out = output.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&out).into_owned()
    };
    Ok(match parse_report(&report_buf) {
        Some(HelperReport::Exited { code: 0 }) => Outcome::pass(text),
        Some(HelperReport::Exited { code }) => {
            Outcome::fail(with_reason(text, format!("exit code {code}")))
        }
        Some(HelperReport::Signaled { signal }) => {
            Outcome::fail(with_reason(text, format!("killed by signal {signal}")))
        }
        Some(HelperReport::Failed { message, .. }) => Outcome::fail(message),
        None => Outcome::fail(format!("the exec helper ended without a report ({status})")),
    })
}

/// The command's output, or `reason` when it printed nothing.
fn with_reason(text: String, reason: String) -> String {
    if text.trim().is_empty() {
        reason
    } else {
        text
    }
}

/// Reads `from` to its end, keeping the first [`MAX_CHECK_OUTPUT`] bytes
/// (the rest is read and dropped, so the command never blocks on a full
/// pipe).
async fn read_capped(from: OwnedFd, into: Arc<Mutex<Vec<u8>>>) {
    let Ok(mut from) = pipe::Receiver::from_owned_fd(from) else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut c = into.lock().unwrap_or_else(PoisonError::into_inner);
        let room = MAX_CHECK_OUTPUT.saturating_sub(c.len());
        c.extend_from_slice(&buf[..n.min(room)]);
    }
}
