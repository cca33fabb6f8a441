//! Resource limits through Linux control groups, v1 or v2, behind one small
//! trait.
//!
//! [`detect`] looks at a cgroupfs root (`/sys/fs/cgroup` in production, a
//! temp dir in tests) and returns the implementation the host supports:
//! [`V2`] when a unified hierarchy lists the `cpu`, `memory` and `pids`
//! controllers in its `cgroup.controllers`, otherwise [`V1`] with one
//! hierarchy per controller (`<root>/memory`, `<root>/cpu`, `<root>/pids`).
//!
//! Every operation takes the cgroup's path relative to the hierarchy root,
//! e.g. `drover/<alloc_id>/<task>`. The caller moves the task in by writing
//! `0` to each of [`Cgroups::join_files`] from the forked (single-threaded)
//! child, before it execs, so the task never runs a single instruction
//! outside its limits.
//!
//! [`V1`] and [`V2`] differ in where the files are; reading and writing
//! them, and creating and removing cgroup directories the way the kernel
//! allows, is `cgroupfs`, which both use.

mod cgroupfs;
mod usage;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::io_error::IoError;

pub use usage::Usage;
pub use v1::V1;
pub use v2::V2;

/// CFS period used for CPU quotas: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, 1 ms.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// Interval between `rmdir` attempts while the kernel still lists tasks.
pub(super) const RMDIR_RETRY: Duration = Duration::from_millis(5);

/// Errors of the cgroup module; each names the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file operation on cgroupfs (`mkdir`, `write`, `read`, `rmdir`,
    /// `open`) failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A cgroup file held something unexpected.
    #[error("{}: {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The cgroupfs root offers neither a usable v2 nor the v1 hierarchies.
    #[error("no usable cgroup hierarchy under {}: {why}", root.display())]
    Unsupported {
        /// The cgroupfs root looked at.
        root: PathBuf,
        /// What is missing.
        why: String,
    },
    /// `rmdir` kept failing because processes remained in the cgroup.
    #[error("rmdir {}: still busy after {after:?} (pids {pids:?})", path.display())]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
        /// What the kernel still listed in `cgroup.procs`.
        pids: Vec<i32>,
        /// How long removal was retried.
        after: Duration,
    },
    /// A relative cgroup path that would escape the hierarchy.
    #[error("cgroup path {path:?} must be relative, without '.' or '..' components")]
    BadPath {
        /// The offending path.
        path: PathBuf,
    },
}

/// Which cgroup version an implementation drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// The limits applied to one task's cgroup; `None` leaves a resource
/// unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory (and memory + swap: the task may not swap) in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU bandwidth in millicores (1000 = one full CPU).
    pub cpu_millis: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids_max: Option<u64>,
}

impl Limits {
    /// Limits from a task's spec fields, where 0 means unlimited.
    pub fn from_spec(memory_mb: u64, cpu_millis: u64, pids_max: u64) -> Self {
        let nonzero = |v: u64| (v > 0).then_some(v);
        Self {
            memory_bytes: nonzero(memory_mb).map(|mb| mb.saturating_mul(1024 * 1024)),
            cpu_millis: nonzero(cpu_millis),
            pids_max: nonzero(pids_max),
        }
    }

    /// The CFS quota for [`CPU_PERIOD_US`], at least the kernel minimum.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu_millis
            .map(|m| (m.saturating_mul(CPU_PERIOD_US) / 1000).max(CPU_MIN_QUOTA_US))
    }
}

/// One cgroup implementation (v1 or v2) rooted at some cgroupfs path.
///
/// `path` arguments are relative to the hierarchy root, e.g.
/// `drover/<alloc>/<task>`; see [`check_path`].
pub trait Cgroups: std::fmt::Debug + Send + Sync {
    /// Which version this drives.
    fn version(&self) -> Version;

    /// Creates the cgroup (reusing one that exists) in every hierarchy and
    /// writes `limits` into it. On error, nothing created here is left.
    fn create(&self, path: &Path, limits: &Limits) -> Result<(), CgroupError>;

    /// The `cgroup.procs` file of the cgroup in each hierarchy: the
    /// processes in it.
    fn procs_files(&self, path: &Path) -> Vec<PathBuf>;

    /// The files a **single-threaded** process writes `0` to, one per
    /// hierarchy, to move itself into the cgroup; open them before forking.
    ///
    /// v1: each hierarchy's `tasks`. Moving one thread (the writer itself)
    /// is the one migration the kernel does without its global
    /// threadgroup lock, whose write side waits for an RCU grace period
    /// (`cgroup.procs`: 6.3 ms median here, `tasks`: 0.1 ms). For a process
    /// with one thread, moving that thread moves the process.
    /// v2: `cgroup.procs` (a thread alone cannot leave its domain).
    fn join_files(&self, path: &Path) -> Vec<PathBuf>;

