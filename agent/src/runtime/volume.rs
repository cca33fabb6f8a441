//! Volumes: host directories or files bound into a task's root, and tmpfs
//! mounts of a bounded size.
//!
//! Three stages, as for the root filesystem:
//! - [`Volume::validate`] checks the shape (absolute, normal paths; no
//!   target at `/` or under `/proc`, `/sys`, `/dev`);
//! - the agent's admission (`admit.rs`) checks bind sources against the
//!   node policy (`allowed_host_paths`) on their canonical path, and
//!   records that path in the spec, before anything starts;
//! - [`mount_all`] runs in the supervisor, in its private mount namespace,
//!   after the root is assembled and before the task's child pivots into
//!   it.
//!
//! Targets are resolved inside the task's root (`openat2` with
//! `RESOLVE_IN_ROOT`), so a symlink in an image cannot aim a mount at a
//! host path. A missing target is created in the root: with a `dir` or
//! `oci` rootfs in the task's overlay upper dir (the lower layers are never
//! written); with the `host` rootfs, whose view is read-only, only below
//! its private tmpfs `/tmp` and `/run` (elsewhere the target must exist on
//! the host, which admission checks).
//!
//! Bind volumes are not idmapped: with a user namespace, a host file owned
//! by host id `host_base + n` is owned by `n` inside and any other owner
//! shows as `nobody`. To let root inside write to a volume, the operator
//! gives it to the mapped root (`chown host_base:host_base`). Idmapping
//! writable binds would let root inside create setuid files owned by the
//! host's root; a read-only bind gains nothing from it either.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rootfs::{cstring, mkdir_p_in, open_in_root, set_mount_attr, MountAttr};

/// Size of a tmpfs volume whose spec gives none (`size_mb` 0).
pub const DEFAULT_TMPFS_MB: u64 = 64;

/// Paths a volume may not be mounted at, or under: the task's own
/// `/proc`, `/sys` and `/dev`, which the runtime builds.
pub const RESERVED_TARGETS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Directories of the `host` rootfs that are private tmpfs mounts, below
/// which missing volume targets can be created.
pub const HOST_WRITABLE_DIRS: [&str; 2] = ["/tmp", "/run"];

/// A mount into the task's filesystem.
///
/// JSON: `{"type":"bind","source":"/srv/data","target":"/data","read_only":true}`
/// or `{"type":"tmpfs","target":"/scratch","size_mb":16}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Volume {
    /// A host directory or file, which the node's policy must allow
    /// (`allowed_host_paths`), bound recursively at `target`;
    /// `nosuid,nodev` always, read-only on request.
    Bind {
        /// Absolute host path; replaced by its canonical form (symlinks
        /// resolved) when the task is admitted.
        source: PathBuf,
        /// Absolute path inside the task's root.
        target: PathBuf,
        /// Mount it read-only (every submount too).
        #[serde(default)]
        read_only: bool,
    },
    /// A fresh tmpfs, mode 1777, owned by root inside the task.
    Tmpfs {
        /// Absolute path inside the task's root.
        target: PathBuf,
        /// Size limit in MiB; 0 means [`DEFAULT_TMPFS_MB`].
        #[serde(default)]
        size_mb: u64,
    },
}

impl Volume {
    /// Where the volume appears inside the task.
    pub fn target(&self) -> &Path {
        match self {
            Volume::Bind { target, .. } | Volume::Tmpfs { target, .. } => target,
        }
    }

    /// Checks the shape: absolute paths without `.`, `..` or NUL; a target
    /// that is not `/` and not at or under [`RESERVED_TARGETS`].
    pub fn validate(&self) -> Result<(), String> {
        let target = self.target();
        check_path("target", target)?;
        if target == Path::new("/") {
            return Err("volume target / would hide the whole root filesystem".to_owned());
        }
        if let Some(r) = RESERVED_TARGETS
            .iter()
            .find(|r| target.starts_with(Path::new(r)))
        {
            return Err(format!(
                "volume target {} is at or under {r}, which the runtime provides",
                target.display()
            ));
        }
        match self {
            Volume::Bind { source, .. } => check_path("source", source),
            Volume::Tmpfs { size_mb, .. } if *size_mb > 1 << 20 => Err(format!(
                "tmpfs volume {}: size_mb {size_mb} is over 1048576 (1 TiB)",
                target.display()
            )),
            Volume::Tmpfs { .. } => Ok(()),
        }
    }
}

