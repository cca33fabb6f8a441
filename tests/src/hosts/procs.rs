//! Processes, mounts and cgroups of a [`super::MultiHost`]: starting
//! programs inside a network namespace, and finding and removing
//! everything they left.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use drover_agent::net::Netns;
use nix::sched::CloneFlags;

pub(crate) use crate::util::describe;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procs::{cmdline, pid_alive, start_ticks, with_descendants};

pub(crate) use crate::util::CLEARED_ENV;

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

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        let _ = kill(Pid::from_raw(pid_of(child)), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
        if let Ok(None) = child.try_wait() {
            let _ = kill(Pid::from_raw(pid_of(child)), Signal::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// SIGKILL, as a crash would; reaps the child.
pub(crate) fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Every pid in the cgroup tree `parent` (relative to each hierarchy under
/// `/sys/fs/cgroup`).
fn cgroup_pids(parent: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack: Vec<PathBuf> = Vec::new();
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            let top = h.path().join(parent);
            if top.is_dir() {
                stack.push(top);
            }
        }
    }
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// Supervisors and tasks that agents started under `root` and that are
/// alive now: every `drover __supervise <dir under root>`, every process in
/// one of `cgroups`, and all their descendants, but only processes that
/// started at or after `since` (clock ticks since boot): pids get reused.
pub(crate) fn leftovers(root: &Path, cgroups: &[String], since: u64) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    let mut roots: Vec<i32> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        roots.extend(
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| {
                    cmdline(pid)
                        .windows(2)
                        .any(|w| w[0] == "__supervise" && Path::new(&w[1]).starts_with(root))
                }),
        );
    }
    for c in cgroups {
        roots.extend(cgroup_pids(c));
    }
    let mut pids = with_descendants(&roots);
    pids.retain(|&p| p != own && pid_alive(p) && start_ticks(p).is_some_and(|t| t >= since));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs [`leftovers`] until none is left or `wait` passes; returns the
/// survivors.
pub(crate) fn kill_leftovers(
    root: &Path,
    cgroups: &[String],
    since: u64,
    wait: Duration,
) -> Vec<i32> {
    let deadline = Instant::now() + wait;
    loop {
        let left = leftovers(root, cgroups, since);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        for &p in &left {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Mount points at or under `root` in this mount namespace, deepest first.
pub(crate) fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as
/// three octal digits after a backslash.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or under `root`; returns what is still
/// mounted afterwards.
pub(crate) fn unmount_under(root: &Path) -> Vec<PathBuf> {
    for _ in 0..3 {
        let points = mounts_under(root);
        if points.is_empty() {
            break;
        }
        for p in points {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }
}
