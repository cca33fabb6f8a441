//! `drover exec`: runs a command inside a running allocation's task,
//! streaming stdin, stdout and stderr over `AllocService.Exec`.
//!
//! With a terminal (`-t`, or by default when stdin is one) the local
//! terminal is put in raw mode for the session, restored on every way out
//! (normal end, error, SIGTERM/SIGHUP/SIGINT), and its size is sent at the
//! start and on each SIGWINCH.
//!
//! Exit status: the command's; 128 + N when signal N killed it; 125 when
//! Drover could not run it (the allocation does not exist or is not
//! running, the node is gone, ...); 126/127 when the command cannot be
//! executed or is not found in the container (as Docker).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{anyhow, bail, Context, Result};
use drover_proto::v1 as pb;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::resolve_alloc;
use crate::connect::{channel, status_error};
use crate::ClientOpts;

/// Exit code when Drover itself failed, before or around the command.
pub const EXIT_DROVER_FAILED: u8 = 125;
/// Bytes of stdin per request frame.
const STDIN_CHUNK: usize = 32 * 1024;

/// What `drover exec` was asked.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Allocation id, prefix, or a job name with one allocation.
    pub target: String,
    /// Task name; empty for the group's only task.
    pub task: String,
    /// `Some(true)` forces a terminal, `Some(false)` refuses one, `None`
    /// uses one when stdin is a terminal.
    pub tty: Option<bool>,
    /// `KEY=VALUE` pairs added to the task's environment.
    pub env: Vec<String>,
    /// Who runs the command; empty for the task's own user.
    pub user: String,
    /// argv.
    pub command: Vec<String>,
}

/// Runs the session and returns the exit code for the process; errors are
/// printed here.
pub async fn exec(opts: &ClientOpts, exec: &ExecOptions) -> u8 {
    match run(opts, exec).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_DROVER_FAILED
        }
    }
}

/// Puts the terminal on fd 0 in raw mode; restores it when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the local terminal (stdout's, else stdin's).
fn terminal_size() -> Option<pb::TerminalSize> {
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which
        // points at `ws` on our stack.
        let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
        if ret == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some(pb::TerminalSize {
                rows: u32::from(ws.ws_row),
                cols: u32::from(ws.ws_col),
            });
        }
    }
    None
}

fn parse_env(pairs: &[String], tty: bool) -> Result<std::collections::HashMap<String, String>> {
    let mut env = std::collections::HashMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("-e {pair:?}: expected KEY=VALUE");
        };
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            bail!("-e {pair:?}: the key must be non-empty and neither may contain NUL");
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    if tty && !env.contains_key("TERM") {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".to_owned());
        env.insert("TERM".to_owned(), term);
    }
    Ok(env)
}

async fn run(opts: &ClientOpts, exec: &ExecOptions) -> Result<u8> {
    if exec.command.is_empty() {
        bail!("no command: drover exec ALLOC -- COMMAND [ARG...]");
    }
    let tty = exec.tty.unwrap_or_else(|| std::io::stdin().is_terminal());
    let env = parse_env(&exec.env, tty)?;
    let ch = channel(opts).await?;
    let mut allocs = pb::alloc_service_client::AllocServiceClient::new(ch)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let alloc_id = resolve_alloc(&mut allocs, &exec.target).await?;

    let (req_tx, req_rx) = mpsc::channel::<pb::ExecRequest>(16);
    req_tx
        .send(pb::ExecRequest {
            start: Some(pb::ExecStart {
                alloc_id: alloc_id.clone(),
                task: exec.task.clone(),
                command: exec.command.clone(),
                tty,
                size: if tty { terminal_size() } else { None },
                env,
                user: exec.user.clone(),
            }),
            ..Default::default()
        })
        .await
        .map_err(|_| anyhow!("exec request stream closed"))?;
    let mut responses = allocs
        .exec(ReceiverStream::new(req_rx))
        .await
        .map_err(status_error)?
        .into_inner();

    // Raw mode only once the session exists; restored when this returns.
    let _raw = if tty && std::io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    spawn_stdin_reader(req_tx.clone());
    let mut winch = signal(SignalKind::window_change()).context("SIGWINCH handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        let msg = tokio::select! {
            msg = responses.message() => msg,
            _ = winch.recv() => {
                if let Some(size) = terminal_size().filter(|_| tty) {
                    let _ = req_tx.send(pb::ExecRequest { resize: Some(size), ..Default::default() }).await;
                }
                continue;
            }
            // Ending the stream makes the scheduler kill the command.
            _ = term.recv() => return Ok(128 + 15),
            _ = hup.recv() => return Ok(128 + 1),
            _ = int.recv() => return Ok(128 + 2),
        };
        let Some(resp) = msg.map_err(status_error)? else {
            bail!("the exec session ended without the command's exit status");
        };
        if !resp.stdout.is_empty() {
            stdout
                .write_all(&resp.stdout)
                .and_then(|()| stdout.flush())
                .context("writing to standard output")?;
        }
        if !resp.stderr.is_empty() {
            stderr
                .write_all(&resp.stderr)
                .and_then(|()| stderr.flush())
                .context("writing to standard error")?;
        }
        if !resp.error.is_empty() {
            // In raw mode a bare "\n" does not return the carriage.
            let nl = if tty { "\r\n" } else { "\n" };
            let _ = write!(stderr, "error: {}{nl}", resp.error);
            let code = resp.exit_code.unwrap_or(i32::from(EXIT_DROVER_FAILED));
            return Ok(u8::try_from(code).unwrap_or(EXIT_DROVER_FAILED));
        }
        if let Some(code) = resp.exit_code {
            return Ok(u8::try_from(code & 0xff).unwrap_or(1));
        }
        if let Some(sig) = resp.signal {
            return Ok(u8::try_from(128 + (sig & 0x7f)).unwrap_or(EXIT_DROVER_FAILED));
        }
    }
}

/// Copies stdin into stdin frames from a thread of its own (a blocking
/// read cannot be cancelled; the thread ends with the process), then sends
/// `stdin_eof`.
fn spawn_stdin_reader(tx: mpsc::Sender<pb::ExecRequest>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let frame = match stdin.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => pb::ExecRequest {
                    stdin_eof: true,
                    ..Default::default()
                },
                Ok(n) => pb::ExecRequest {
                    stdin: buf[..n].to_vec(),
                    ..Default::default()
                },
            };
            let eof = frame.stdin_eof;
            if tx.blocking_send(frame).is_err() || eof {
                return;
            }
        }
    });
}
