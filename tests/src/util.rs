//! Helpers every e2e harness shares: running the `drover` binary with a
//! clean environment and a timeout, reading its output as text or JSON,
//! polling a condition with a deadline, and names and ports unique to a
//! test.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::drover_bin;

/// How long one CLI command may run before it is killed as hung.
pub(crate) const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at a condition being polled.
pub(crate) const POLL: Duration = Duration::from_millis(25);
/// Environment that would point the binary elsewhere than the test means:
/// removed from every process the harness starts.
pub(crate) const CLEARED_ENV: [&str; 6] = [
    "DROVER_ADDR",
    "DROVER_TLS_CA",
    "DROVER_TLS_CERT",
    "DROVER_TLS_KEY",
    "DROVER_TLS_CLIENT_CA",
    "DROVER_ETCD",
];

/// The pid of a child the harness started.
pub(crate) fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("pid fits in i32")
}

/// `ARGS` as one line, for messages.
pub(crate) fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stdout of `drover ARGS`, which must have succeeded.
///
/// # Panics
///
/// When it failed; its stdout and stderr are in the message.
pub(crate) fn succeeded<S: AsRef<OsStr>>(args: &[S], out: &Output) -> String {
    assert!(
        out.status.success(),
        "`drover {}` failed ({}):\nstdout: {}\nstderr: {}",
        describe(args),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ARGS -o json` through `run` (which returns stdout) and parses it.
///
/// # Panics
///
/// When stdout is not one JSON value.
pub(crate) fn json_of<S: AsRef<OsStr>>(args: &[S], run: impl FnOnce(&[&OsStr]) -> String) -> Value {
    let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    all.extend([OsStr::new("-o"), OsStr::new("json")]);
    let stdout = run(&all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`drover {}` printed no JSON ({e}): {stdout}",
            describe(&all)
        )
    })
}

/// Runs the `drover` binary with `args` (and no `DROVER_ADDR` or TLS
/// settings from the environment), capturing its output; kills it after a
/// generous timeout so that a hung command fails the test instead of
/// hanging it.
///
/// # Panics
///
/// When the binary cannot be started or runs past the timeout.
pub fn run_drover<S: AsRef<OsStr>>(args: &[S]) -> Output {
    run_drover_with_env(args, &[])
}

/// Like [`run_drover`], with extra environment variables (e.g.
/// `DROVER_ADDR`) set after the inherited ones are cleared.
///
/// # Panics
///
/// When the binary cannot be started or runs past the timeout.
pub fn run_drover_with_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(drover_bin());
    for k in CLEARED_ENV {
        cmd.env_remove(k);
    }
    let child = cmd
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning drover");
    let pid = pid_of(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLI_TIMEOUT) {
        Ok(out) => out.expect("waiting for drover"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
            panic!(
                "`drover {}` ran longer than {CLI_TIMEOUT:?}",
                describe(&args)
            );
        }
    }
}

/// Calls `check` every few milliseconds until it returns `Some`, and returns
/// that; `what` names the condition in the panic message.
///
/// # Panics
///
/// When `timeout` passes first.
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`poll_until`] for async checks, sleeping on the tokio timer between
/// them.
///
/// # Panics
///
/// When `timeout` passes first.
pub async fn poll_until_async<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A loopback address nothing listens on: a port bound and released.
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn closed_loopback_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = l.local_addr().expect("local_addr").to_string();
    drop(l);
    addr
}

/// A name unique within this test process, valid as a DNS label:
/// `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
