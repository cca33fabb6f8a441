//! cgroup v2: the unified hierarchy, `<root>/<path>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroupfs;
use super::{check_path, CgroupError, Cgroups, Limits, Usage, Version, CPU_PERIOD_US};

/// The unified hierarchy mounted at `root` (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host).
#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
}

impl V2 {
    /// Controllers Drover enables for its cgroups.
    pub const CONTROLLERS: [&'static str; 3] = ["cpu", "memory", "pids"];

    /// The hierarchy mounted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn dir(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// Creates each level below the root and enables the controllers in
    /// every level that gets children: the root and the ancestors of the
    /// task's cgroup, never the leaf (a v2 cgroup with processes may not
    /// delegate controllers).
    fn create_levels(&self, path: &Path) -> Result<(), CgroupError> {
        let enable = V2::CONTROLLERS
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        cgroupfs::write_file(&self.root.join("cgroup.subtree_control"), &enable)?;
        let mut rel = PathBuf::new();
        let mut components = path.components().peekable();
        while let Some(component) = components.next() {
            rel.push(component);
            let dir = cgroupfs::mkdir_all(&self.root, &rel)?;
            if components.peek().is_some() {
                cgroupfs::write_file(&dir.join("cgroup.subtree_control"), &enable)?;
            }
        }
        Ok(())
    }

    fn apply(&self, path: &Path, limits: &Limits) -> Result<(), CgroupError> {
        let dir = self.dir(path);
        let max = |v: Option<u64>| v.map_or_else(|| "max".to_owned(), |v| v.to_string());
        cgroupfs::write_file(&dir.join("memory.max"), &max(limits.memory_bytes))?;
        if limits.memory_bytes.is_some() {
            // Absent without swap accounting (no swap to limit then).
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                cgroupfs::write_file(&swap, "0")?;
            }
        }
        cgroupfs::write_file(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", max(limits.cpu_quota_us())),
        )?;
        cgroupfs::write_file(&dir.join("pids.max"), &max(limits.pids_max))
    }
}

impl Cgroups for V2 {
    fn version(&self) -> Version {
        Version::V2
    }

    fn create(&self, path: &Path, limits: &Limits) -> Result<(), CgroupError> {
        check_path(path)?;
        let result = self
            .create_levels(path)
            .and_then(|()| self.apply(path, limits));
        if result.is_err() {
            // Best effort: nothing runs in it yet.
            let _ = self.remove(path, &[], Duration::ZERO);
        }
        result
    }

    fn procs_files(&self, path: &Path) -> Vec<PathBuf> {
        vec![self.dir(path).join("cgroup.procs")]
    }

    fn join_files(&self, path: &Path) -> Vec<PathBuf> {
        self.procs_files(path)
    }

    fn oom_kills(&self, path: &Path) -> Result<u64, CgroupError> {
        cgroupfs::read_keyed(&self.dir(path).join("memory.events"), "oom_kill")
    }

    fn usage(&self, path: &Path) -> Result<Usage, CgroupError> {
        check_path(path)?;
        super::usage::v2(&self.dir(path))
    }

    fn pids_current(&self, path: &Path) -> Result<u64, CgroupError> {
        cgroupfs::read_u64(&self.dir(path).join("pids.current"))
    }

    fn procs(&self, path: &Path) -> Result<Vec<i32>, CgroupError> {
        cgroupfs::read_procs(&self.dir(path).join("cgroup.procs"))
    }

    fn remove(&self, path: &Path, prune: &[&Path], timeout: Duration) -> Result<(), CgroupError> {
        check_path(path)?;
        cgroupfs::rmdir_retry(&self.dir(path), Instant::now() + timeout, timeout)?;
        for ancestor in prune {
            check_path(ancestor)?;
            cgroupfs::rmdir_if_empty(&self.dir(ancestor))?;
        }
        Ok(())
    }
}