fn check_path(what: &str, path: &Path) -> Result<(), String> {
    if !is_normal_absolute(path) {
        return Err(format!(
            "volume {what} {} must be an absolute path without `.`, `..` or NUL",
            path.display()
        ));
    }
    Ok(())
}

/// Absolute, without NUL and without `.` or `..` components (checked on
/// the bytes: `Path::components` silently drops a `.`).
pub(super) fn is_normal_absolute(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    path.is_absolute()
        && !bytes.contains(&0)
        && !bytes.split(|b| *b == b'/').any(|c| c == b"." || c == b"..")
}

/// Volumes in mount order: parents before what is mounted below them.
pub(super) fn in_mount_order(volumes: &[Volume]) -> Vec<&Volume> {
    let mut sorted: Vec<&Volume> = volumes.iter().collect();
    sorted.sort_by_key(|v| v.target().components().count());
    sorted
}

/// Mounts `volumes` into the assembled root `merged` (supervisor side,
/// private mount namespace). `root_owner` is the host uid and gid of root
/// inside the task (tmpfs volumes belong to it); `may_create` says whether
/// a missing target may be created at that path (see the module docs).
pub(super) fn mount_all(
    merged: &Path,
    volumes: &[Volume],
    root_owner: (u32, u32),
    may_create: &dyn Fn(&Path) -> bool,
) -> Result<(), String> {
    for volume in in_mount_order(volumes) {
        mount_one(merged, volume, root_owner, may_create)
            .map_err(|e| format!("volume {}: {e}", volume.target().display()))?;
    }
    Ok(())
}

fn mount_one(
    merged: &Path,
    volume: &Volume,
    root_owner: (u32, u32),
    may_create: &dyn Fn(&Path) -> bool,
) -> Result<(), String> {
    let target = volume.target();
    match volume {
        Volume::Bind {
            source, read_only, ..
        } => {
            let source_fd = open_no_symlinks(source)?;
            let is_dir = std::fs::File::from(
                source_fd
                    .try_clone()
                    .map_err(|e| format!("dup {}: {e}", source.display()))?,
            )
            .metadata()
            .map_err(|e| format!("stat {}: {e}", source.display()))?
            .is_dir();
            let target_fd = ensure_target(merged, target, is_dir, may_create)?;
            // A detached copy of the source tree, made read-only and
            // nosuid before it is attached: it is never visible writable.
            let tree = open_tree(&source_fd, source)?;
            let mut attr = MountAttr::NOSUID | MountAttr::NODEV;
            if *read_only {
                attr |= MountAttr::RDONLY;
            }
            set_mount_attr(&tree, source, attr, true)?;
            move_mount(&tree, &target_fd, target)
        }
        Volume::Tmpfs { size_mb, .. } => {
            let target_fd = ensure_target(merged, target, true, may_create)?;
            let size = if *size_mb == 0 {
                DEFAULT_TMPFS_MB
            } else {
                *size_mb
            };
            let (uid, gid) = root_owner;
            let options = format!("size={size}m,mode=1777,uid={uid},gid={gid}");
            let at = PathBuf::from(format!("/proc/self/fd/{}", target_fd.as_raw_fd()));
            nix::mount::mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|e| format!("mount(tmpfs, {}, {options}): {e}", target.display()))
        }
    }
}

