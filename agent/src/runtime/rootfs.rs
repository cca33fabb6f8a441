//! A task's root filesystem: the [`Rootfs`] a spec asks for, the
//! resolution of its command inside that root, and the mounts that build it.
//!
//! The work is split in two so that the forked child stays
//! async-signal-safe:
//!
//! - [`prepare`] runs in the supervisor, after its `unshare(CLONE_NEWNS)`
//!   and after `/` was made recursively private there: it assembles the new
//!   root under `<task_dir>/rootfs/merged` (the minimal host view of
//!   `host_view.rs`, or an overlay over the rootfs directory with a
//!   per-task upper dir),
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
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::io_error::IoError;
use crate::policy::HostRootPolicy;

mod error;
mod host_view;
mod in_root;
mod mount;
pub use error::{MountError, RootfsError};
pub(crate) use in_root::{is_dir_in, is_executable_in, mkdir_p_in, open_in_root, read_in_root};
use mount::{do_mount, idmapped_tree, make_readonly_recursive};
pub(crate) use mount::{set_mount_attr, MountAttr};

/// The root filesystem a task sees. Without one ([`super::TaskSpec::rootfs`]
/// `None`) the task shares the host's mount tree (only `/proc` is its own).
///
/// JSON: `{"type":"host"}` or `{"type":"dir","path":"/var/lib/drover/rootfs/x"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rootfs {
    /// A minimal read-only view of the host: its program directories
    /// (`/bin`, `/sbin`, `/usr`, `/lib*`), `/etc` without the node's
    /// secrets, a read-only `/sys`, what the node policy adds
    /// (`[host_root]`), and private writable tmpfs `/tmp` and `/run`, a
    /// fresh `/proc` and a minimal `/dev`; never the node's data, state or
    /// home directories (see `host_view.rs`).
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
    /// An `image` that is not an absolute path is a registry reference
    /// (`docker.io/library/nginx:1.25`, `reg:5000/web@sha256:...`): the
    /// agent pulls it into the same cache (`oci::registry`).
    ///
    /// JSON: `{"type":"oci","image":"/var/lib/drover/images/app.tar"}`.
    Oci {
        /// Absolute path of the layout directory or tar file, or an image
        /// reference.
        image: PathBuf,
    },
}

/// Device nodes created in the task's `/dev` (names; see `DEV_NUMBERS`).
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

/// `<task_dir>/rootfs/{upper,work,merged,empty}`.
#[derive(Debug, Clone)]
pub(super) struct RootfsDirs {
    /// Overlay upper dir: the task's writes.
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
    /// The assembled root the task pivots into.
    pub merged: PathBuf,
    /// The empty file bound over the secrets a host view hides.
    pub empty: PathBuf,
}

impl RootfsDirs {
    /// The directories below `base` (`<task_dir>/rootfs`).
    pub fn new(base: &Path) -> Self {
        Self {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
            empty: base.join("empty"),
        }
    }
}

