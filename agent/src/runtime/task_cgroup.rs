//! The cgroup side of a task's life after its start: killing what a dead
//! supervisor left in a task's cgroup, removing a task's cgroup, and
//! sweeping the idle ones that killed supervisors left behind.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use tracing::{debug, info};

use super::files::{read_json, TaskDir};
use super::{
    CgroupPlacement, PidFd, Runtime, RuntimeError, CGROUP_REMOVE_TIMEOUT, STALE_CGROUP_AGE,
};
use crate::cgroup;

impl Runtime {
    /// Removes idle cgroups below this runtime's parent that killed
    /// supervisors left behind ([`cgroup::sweep`]); best effort, logged.
    /// Run before each start, so leftovers never accumulate.
    pub(super) fn sweep_cgroups(&self) {
        let result = cgroup::detect(&self.cgroups.root).and_then(|cgroups| {
            cgroup::sweep(cgroups.as_ref(), &self.cgroups.parent, STALE_CGROUP_AGE)
        });
        match result {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => info!(?removed, "removed cgroups left by dead supervisors"),
            Err(error) => debug!(%error, "sweeping stale cgroups"),
        }
    }

    /// SIGKILLs every process in the task's cgroup (a task whose
    /// supervisor died); returns how many are still listed afterwards
    /// (dying ones included). Each pid is checked to still be
    /// listed after its pidfd is opened: no process can enter the cgroup
    /// but by a member's fork, so a reused pid never gets the signal.
    pub(super) fn kill_unsupervised(&self, dir: &TaskDir) -> Result<usize, RuntimeError> {
        let Some((placement, path)) = task_cgroup(dir)? else {
            return Ok(0);
        };
        let cgroups = cgroup::detect(&placement.root)?;
        for pid in cgroups.procs(&path)? {
            let Ok(Some(fd)) = PidFd::open(pid) else {
                continue;
            };
            if cgroups.procs(&path)?.contains(&pid) {
                let _ = fd.signal(Signal::SIGKILL);
            }
        }
        // What is still listed (dying, or not signalled: no pidfd, an
        // error) keeps the task unsettled until the next look.
        Ok(cgroups.procs(&path)?.len())
    }

    /// Removes the task's cgroup as recorded in `cgroup.json` (nothing to do
    /// without one, or when it is gone already).
    pub(super) fn remove_cgroup(&self, dir: &TaskDir, alloc_id: &str) -> Result<(), RuntimeError> {
        let Some((placement, path)) = task_cgroup(dir)? else {
            return Ok(());
        };
        if !cgroup_may_exist(&placement.root, &path) {
            return Ok(());
        }
        let cgroups = cgroup::detect(&placement.root)?;
        let prune = placement.prune_paths(alloc_id);
        let prune: Vec<&Path> = prune.iter().map(PathBuf::as_path).collect();
        cgroups.remove(&path, &prune, CGROUP_REMOVE_TIMEOUT)?;
        Ok(())
    }
}

/// Where the task of `dir` has its cgroup (its placement, validated, and
/// its path in every hierarchy); `None` before both records exist.
fn task_cgroup(dir: &TaskDir) -> Result<Option<(CgroupPlacement, PathBuf)>, RuntimeError> {
    let (Some(placement), Some(spec)) = (
        read_json::<CgroupPlacement>(&dir.cgroup())?,
        dir.read_spec()?,
    ) else {
        return Ok(None);
    };
    placement.validate()?;
    let path = placement.task_path(&spec);
    Ok(Some((placement, path)))
}

/// Cheap check before detecting the hierarchies: whether a directory for
/// `path` exists in any hierarchy directly under `root` (v1 controllers,
/// the hybrid `unified`) or in `root` itself (v2).
fn cgroup_may_exist(root: &Path, path: &Path) -> bool {
    if root.join(path).is_dir() {
        return true;
    }
    fs::read_dir(root).is_ok_and(|entries| entries.flatten().any(|e| e.path().join(path).is_dir()))
}