    /// How many times the OOM killer has killed a process in the cgroup
    /// (v1 `memory.oom_control` `oom_kill`, v2 `memory.events` `oom_kill`).
    fn oom_kills(&self, path: &Path) -> Result<u64, CgroupError>;

    /// The number of processes the pids controller counts in the cgroup.
    fn pids_current(&self, path: &Path) -> Result<u64, CgroupError>;

    /// CPU time and memory the cgroup (with its descendants) has used.
    fn usage(&self, path: &Path) -> Result<Usage, CgroupError>;

    /// The pids listed in the cgroup's `cgroup.procs`, over all hierarchies.
    fn procs(&self, path: &Path) -> Result<Vec<i32>, CgroupError>;

    /// Removes the cgroup from every hierarchy, retrying `rmdir` for up to
    /// `timeout` while the kernel still lists exiting tasks, then removes
    /// the ancestors named in `prune` (relative paths, deepest first) if they
    /// are empty. A cgroup that does not exist is not an error.
    fn remove(&self, path: &Path, prune: &[&Path], timeout: Duration) -> Result<(), CgroupError>;

    /// The directories of `path` in every hierarchy (they may not exist).
    fn dirs(&self, path: &Path) -> Vec<PathBuf> {
        self.procs_files(path)
            .into_iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect()
    }
}

/// Removes task cgroups `<parent>/<alloc>/<task>` left behind by
/// supervisors that were killed: those with no process in them that were
/// last changed more than `older_than` ago (a supervisor creates its cgroup
/// and moves the task in within moments, so a young empty one may be in use
/// soon). A cgroup with processes is never removed: `rmdir` refuses it.
/// Then prunes the allocation cgroups and `parent` when they are empty.
/// Returns the directories removed.
pub fn sweep(
    cgroups: &dyn Cgroups,
    parent: &Path,
    older_than: Duration,
) -> Result<Vec<PathBuf>, CgroupError> {
    check_path(parent)?;
    let mut removed = Vec::new();
    for parent_dir in cgroups.dirs(parent) {
        for alloc_dir in cgroupfs::subdirs(&parent_dir)? {
            for task_dir in cgroupfs::subdirs(&alloc_dir)? {
                let idle = cgroupfs::read_procs(&task_dir.join("cgroup.procs"))?.is_empty();
                let old = fs::metadata(&task_dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= older_than);
                if idle && old && cgroupfs::rmdir_if_empty(&task_dir)? {
                    removed.push(task_dir);
                }
            }
            cgroupfs::rmdir_if_empty(&alloc_dir)?;
        }
        cgroupfs::rmdir_if_empty(&parent_dir)?;
    }
    Ok(removed)
}

/// Looks at the cgroupfs `root` and returns the implementation to use:
/// v2 when `<root>/cgroup.controllers` (pure v2) or
/// `<root>/unified/cgroup.controllers` (hybrid) lists `cpu`, `memory` and
/// `pids`; otherwise v1 when `<root>/{memory,cpu,pids}` are hierarchies.
pub fn detect(root: &Path) -> Result<Box<dyn Cgroups>, CgroupError> {
    for v2_root in [root.to_owned(), root.join("unified")] {
        let controllers = v2_root.join("cgroup.controllers");
        match fs::read_to_string(&controllers) {
            Ok(listed) => {
                let listed: Vec<&str> = listed.split_whitespace().collect();
                if V2::CONTROLLERS.iter().all(|c| listed.contains(c)) {
                    return Ok(Box::new(V2::new(v2_root)));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(IoError::new("read", controllers, source).into()),
        }
    }
    let missing: Vec<&str> = V1::CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !root.join(c).join("cgroup.procs").is_file())
        .collect();
    if missing.is_empty() {
        Ok(Box::new(V1::new(root.to_owned())))
    } else {
        Err(CgroupError::Unsupported {
            root: root.to_owned(),
            why: format!(
                "no v2 hierarchy with cpu, memory and pids, and no v1 hierarchy for {}",
                missing.join(", ")
            ),
        })
    }
}

/// Refuses absolute paths and `.`/`..` components: a cgroup path given by
/// configuration must stay below the hierarchy root.
pub fn check_path(path: &Path) -> Result<(), CgroupError> {
    use std::path::Component;
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadPath {
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
