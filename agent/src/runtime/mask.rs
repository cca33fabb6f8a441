//! The parts of a task's fresh `/proc` (and of `/sys`) that it must not
//! read or write, as Docker, runc and crun hide them: kernel memory, the
//! kernel keyring list, timer and scheduler internals (which leak other
//! tasks' activity), firmware tables; and the kernel knobs that stay
//! read-only (`/proc/sys`, `/proc/sysrq-trigger`, ...).
//!
//! A masked file gets `/dev/null` bound over it, a masked directory an
//! empty read-only tmpfs; a read-only path is bound onto itself and
//! remounted read-only. A path the kernel does not have is skipped. All of
//! it runs in the task's forked child right after it mounted its `/proc`
//! ([`ProcMasks::apply_in_child`]), with strings prepared before the fork.
//!
//! With the default user namespace the task's root could not use most of
//! these anyway; the masks are what still protects a node whose policy
//! turns user namespaces off.

use std::ffi::CString;
use std::io;

/// Paths hidden from every task: Docker's and the OCI runtimes' default
/// masked paths.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths every task sees read-only: the defaults of Docker and the OCI
/// runtimes.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// [`MASKED_PATHS`] and [`READONLY_PATHS`] as C strings, for the forked
/// child, which may not allocate.
#[derive(Debug, Clone)]
pub(super) struct ProcMasks {
    masked: Vec<CString>,
    readonly: Vec<CString>,
    dev_null: CString,
    tmpfs: CString,
    tmpfs_options: CString,
}

impl ProcMasks {
    /// The default masks.
    pub fn new() -> Self {
        let c = |s: &str| CString::new(s).unwrap_or_default();
        ProcMasks {
            masked: MASKED_PATHS.iter().map(|p| c(p)).collect(),
            readonly: READONLY_PATHS.iter().map(|p| c(p)).collect(),
            dev_null: c("/dev/null"),
            tmpfs: c("tmpfs"),
            tmpfs_options: c("size=0,mode=0555"),
        }
    }

    /// Applies the masks; called in the forked child after its `/proc` is
    /// mounted, while it is still root in the host's user namespace.
    ///
    /// Raw syscalls (stat, mount) on strings owned by `self` and a stack
    /// buffer only: async-signal-safe, nothing allocated.
    pub fn apply_in_child(&self) -> io::Result<()> {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        for path in &self.masked {
            // SAFETY: a zeroed `struct stat` on our stack, filled by stat(2).
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a NUL-terminated path and a valid out pointer.
            if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
                match io::Error::last_os_error().raw_os_error() {
                    // Not on this kernel (or hidden below a masked parent).
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue,
                    _ => return Err(io::Error::last_os_error()),
                }
            }
            let done = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                // SAFETY: NUL-terminated strings owned by `self`.
                unsafe {
                    libc::mount(
                        self.tmpfs.as_ptr(),
                        path.as_ptr(),
                        self.tmpfs.as_ptr(),
                        flags | libc::MS_RDONLY,
                        self.tmpfs_options.as_ptr().cast(),
                    )
                }
            } else {
                // SAFETY: NUL-terminated strings owned by `self`.
                unsafe {
                    libc::mount(
                        self.dev_null.as_ptr(),
                        path.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                }
            };
            if done != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for path in &self.readonly {
            // SAFETY: NUL-terminated strings owned by `self`.
            let bound = unsafe {
                libc::mount(
                    path.as_ptr(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            };
            if bound != 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::ENOENT) => continue,
                    _ => return Err(io::Error::last_os_error()),
                }
            }
            // SAFETY: as above; a bind remount changes this mount's flags
            // only (nosuid, nodev and noexec kept, read-only added).
            let remounted = unsafe {
                libc::mount(
                    path.as_ptr(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | flags,
                    std::ptr::null(),
                )
            };
            if remounted != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
