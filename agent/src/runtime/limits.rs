//! Where a task's cgroup lives, and the hardening its supervisor applies in
//! the forked child before exec: rlimits, a reduced capability bounding set
//! and `no_new_privs`.
//!
//! Everything the child needs is computed here, before the fork; the
//! child side ([`Hardening::apply_in_child`]) only makes async-signal-safe
//! syscalls on that prepared data.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{check_path, CgroupError};

use super::TaskSpec;

/// Default cgroupfs root.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Default parent cgroup of all tasks: `<parent>/<alloc_id>/<task>`.
pub const DEFAULT_CGROUP_PARENT: &str = "drover";

/// Where the task's cgroup is made; written by the runtime to
/// `<task_dir>/cgroup.json` so that the supervisor and a later
/// [`super::Runtime::remove`] (even by a restarted agent) agree on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupPlacement {
    /// The cgroupfs root (`/sys/fs/cgroup`).
    pub root: PathBuf,
    /// The parent cgroup, relative to each hierarchy's root.
    pub parent: PathBuf,
}

impl Default for CgroupPlacement {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            parent: PathBuf::from(DEFAULT_CGROUP_PARENT),
        }
    }
}

impl CgroupPlacement {
    /// Checks that the parent stays inside the hierarchy.
    pub fn validate(&self) -> Result<(), CgroupError> {
        check_path(&self.parent)
    }

    /// The task's cgroup: `<parent>/<alloc_id>/<task>`.
    pub fn task_path(&self, spec: &TaskSpec) -> PathBuf {
        self.parent.join(&spec.alloc_id).join(&spec.task)
    }

    /// The ancestors removed with the task's cgroup when they are empty,
    /// deepest first: the allocation's cgroup and the parent.
    pub fn prune_paths(&self, alloc_id: &str) -> [PathBuf; 2] {
        [self.parent.join(alloc_id), self.parent.clone()]
    }
}

/// Capabilities kept in the bounding set: Docker's default set. Numbers
/// from `linux/capability.h`.
pub const KEPT_CAPABILITIES: [(u32, &str); 14] = [
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// Soft and hard `RLIMIT_NOFILE` of a task.
pub const NOFILE_LIMIT: (u64, u64) = (1024, 4096);

/// Resource limits and privilege reductions prepared before the fork.
#[derive(Debug, Clone)]
pub struct Hardening {
    /// Capabilities to drop from the bounding set.
    drop_caps: Vec<libc::c_int>,
    /// `(resource, soft, hard)`.
    rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
}

impl Hardening {
    /// The default hardening: RLIMIT_NOFILE 1024/4096, RLIMIT_CORE 0 and a
    /// bounding set reduced to [`KEPT_CAPABILITIES`]. `proc_root` (normally
    /// `/proc`) tells the highest capability the kernel knows.
    pub fn new(proc_root: &Path) -> Result<Self, String> {
        let file = proc_root.join("sys/kernel/cap_last_cap");
        let last: u32 = fs::read_to_string(&file)
            .map_err(|e| format!("read {}: {e}", file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("parse {}: {e}", file.display()))?;
        let drop_caps = (0..=last)
            .filter(|c| !KEPT_CAPABILITIES.iter().any(|(k, _)| k == c))
            .filter_map(|c| libc::c_int::try_from(c).ok())
            .collect();
        Ok(Self {
            drop_caps,
            rlimits: vec![
                (libc::RLIMIT_NOFILE, NOFILE_LIMIT.0, NOFILE_LIMIT.1),
                (libc::RLIMIT_CORE, 0, 0),
            ],
        })
    }

    /// Applies the rlimits. This, [`Hardening::drop_bounding_set_in_child`]
    /// and [`Hardening::set_no_new_privs_in_child`] are called in the
    /// forked child after every step that needs privileges the bounding set
    /// loses (the mounts, `sethostname`): dropping does not change this
    /// process's effective set, but the exec that follows recomputes it
    /// from the bounding set.
    ///
    /// Only async-signal-safe syscalls are made (setrlimit, prctl) on data
    /// prepared before the fork and nothing allocates, so these may be
    /// called from a `pre_exec` closure; called anywhere else they harden
    /// the caller.
    pub fn apply_rlimits_in_child(&self) -> io::Result<()> {
        for &(resource, soft, hard) in &self.rlimits {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: `limit` is a valid rlimit on our stack.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Drops the capabilities outside [`KEPT_CAPABILITIES`] from the
    /// bounding set. Needs `CAP_SETPCAP` in the caller's user namespace:
    /// after joining a new user namespace (which resets the bounding set
    /// to full) and before a uid change that clears capabilities.
    /// Async-signal-safe (prctl only).
    pub fn drop_bounding_set_in_child(&self) -> io::Result<()> {
        for &cap in &self.drop_caps {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Sets `no_new_privs`: from here on no exec can gain privileges
    /// (setuid bits and file capabilities are ignored). Async-signal-safe.
    pub fn set_no_new_privs_in_child(&self) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
