//! Host procfs helpers the e2e harness and tests share: liveness, start
//! times, parents and namespaces of processes, all read from `/proc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` after the command name, which may itself
/// contain spaces and parentheses.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` exists and is neither a zombie nor dead: a zombie has
/// released everything but its pid, and only its parent can reap it.
pub fn pid_alive(pid: i32) -> bool {
    match stat_fields(pid) {
        Some(f) => !matches!(f.first().map(String::as_str), Some("Z" | "X")),
        None => false,
    }
}

/// Whether `/proc/<pid>` exists at all: unlike [`pid_alive`], true for a
/// zombie that no one has reaped yet.
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Parent pid of `pid`, if it exists.
pub fn ppid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// When `pid` started, in clock ticks since boot (field 22 of `stat`).
/// Used to tell a process apart from a later one that reused its pid.
pub fn start_ticks(pid: i32) -> Option<u64> {
    // Fields after the name start at field 3 (state), so 22 is index 19.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// When `pid` started, in milliseconds since the Unix epoch: the boot time
/// from `/proc/stat` plus [`start_ticks`]. Ticks are USER_HZ, which Linux
/// fixes at 100 per second for userspace on every architecture.
pub fn start_unix_ms(pid: i32) -> Option<i64> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let ticks = start_ticks(pid)?;
    let ms = i64::try_from(ticks.checked_mul(1000)? / USER_HZ).ok()?;
    Some(btime * 1000 + ms)
}

/// The argv of `pid`, split at NULs; empty for kernel threads and on error.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every pid in `/proc` with its parent.
pub fn all_parents() -> BTreeMap<i32, i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, ppid(pid)?)))
        .collect()
}

/// `roots` and all their descendants that are alive now.
pub fn with_descendants(roots: &[i32]) -> Vec<i32> {
    let parents = all_parents();
    let mut out: Vec<i32> = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for (&child, &parent) in &parents {
            if parent == p && !out.contains(&child) {
                out.push(child);
            }
        }
        i += 1;
    }
    out
}

/// The namespace a process is in, as the `/proc/<pid>/ns/<kind>` link reads
/// (e.g. `pid:[4026531836]`); `pid` may be `"self"`.
pub fn namespace(pid: &str, kind: &str) -> std::io::Result<PathBuf> {
    std::fs::read_link(Path::new("/proc").join(pid).join("ns").join(kind))
}

/// Removes the cgroup tree `parent` from every hierarchy, deepest first;
/// returns the directories that could not be removed.
pub fn remove_cgroup_tree(parent: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return left;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(parent);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        let mut stack = vec![top.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        // A cgroup whose last task was just killed can stay busy briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            if !top.exists() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if top.exists() {
            left.push(top);
        }
    }
    left
}
