//! A task's root filesystem: the [`Rootfs`] a spec asks for, the
//! resolution of its command inside that root, and the mounts that build it.
//!
//! The work is split in two so that the forked child stays
//! async-signal-safe:
//!
//! - [`prepare`] runs in the supervisor, after its `unshare(CLONE_NEWNS)`
//!   and after `/` was made recursively private there: it assembles the new
//!   root under `<task_dir>/rootfs/merged` (a read-only recursive bind of
//!   `/`, or an overlay over the rootfs directory with a per-task upper dir),
//!   then mounts a minimal `/dev`, a read-only `/sys`, tmpfs `/tmp` (and
//!   `/run` for [`Rootfs::Host`]) in it. None of this is visible on the host:
//!   the supervisor's mount namespace is private and dies with it.
//! - [`PreparedRoot::enter_in_child`] runs in the `pre_exec` closure: the
//!   child unshares the mount namespace once more (a `pivot_root` in the
//!   supervisor's namespace would move the supervisor's root as well) and
//!   pivots into the prepared root, dropping the old one. The caller then
//!   mounts a fresh `/proc`, which must be done by the task, PID 1 of the new
//!   PID namespace.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// The root filesystem a task sees. Without one ([`super::TaskSpec::rootfs`]
/// `None`) the task shares the host's mount tree (only `/proc` is its own).
///
/// JSON: `{"type":"host"}` or `{"type":"dir","path":"/var/lib/drover/rootfs/x"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rootfs {
    /// A read-only view of the host's `/` (recursive bind, every submount
    /// read-only), with private writable tmpfs `/tmp` and `/run`, a fresh
    /// `/proc` and a minimal `/dev`.
    Host,
    /// A root filesystem directory on the node (as LXC's
    /// `/var/lib/lxc/NAME/rootfs`). It is never written to: an overlay with
    /// the task's own upper dir (`<task_dir>/rootfs/upper`, kept across
    /// restarts of the task, removed with the task directory) makes the
    /// root writable. `/proc`, `/dev`, `/sys` and `/tmp` are mounted over
    /// whatever the directory holds there (created in the upper dir when
    /// missing).
    Dir {
        /// Absolute path of the directory; no `,`, `:` or `\` (they would
        /// be read as overlay mount options).
        path: PathBuf,
    },
    /// A local OCI image layout: a directory (`oci-layout`, `index.json`,
    /// `blobs/sha256/...`) or a `.tar` of one. The agent verifies every
    /// blob against its digest and unpacks each layer once into the image
    /// cache ([`super::Runtime::with_image_cache`]); the task's overlay
    /// stacks the layer directories as lower dirs, with its own upper dir
    /// as for [`Rootfs::Dir`]. The image config's `Entrypoint` + `Cmd` are
    /// the command when the spec's is empty, its `Env` lies under the
    /// spec's env, and its `WorkingDir` is the task's working directory.
    ///
    /// JSON: `{"type":"oci","image":"/var/lib/drover/images/app.tar"}`.
    Oci {
        /// Absolute path of the layout directory or tar file.
        image: PathBuf,
    },
}

/// Device nodes created in the task's `/dev` (names; see [`DEV_NUMBERS`]).
pub const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// `(major, minor)` of each of [`DEV_NODES`], from the kernel's
/// `Documentation/admin-guide/devices.txt`; they are fixed.
const DEV_NUMBERS: [(u64, u64); 6] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];

/// Every entry of a task's `/dev` when it has a root filesystem, sorted:
/// [`DEV_NODES`] (character devices made with `mknod`, mode 0666: cheaper
/// than a bind mount each), `pts` (a new devpts instance) with `ptmx` linking into it,
/// `shm` (tmpfs), and the `fd`, `stdin`, `stdout`, `stderr` links into
/// `/proc/self/fd`.
pub const DEV_ENTRIES: [&str; 13] = [
    "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
    "urandom", "zero",
];

/// `<task_dir>/rootfs/{upper,work,merged}`.
#[derive(Debug, Clone)]
pub(super) struct RootfsDirs {
    /// Overlay upper dir: the task's writes.
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
    /// The assembled root the task pivots into.
    pub merged: PathBuf,
}

impl RootfsDirs {
    /// The directories below `base` (`<task_dir>/rootfs`).
    pub fn new(base: &Path) -> Self {
        Self {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
        }
    }
}