impl Rootfs {
    /// Checks the rootfs before anything starts: a `Dir` path must be
    /// absolute, usable as an overlay option and an existing directory.
    /// The error names the path.
    pub fn validate(&self) -> Result<(), RootfsError> {
        let path = match self {
            Rootfs::Host => return Ok(()),
            Rootfs::Oci { image } => {
                return if image.is_absolute() || registry_ref(image).is_some() {
                    Ok(())
                } else {
                    Err(RootfsError::ImageNotAbsolute {
                        image: image.clone(),
                    })
                };
            }
            Rootfs::Dir { path } => path,
        };
        if !path.is_absolute() {
            return Err(RootfsError::DirNotAbsolute { path: path.clone() });
        }
        if path
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\' | b'\0'))
        {
            return Err(RootfsError::DirUnusableInOverlay { path: path.clone() });
        }
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(RootfsError::DirNotADirectory { path: path.clone() }),
            Err(source) => Err(RootfsError::DirUnreadable {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// What [`prepare`] builds the root from.
#[derive(Debug, Clone)]
pub(super) enum RootBase {
    /// The minimal host view, with the node policy's additions.
    Host(HostRootPolicy),
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

pub(super) fn cstring(path: &Path) -> Result<CString, RootfsError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RootfsError::NulByte {
        path: path.to_path_buf(),
    })
}

/// Makes sure `path` is a directory (not a symlink, which could lead a
/// mount out of the new root), creating it when missing.
fn ensure_dir(path: &Path) -> Result<(), RootfsError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(RootfsError::NotAMountDirectory {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(path).map_err(io_err("mkdir", path))
        }
        Err(source) => Err(io_err("lstat", path)(source)),
    }
}

fn create_dir_all(path: &Path) -> Result<(), RootfsError> {
    fs::create_dir_all(path).map_err(io_err("mkdir -p", path))
}

/// Maps an I/O error of `op` on `path` to [`RootfsError::Io`].
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| IoError::new(op, path, source).into()
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
    ids: &RootIds<'_>,
) -> Result<PreparedRoot, RootfsError> {
    let merged = &dirs.merged;
    create_dir_all(merged)?;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let (root_uid, root_gid) = ids.root;
    let owned = format!("uid={root_uid},gid={root_gid}");
    match base {
        RootBase::Host(view) => {
            host_view::mount_host_view(merged, view, &dirs.empty, host_sys, &owned)?
        }
        RootBase::Overlay(lower) => mount_overlay_base(lower, dirs, host_sys, ids)?,
    }
    do_mount(
        Some(Path::new("tmpfs")),
        &merged.join("tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&format!("mode=1777,{owned}")),
    )?;
    mount_dev(&merged.join("dev"), &owned)?;
    Ok(PreparedRoot {
        merged_c: cstring(merged)?,
        merged: merged.clone(),
        dot: cstring(Path::new("."))?,
        cwd: cstring(cwd)?,
    })
}

/// An overlay over the `lower` directories (idmapped into the task's user
/// namespace where it has one) with the task's own upper dir, and a
/// read-only `/sys` bound from `host_sys`.
fn mount_overlay_base(
    lower: &[PathBuf],
    dirs: &RootfsDirs,
    host_sys: &Path,
    ids: &RootIds<'_>,
) -> Result<(), RootfsError> {
    let merged = &dirs.merged;
    let (root_uid, root_gid) = ids.root;
    if lower.is_empty() {
        return Err(RootfsError::NoLowerDirectory);
    }
    for dir in lower.iter().chain([&dirs.upper, &dirs.work]) {
        if dir
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err(RootfsError::OverlayDirUnusable { path: dir.clone() });
        }
    }
    create_dir_all(&dirs.upper)?;
    create_dir_all(&dirs.work)?;
    // `/` of the task is the upper dir: root inside owns it, everyone may
    // enter it (the supervisor's umask is 0077).
    fs::set_permissions(&dirs.upper, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod 0755", &dirs.upper))?;
    std::os::unix::fs::chown(&dirs.upper, Some(root_uid), Some(root_gid)).map_err(|source| {
        RootfsError::Chown {
            path: dirs.upper.clone(),
            uid: root_uid,
            gid: root_gid,
            source,
        }
    })?;
    // Kept open until the overlay is mounted on them.
    // The trees are kept open until the overlay is mounted on them.
    let idmapped = match ids.userns {
        Some(userns) => idmapped_lowers(lower, userns)?,
        None => None,
    };
    let lowerdir = match &idmapped {
        Some(i) => i.paths.join(":"),
        None => lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    };
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
    drop(idmapped);
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
    Ok(())
}

/// The host ids a task's root filesystem is prepared for.
#[derive(Debug, Clone, Copy)]
pub(super) struct RootIds<'a> {
    /// The task's user namespace: overlay lower layers are mounted
    /// idmapped into it, so that their files keep their owners inside.
    pub userns: Option<BorrowedFd<'a>>,
    /// Host uid and gid of root inside the task: owner of the overlay's
    /// upper dir (the task's `/`), `/tmp`, `/run` and `/dev/shm`.
    pub root: (u32, u32),
}

/// Idmapped views of an overlay's lower directories: detached mounts
/// (kept open until the overlay is mounted) and the `lowerdir` entries
/// naming the layers through them.
struct IdmappedLowers {
    _trees: Vec<OwnedFd>,
    paths: Vec<String>,
}

/// Idmapped views of the `lower` directories for the overlay's
/// `lowerdir`: files owned by host root are owned by root inside (and
/// copied up as such). Layers that are directories of one parent on the
/// same mount (an image's, in the cache's `layers/`) share one idmapped
/// view of that parent (one `open_tree` + `mount_setattr` for all of
/// them), each named `/proc/self/fd/<fd>/<name>`; a lone directory, or
/// one that is a mount point, gets a view of its own,
/// `/proc/self/fd/<fd>`. A filesystem that cannot be idmapped gives
/// `None`, with a warning on stderr (the supervisor's log): the plain
/// directories are used, their files then show as `nobody` inside and
/// only world-writable places are writable.
fn idmapped_lowers(
    lower: &[PathBuf],
    userns: BorrowedFd<'_>,
) -> Result<Option<IdmappedLowers>, RootfsError> {
    let shared = shared_parent(lower);
    let mut trees = Vec::new();
    let mut paths = Vec::with_capacity(lower.len());
    let view = |dir: &Path, trees: &mut Vec<OwnedFd>| match idmapped_tree(dir, userns) {
        Ok(tree) => {
            let fd = tree.as_raw_fd();
            trees.push(tree);
            Ok(Some(format!("/proc/self/fd/{fd}")))
        }
        Err(e) if trees.is_empty() => {
            let _ = writeln!(
                io::stderr(),
                "drover supervisor: idmapped lower layers unavailable ({e}); \
                 the rootfs' files will show as nobody inside the task"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    };
    if let Some(parent) = shared {
        let Some(root) = view(parent, &mut trees)? else {
            return Ok(None);
        };
        for dir in lower {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            paths.push(format!("{root}/{name}"));
        }
    } else {
        for dir in lower {
            let Some(path) = view(dir, &mut trees)? else {
                return Ok(None);
            };
            paths.push(path);
        }
    }
    Ok(Some(IdmappedLowers {
        _trees: trees,
        paths,
    }))
}

/// The directory all of `lower` are direct children of, on its mount
/// (none of them a mount point or a symlink), when there are at least
/// two of them.
fn shared_parent(lower: &[PathBuf]) -> Option<&Path> {
    let parent = lower.first()?.parent()?;
    if lower.len() < 2 || lower.iter().any(|d| d.parent() != Some(parent)) {
        return None;
    }
    let mount = mount::mount_id(parent)?;
    lower
        .iter()
        .all(|d| {
            fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) && mount::mount_id(d) == Some(mount)
        })
        .then_some(parent)
}

/// A minimal `/dev` at `dev`: see [`DEV_ENTRIES`]. `owned` (`uid=..,gid=..`)
/// makes `/dev/shm` root's inside the task.
fn mount_dev(dev: &Path, owned: &str) -> Result<(), RootfsError> {
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
        .map_err(|source| RootfsError::Mknod {
            path: target.clone(),
            major,
            minor,
            source,
        })?;
        // mknod applies the umask.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o666))
            .map_err(io_err("chmod 0666", &target))?;
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
        Some(&format!("mode=1777,size=65536k,{owned}")),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(to, &path).map_err(|source| RootfsError::Symlink {
            path: path.clone(),
            to,
            source,
        })?;
    }
    Ok(())
}

/// How many symlinks [`bind_file_readonly_in`] follows before giving up.
const MAX_SYMLINKS: usize = 40;

/// Bind-mounts the file `source` read-only over `target` (absolute, as the
/// task sees it) inside the root directory `root` (`/` for a task without
/// a root filesystem, in the supervisor's private mount namespace).
///
/// `target` is resolved inside `root`, symlinks included, as the task will
/// see it after the pivot: an `/etc/resolv.conf` that links to
/// `/run/systemd/resolve/stub-resolv.conf` is mounted over that path in the
/// root, never over a host file. A missing file (or the missing end of a
/// symlink) is created empty first, with its parent directories, which
/// works where the root is writable (an overlay's upper dir, the host
/// view's tmpfs `/run`). The mount is made through `/proc/self/fd`, so no
/// path is resolved twice.
pub(super) fn bind_file_readonly_in(
    root: &Path,
    target: &Path,
    source: &Path,
) -> Result<(), RootfsError> {
    let mut path = target.to_path_buf();
    let mut found = None;
    for _ in 0..MAX_SYMLINKS {
        if let Some(file) = open_in_root(root, &path) {
            found = Some(file);
            break;
        }
        let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = path
            .file_name()
            .ok_or_else(|| RootfsError::NoFileName { path: path.clone() })?
            .to_owned();
        let link = open_in_root(root, &parent)
            .and_then(|dir| nix::fcntl::readlinkat(&dir, name.as_os_str()).ok());
        match link {
            // A dangling symlink: follow it by hand, inside the root.
            Some(link) => path = parent.join(link),
            None => {
                mkdir_p_in(root, &parent, None)?;
                create_file_in_root(root, &path)?;
            }
        }
    }
    let file = found.ok_or_else(|| RootfsError::SymlinkLoop {
        path: target.to_path_buf(),
        root: root.to_path_buf(),
    })?;
    let is_file = file.metadata().is_ok_and(|m| m.is_file());
    if !is_file {
        return Err(RootfsError::NotARegularFile {
            path,
            root: root.to_path_buf(),
            file: source.to_path_buf(),
        });
    }
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    do_mount(Some(source), &fd_path, None, MsFlags::MS_BIND, None).map_err(|source| {
        RootfsError::MountOver {
            path: path.clone(),
            source: Box::new(source),
        }
    })?;
    drop(file);
    // A bind mount takes the read-only flag only on a remount of itself.
    let mounted =
        open_in_root(root, &path).ok_or_else(|| RootfsError::Vanished { path: path.clone() })?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", mounted.as_raw_fd()));
    do_mount(
        None,
        &fd_path,
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|source| RootfsError::RemountReadOnly {
        path,
        source: Box::new(source),
    })
}

/// Creates the empty file `path` (mode 0644) inside `root`, every
/// component resolved inside `root`; an existing file is left as it is.
fn create_file_in_root(root: &Path, path: &Path) -> Result<(), RootfsError> {
    let root_dir = fs::File::open(root).map_err(io_err("open", root))?;
    let c_path = cstring(path)?;
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.mode = 0o644;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: `c_path` is NUL-terminated and `how` a valid open_how whose
    // size is passed; both outlive the call. The returned descriptor, if
    // any, is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    match i32::try_from(fd).ok().filter(|fd| *fd >= 0) {
        Some(fd) => {
            // SAFETY: openat2 just returned this descriptor and nothing
            // else owns it; it is closed right away.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(())
        }
        None => Err(RootfsError::CreateInRoot {
            path: path.to_path_buf(),
            root: root.to_path_buf(),
            source: io::Error::last_os_error(),
        }),
    }
}

/// The registry reference an [`Rootfs::Oci`] image names, when it is not
/// an absolute path and parses as one.
pub(crate) fn registry_ref(image: &Path) -> Option<drover_model::image_ref::ImageRef> {
    if image.is_absolute() {
        return None;
    }
    image
        .to_str()
        .and_then(|s| drover_model::image_ref::ImageRef::parse(s).ok())
}

#[cfg(test)]
mod tests;
