//! cgroup v1: one hierarchy per controller, `<root>/<controller>/<path>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroupfs;
use super::{check_path, CgroupError, Cgroups, Limits, Usage, Version, CPU_PERIOD_US};

/// Legacy hierarchies, each controller mounted at `<root>/<controller>`.
#[derive(Debug, Clone)]
pub struct V1 {
    root: PathBuf,
}

impl V1 {
    /// The controllers Drover needs, each with its own hierarchy.
    pub const CONTROLLERS: [&'static str; 3] = ["memory", "cpu", "pids"];

    /// Hierarchies below `root`, e.g. `/sys/fs/cgroup`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The hierarchies a cgroup is made in: [`V1::CONTROLLERS`], and
    /// `cpuacct` (CPU time, for the metrics) where it is a hierarchy of
    /// its own rather than mounted with `cpu`.
    fn hierarchies(&self) -> Vec<&'static str> {
        let mut all = Self::CONTROLLERS.to_vec();
        let acct = self.root.join("cpuacct");
        let canonical = |p: &Path| std::fs::canonicalize(p).ok();
        if acct.join("cgroup.procs").is_file()
            && canonical(&acct) != canonical(&self.root.join("cpu"))
        {
            all.push("cpuacct");
        }
        all
    }

    fn dir(&self, controller: &str, path: &Path) -> PathBuf {
        self.root.join(controller).join(path)
    }

    fn apply(&self, path: &Path, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.memory_bytes {
            let dir = self.dir("memory", path);
            cgroupfs::write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Without swap accounting the file is absent and there is no
            // swap limit to set; with it, memory + swap = memory: no swap.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                cgroupfs::write_file(&memsw, &bytes.to_string())?;
            }
        }
        let cpu = self.dir("cpu", path);
        cgroupfs::write_file(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = limits
            .cpu_quota_us()
            .map_or_else(|| "-1".to_owned(), |q| q.to_string());
        cgroupfs::write_file(&cpu.join("cpu.cfs_quota_us"), &quota)?;
        let pids = limits
            .pids_max
            .map_or_else(|| "max".to_owned(), |p| p.to_string());
        cgroupfs::write_file(&self.dir("pids", path).join("pids.max"), &pids)
    }
}

impl Cgroups for V1 {
    fn version(&self) -> Version {
        Version::V1
    }

    fn create(&self, path: &Path, limits: &Limits) -> Result<(), CgroupError> {
        check_path(path)?;
        let result = self
            .hierarchies()
            .iter()
            .try_for_each(|c| cgroupfs::mkdir_all(&self.root.join(c), path).map(drop))
            .and_then(|()| self.apply(path, limits));
        if result.is_err() {
            // Best effort: nothing runs in it yet.
            let _ = self.remove(path, &[], Duration::ZERO);
        }
        result
    }

    fn procs_files(&self, path: &Path) -> Vec<PathBuf> {
        self.hierarchies()
            .iter()
            .map(|c| self.dir(c, path).join("cgroup.procs"))
            .collect()
    }

    fn join_files(&self, path: &Path) -> Vec<PathBuf> {
        self.hierarchies()
            .iter()
            .map(|c| self.dir(c, path).join("tasks"))
            .collect()
    }

    fn oom_kills(&self, path: &Path) -> Result<u64, CgroupError> {
        // `oom_kill` in memory.oom_control exists since Linux 4.13.
        cgroupfs::read_keyed(
            &self.dir("memory", path).join("memory.oom_control"),
            "oom_kill",
        )
    }

    fn usage(&self, path: &Path) -> Result<Usage, CgroupError> {
        check_path(path)?;
        super::usage::v1(&self.dir("cpuacct", path), &self.dir("memory", path))
    }

    fn pids_current(&self, path: &Path) -> Result<u64, CgroupError> {
        cgroupfs::read_u64(&self.dir("pids", path).join("pids.current"))
    }

    fn procs(&self, path: &Path) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for file in self.procs_files(path) {
            all.extend(cgroupfs::read_procs(&file)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    fn remove(&self, path: &Path, prune: &[&Path], timeout: Duration) -> Result<(), CgroupError> {
        check_path(path)?;
        let deadline = Instant::now() + timeout;
        let mut first_err = None;
        let hierarchies = self.hierarchies();
        for c in &hierarchies {
            if let Err(e) = cgroupfs::rmdir_retry(&self.dir(c, path), deadline, timeout) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        for ancestor in prune {
            check_path(ancestor)?;
            for c in &hierarchies {
                cgroupfs::rmdir_if_empty(&self.dir(c, ancestor))?;
            }
        }
        Ok(())
    }
}