/// Opens the target (creating it when missing and allowed) inside `merged`.
fn ensure_target(
    merged: &Path,
    target: &Path,
    dir: bool,
    may_create: &dyn Fn(&Path) -> bool,
) -> Result<OwnedFd, String> {
    if let Some(f) = open_in_root(merged, target) {
        let is_dir = f
            .metadata()
            .map_err(|e| format!("stat the target: {e}"))?
            .is_dir();
        if is_dir != dir {
            return Err(format!(
                "the target is {} but the source is {}",
                if is_dir {
                    "a directory"
                } else {
                    "not a directory"
                },
                if dir { "a directory" } else { "a file" }
            ));
        }
        return Ok(OwnedFd::from(f));
    }
    if !may_create(target) {
        return Err(format!(
            "the target does not exist and cannot be created in this root (the host view \
             is read-only: use an existing path or one under {})",
            HOST_WRITABLE_DIRS.join(" or ")
        ));
    }
    if dir {
        mkdir_p_in(merged, target, None)?;
    } else {
        let parent = target.parent().unwrap_or(Path::new("/"));
        mkdir_p_in(merged, parent, None)?;
        let parent_fd = open_in_root(merged, parent)
            .ok_or_else(|| format!("{} is not a directory in the root", parent.display()))?;
        let dir_fd = reopen_dir(&parent_fd, parent)?;
        let name = cstring(Path::new(target.file_name().unwrap_or_default()))?;
        // SAFETY: a valid directory descriptor and a NUL-terminated single
        // component; the new descriptor is closed at once.
        let fd = unsafe {
            libc::openat(
                dir_fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(format!(
                "create the target file: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: openat just returned it; closed here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    open_in_root(merged, target)
        .map(OwnedFd::from)
        .ok_or_else(|| "the target vanished after it was created".to_owned())
}

/// Opens an `O_PATH` directory descriptor as a real one (for `openat`).
fn reopen_dir(fd: &std::fs::File, path: &Path) -> Result<OwnedFd, String> {
    let proc = cstring(&PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))?;
    // SAFETY: NUL-terminated path; the descriptor is owned below.
    let dir = unsafe {
        libc::open(
            proc.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(format!(
            "open {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    // SAFETY: just returned by open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dir) })
}

/// Opens a host path with `O_PATH`, refusing any symlink on the way: the
/// agent recorded the canonical path it checked against the policy, so a
/// symlink swapped in since cannot redirect the mount.
fn open_no_symlinks(path: &Path) -> Result<OwnedFd, String> {
    let c_path = cstring(path)?;
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: NUL-terminated path and a valid open_how whose size is
    // passed; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = i32::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| {
            format!(
                "openat2({}, RESOLVE_NO_SYMLINKS): {}",
                path.display(),
                io::Error::last_os_error()
            )
        })?;
    // SAFETY: openat2 just returned it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of
/// the mount tree at `fd`.
fn open_tree(fd: &OwnedFd, path: &Path) -> Result<OwnedFd, String> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let flags = OPEN_TREE_CLONE
        | AT_RECURSIVE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: a valid descriptor and an empty NUL-terminated path.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    let tree = i32::try_from(tree)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| {
            format!(
                "open_tree({}, OPEN_TREE_CLONE|AT_RECURSIVE): {}",
                path.display(),
                io::Error::last_os_error()
            )
        })?;
    // SAFETY: open_tree just returned it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(tree) })
}

/// Attaches the detached tree `tree` on `target_fd`.
fn move_mount(tree: &OwnedFd, target_fd: &OwnedFd, target: &Path) -> Result<(), String> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: valid descriptors and empty NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target_fd.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(format!(
            "move_mount(onto {}): {}",
            target.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn bind(source: &str, target: &str) -> Volume {
        Volume::Bind {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    #[test]
    fn shapes() {
        assert!(bind("/srv/data", "/data").validate().is_ok());
        for (s, t) in [
            ("srv", "/data"),
            ("/srv/../etc", "/data"),
            ("/srv", "data"),
            ("/srv", "/"),
            ("/srv", "/proc"),
            ("/srv", "/proc/sys"),
            ("/srv", "/dev/shm"),
            ("/srv", "/sys/x"),
            ("/srv", "/a/./b"),
        ] {
            assert!(bind(s, t).validate().is_err(), "{s} -> {t}");
        }
        assert!(bind("/srv", "/process").validate().is_ok());
        let json = r#"{"type":"tmpfs","target":"/scratch","size_mb":16}"#;
        let v: Volume = serde_json::from_str(json).unwrap();
        assert_eq!(
            v,
            Volume::Tmpfs {
                target: "/scratch".into(),
                size_mb: 16
            }
        );
        assert!(serde_json::from_str::<Volume>(r#"{"type":"nfs","target":"/x"}"#).is_err());
        let order = [bind("/a", "/x/y/z"), bind("/b", "/x")];
        let sorted = in_mount_order(&order);
        assert_eq!(sorted[0].target(), Path::new("/x"));
    }
}
