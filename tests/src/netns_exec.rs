//! Running commands inside a network namespace a test made: used by the
//! multi-host harness and the etcd cluster harness alike.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use drover_agent::net::Netns;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{describe, CLEARED_ENV};

/// Makes `cmd` start inside the network namespace `netns` (the child
/// enters it between fork and exec; the test process never moves).
pub(crate) fn in_netns(cmd: &mut Command, netns: &Netns) {
    let fd = netns.as_fd().as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the setns(2) system call, which is async-signal-safe, on an fd
    // that the child inherited (O_CLOEXEC closes it only at exec). The
    // error conversion builds an `io::Error` from a raw errno, without
    // allocating.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: `fd` is open in the child (see above) for the
            // duration of this call.
            let ns = BorrowedFd::borrow_raw(fd);
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
}

/// Runs `program args` inside `netns`, capturing its output; kills it after
/// `timeout` so that a hung command fails the test instead of hanging it.
///
/// # Panics
///
/// When the program cannot be started or runs past `timeout`.
pub(crate) fn run_in<S: AsRef<OsStr>>(
    netns: &Netns,
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> Output {
    let mut cmd = Command::new(program);
    for k in CLEARED_ENV {
        cmd.env_remove(k);
    }
    cmd.args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    in_netns(&mut cmd, netns);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
    let pid = pid_of(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {}: {e}", program.display())),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!(
                "`{} {}` ran longer than {timeout:?}",
                program.display(),
                describe(args)
            );
        }
    }
}

/// The child's pid as the signal calls want it.
pub(crate) fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap_or(i32::MAX)
}