impl Rootfs {
    /// Checks the rootfs before anything starts: a `Dir` path must be
    /// absolute, usable as an overlay option and an existing directory.
    /// Returns a message naming the path.
    pub fn validate(&self) -> Result<(), String> {
        let path = match self {
            Rootfs::Host => return Ok(()),
            Rootfs::Oci { image } => {
                return if image.is_absolute() {
                    Ok(())
                } else {
                    Err(format!(
                        "rootfs image {} must be an absolute path",
                        image.display()
                    ))
                };
            }
            Rootfs::Dir { path } => path,
        };
        if !path.is_absolute() {
            return Err(format!(
                "rootfs directory {} must be an absolute path",
                path.display()
            ));
        }
        if path
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\' | b'\0'))
        {
            return Err(format!(
                "rootfs directory {} must not contain ',', ':', '\\' or NUL",
                path.display()
            ));
        }
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "rootfs directory {} is not a directory",
                path.display()
            )),
            Err(e) => Err(format!(
                "rootfs directory {} does not exist or cannot be read: {e}; \
                 create it or name another rootfs",
                path.display()
            )),
        }
    }
}

/// Whether `path` (absolute, as the task sees it) names an executable file
/// inside the root directory `root`, every symlink resolved inside `root`
/// (`openat2(RESOLVE_IN_ROOT)`), as it will be after `pivot_root`.
pub(crate) fn is_executable_in(root: &Path, path: &Path) -> bool {
    open_in_root(root, path)
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `path` names a directory inside `root`, resolved as
/// [`is_executable_in`] does.
pub(crate) fn is_dir_in(root: &Path, path: &Path) -> bool {
    open_in_root(root, path)
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.is_dir())
}

/// Creates the directory `path` (absolute, as the task sees it) and its
/// missing parents inside `root`, each parent resolved inside `root` as
/// [`is_executable_in`] does, so that a symlink in the tree cannot lead the
/// creation out of it. Mode 0755.
pub(crate) fn mkdir_p_in(root: &Path, path: &Path) -> Result<(), String> {
    let mut current = PathBuf::from("/");
    for component in path.components() {
        let std::path::Component::Normal(name) = component else {
            continue;
        };
        let next = current.join(name);
        if !is_dir_in(root, &next) {
            let parent = open_in_root(root, &current).ok_or_else(|| {
                format!(
                    "{} is not a directory in the root filesystem",
                    current.display()
                )
            })?;
            let c_name = CString::new(name.as_bytes())
                .map_err(|_| format!("{} contains a NUL byte", next.display()))?;
            // SAFETY: `parent` is an open descriptor and `c_name` a
            // NUL-terminated single component; both outlive the call.
            let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), c_name.as_ptr(), 0o755) };
            if rc != 0 {
                return Err(format!(
                    "mkdir {} in the root filesystem: {}",
                    next.display(),
                    io::Error::last_os_error()
                ));
            }
        }
        current = next;
    }
    Ok(())
}

/// Opens `path` with `O_PATH`, every component resolved inside `root`.
fn open_in_root(root: &Path, path: &Path) -> Option<fs::File> {
    let Ok(root_dir) = fs::File::open(root) else {
        return None;
    };
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return None;
    };
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: `path` is NUL-terminated and `how` a valid open_how whose size
    // is passed; both outlive the call. The returned descriptor, if any, is
    // owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Some(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What [`prepare`] builds the root from.
#[derive(Debug, Clone)]
pub(super) enum RootBase {
    /// A read-only recursive bind of the host's `/`.
    Host,
    /// An overlay over these lower directories (top first), with the
    /// task's upper and work dirs.
    Overlay(Vec<PathBuf>),
}

/// A root assembled by [`prepare`], and the strings the child needs to
/// enter it, allocated before the fork.
#[derive(Debug, Clone)]
pub(super) struct PreparedRoot {
    /// `<task_dir>/rootfs/merged`, a mount point in the supervisor's
    /// mount namespace.
    pub merged: PathBuf,
    merged_c: CString,
    dot: CString,
    cwd: CString,
}

impl PreparedRoot {
    /// In the forked child, before exec: a mount namespace of its own (a
    /// copy of the supervisor's, with the prepared root), then
    /// `pivot_root(".", ".")` inside `merged` and a lazy unmount of the old
    /// root stacked on it, then a `chdir` to the working directory (`/`
    /// unless an image sets one). The same-directory form of
    /// `pivot_root` needs no `put_old` directory, so it also works on a
    /// read-only root ([`Rootfs::Host`]). The caller mounts `/proc` next.
    ///
    /// Only async-signal-safe syscalls on strings prepared before the fork;
    /// nothing allocates.
    pub fn enter_in_child(&self) -> io::Result<()> {
        // SAFETY: plain syscalls on NUL-terminated strings owned by `self`,
        // which outlives them; nothing is allocated.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::chdir(self.merged_c.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_pivot_root, self.dot.as_ptr(), self.dot.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The old root is now mounted on top of the new one, at ".".
            if libc::umount2(self.dot.as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path {} contains a NUL byte", path.display()))
}

fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount({}, {}, {}, {flags:?}, {}): {e}",
            source.map_or_else(|| "none".to_owned(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("none"),
            data.unwrap_or("")
        )
    })
}

