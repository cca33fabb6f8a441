//! Processes, mounts and cgroups of a [`super::MultiHost`]: starting
//! programs inside a network namespace, and finding and removing
//! everything they left.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub(crate) use crate::util::describe;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procs::{cmdline, pid_alive, start_ticks, with_descendants};

pub(crate) use crate::util::CLEARED_ENV;

pub(crate) use crate::netns_exec::{in_netns, pid_of, run_in};

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