/// Makes every mount at or below `path` read-only (`mount_setattr(2)` with
/// `AT_RECURSIVE`); a plain remount would only change the top mount.
fn make_readonly_recursive(path: &Path) -> Result<(), String> {
    /// `struct mount_attr` from `linux/mount.h`.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let c_path = cstring(path)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c_path` is NUL-terminated and `attr` a valid mount_attr whose
    // size is passed; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount_setattr({}, AT_RECURSIVE, MOUNT_ATTR_RDONLY): {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Makes sure `path` is a directory (not a symlink, which could lead a
/// mount out of the new root), creating it when missing.
fn ensure_dir(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{} must be a directory (not a file or symlink) to mount on",
            path.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(path).map_err(|e| format!("mkdir {}: {e}", path.display()))
        }
        Err(e) => Err(format!("lstat {}: {e}", path.display())),
    }
}

fn create_dir_all(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("mkdir -p {}: {e}", path.display()))
}

/// Assembles the task's root under `dirs.merged` in the caller's mount
/// namespace, which must be private (a new namespace whose `/` was made
/// `MS_REC|MS_PRIVATE`): nothing mounted here reaches the host.
/// `host_sys` (normally `/sys`) is where sysfs is bound from.
/// `cwd` is the task's working directory inside the new root, entered by
/// [`PreparedRoot::enter_in_child`] after the pivot.
pub(super) fn prepare(
    base: &RootBase,
    dirs: &RootfsDirs,
    host_sys: &Path,
    cwd: &Path,
) -> Result<PreparedRoot, String> {
    let merged = &dirs.merged;
    create_dir_all(merged)?;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match base {
        RootBase::Host => {
            do_mount(
                Some(Path::new("/")),
                merged,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            make_readonly_recursive(merged)?;
            for dir in ["proc", "dev", "sys", "tmp", "run"] {
                // Read-only now: these must exist on the host already.
                let target = merged.join(dir);
                if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    return Err(format!(
                        "the host has no directory /{dir} to mount the task's on"
                    ));
                }
            }
            do_mount(
                Some(Path::new("tmpfs")),
                &merged.join("run"),
                Some("tmpfs"),
                nosuid_nodev,
                Some("mode=755"),
            )?;
        }
        RootBase::Overlay(lower) => {
            if lower.is_empty() {
                return Err("an overlay root needs at least one lower directory".to_owned());
            }
            for dir in lower.iter().chain([&dirs.upper, &dirs.work]) {
                if dir
                    .as_os_str()
                    .as_bytes()
                    .iter()
                    .any(|b| matches!(b, b',' | b':' | b'\\'))
                {
                    return Err(format!(
                        "overlay directory {} contains ',', ':' or '\\'",
                        dir.display()
                    ));
                }
            }
            create_dir_all(&dirs.upper)?;
            create_dir_all(&dirs.work)?;
            let lowerdir = lower
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let options = format!(
                "lowerdir={lowerdir},upperdir={},workdir={}",
                dirs.upper.display(),
                dirs.work.display()
            );
            do_mount(
                Some(Path::new("overlay")),
                merged,
                Some("overlay"),
                MsFlags::empty(),
                Some(&options),
            )?;
            for dir in ["proc", "dev", "sys", "tmp"] {
                ensure_dir(&merged.join(dir))?;
            }
            let sys = merged.join("sys");
            do_mount(
                Some(host_sys),
                &sys,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            make_readonly_recursive(&sys)?;
        }
    }
    do_mount(
        Some(Path::new("tmpfs")),
        &merged.join("tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=1777"),
    )?;
    mount_dev(&merged.join("dev"))?;
    Ok(PreparedRoot {
        merged_c: cstring(merged)?,
        merged: merged.clone(),
        dot: cstring(Path::new("."))?,
        cwd: cstring(cwd)?,
    })
}

/// A minimal `/dev` at `dev`: see [`DEV_ENTRIES`].
fn mount_dev(dev: &Path) -> Result<(), String> {
    do_mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (node, (major, minor)) in DEV_NODES.into_iter().zip(DEV_NUMBERS) {
        let target = dev.join(node);
        mknod(
            &target,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod({}, S_IFCHR, {major}:{minor}): {e}", target.display()))?;
        // mknod applies the umask.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod 0666 {}: {e}", target.display()))?;
    }
    let pts = dev.join("pts");
    create_dir_all(&pts)?;
    do_mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    create_dir_all(&shm)?;
    do_mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(to, &path).map_err(|e| format!("symlink {} -> {to}: {e}", path.display()))?;
    }
    Ok(())
}
