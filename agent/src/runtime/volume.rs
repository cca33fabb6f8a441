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

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rootfs::{cstring, mkdir_p_in, open_in_root, set_mount_attr, MountAttr, RootfsError};

/// Errors checking a [`Volume`] and mounting it. Those of `mount_all`
/// name the volume's target first, then the path and syscall involved.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A source or target that is relative or not normal.
    #[error("volume {what} {} must be an absolute path without `.`, `..` or NUL", path.display())]
    NotNormalAbsolute {
        /// "source" or "target".
        what: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// A volume at `/`.
    #[error("volume target / would hide the whole root filesystem")]
    TargetIsRoot,
    /// A target at or under one of [`RESERVED_TARGETS`].
    #[error("volume target {} is at or under {reserved}, which the runtime provides", target.display())]
    ReservedTarget {
        /// The target.
        target: PathBuf,
        /// The reserved directory it is at or under.
        reserved: &'static str,
    },
    /// A tmpfs larger than 1 TiB.
    #[error("tmpfs volume {}: size_mb {size_mb} is over 1048576 (1 TiB)", target.display())]
    TmpfsTooLarge {
        /// The target.
        target: PathBuf,
        /// The size asked for.
        size_mb: u64,
    },
    /// The bind source could not be opened without following a symlink.
    #[error(
        "volume {}: openat2({}, RESOLVE_NO_SYMLINKS): {source}",
        target.display(),
        path.display()
    )]
    OpenSource {
        /// The volume's target.
        target: PathBuf,
        /// The bind source.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file operation on the bind source failed.
    #[error("volume {}: {op} {}: {source}", target.display(), path.display())]
    SourceIo {
        /// The volume's target.
        target: PathBuf,
        /// "dup" or "stat".
        op: &'static str,
        /// The bind source.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The existing target could not be `stat`ed.
    #[error("volume {}: stat the target: {source}", target.display())]
    StatTarget {
        /// The volume's target.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A directory mounted on a file, or a file on a directory.
    #[error(
        "volume {}: the target is {} but the source is {}",
        target.display(),
        if *target_is_dir { "a directory" } else { "not a directory" },
        if *source_is_dir { "a directory" } else { "a file" }
    )]
    KindMismatch {
        /// The volume's target.
        target: PathBuf,
        /// Whether the target is a directory.
        target_is_dir: bool,
        /// Whether the source (a tmpfs is one) is a directory.
        source_is_dir: bool,
    },
    /// A missing target that this root cannot hold.
    #[error(
        "volume {}: the target does not exist and cannot be created in this root (the host \
         view is read-only: use an existing path or one under {})",
        target.display(),
        HOST_WRITABLE_DIRS.join(" or ")
    )]
    CannotCreateTarget {
        /// The volume's target.
        target: PathBuf,
    },
    /// The parent of a file target is not a directory in the root.
    #[error("volume {}: {} is not a directory in the root", target.display(), parent.display())]
    ParentNotADirectory {
        /// The volume's target.
        target: PathBuf,
        /// Its parent directory.
        parent: PathBuf,
    },
    /// The parent of a file target could not be opened as a directory.
    #[error("volume {}: open {}: {source}", target.display(), parent.display())]
    OpenParent {
        /// The volume's target.
        target: PathBuf,
        /// Its parent directory.
        parent: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file target could not be created.
    #[error("volume {}: create the target file: {source}", target.display())]
    CreateTarget {
        /// The volume's target.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A target disappeared right after it was created.
    #[error("volume {}: the target vanished after it was created", target.display())]
    TargetVanished {
        /// The volume's target.
        target: PathBuf,
    },
    /// `open_tree(2)` of the bind source failed.
    #[error(
        "volume {}: open_tree({}, OPEN_TREE_CLONE|AT_RECURSIVE): {source}",
        target.display(),
        path.display()
    )]
    OpenTree {
        /// The volume's target.
        target: PathBuf,
        /// The bind source.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `move_mount(2)` of the source tree onto the target failed.
    #[error("volume {}: move_mount(onto {}): {source}", target.display(), target.display())]
    MoveMount {
        /// The volume's target.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mount(2)` of a tmpfs failed.
    #[error(
        "volume {}: mount(tmpfs, {}, {options}): {source}",
        target.display(),
        target.display()
    )]
    MountTmpfs {
        /// The volume's target.
        target: PathBuf,
        /// The mount options.
        options: String,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// A step shared with the root filesystem's assembly failed.
    #[error("volume {}: {source}", target.display())]
    Rootfs {
        /// The volume's target.
        target: PathBuf,
        /// What failed.
        #[source]
        source: RootfsError,
    },
}

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
    pub fn validate(&self) -> Result<(), VolumeError> {
        let target = self.target();
        check_path("target", target)?;
        if target == Path::new("/") {
            return Err(VolumeError::TargetIsRoot);
        }
        if let Some(reserved) = RESERVED_TARGETS
            .into_iter()
            .find(|r| target.starts_with(Path::new(r)))
        {
            return Err(VolumeError::ReservedTarget {
                target: target.to_path_buf(),
                reserved,
            });
        }
        match self {
            Volume::Bind { source, .. } => check_path("source", source),
            Volume::Tmpfs { size_mb, .. } if *size_mb > 1 << 20 => {
                Err(VolumeError::TmpfsTooLarge {
                    target: target.to_path_buf(),
                    size_mb: *size_mb,
                })
            }
            Volume::Tmpfs { .. } => Ok(()),
        }
    }
}

fn check_path(what: &'static str, path: &Path) -> Result<(), VolumeError> {
    if !is_normal_absolute(path) {
        return Err(VolumeError::NotNormalAbsolute {
            what,
            path: path.to_path_buf(),
        });
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
) -> Result<(), VolumeError> {
    for volume in in_mount_order(volumes) {
        mount_one(merged, volume, root_owner, may_create)?;
    }
    Ok(())
}

fn mount_one(
    merged: &Path,
    volume: &Volume,
    root_owner: (u32, u32),
    may_create: &dyn Fn(&Path) -> bool,
) -> Result<(), VolumeError> {
    let target = volume.target();
    let shared = |source| VolumeError::Rootfs {
        target: target.to_path_buf(),
        source,
    };
    match volume {
        Volume::Bind {
            source, read_only, ..
        } => {
            let source_io = |op| {
                move |e| VolumeError::SourceIo {
                    target: target.to_path_buf(),
                    op,
                    path: source.clone(),
                    source: e,
                }
            };
            let c_source = cstring(source).map_err(shared)?;
            let source_fd = open_no_symlinks(&c_source).map_err(|e| VolumeError::OpenSource {
                target: target.to_path_buf(),
                path: source.clone(),
                source: e,
            })?;
            let is_dir = std::fs::File::from(source_fd.try_clone().map_err(source_io("dup"))?)
                .metadata()
                .map_err(source_io("stat"))?
                .is_dir();
            let target_fd = ensure_target(merged, target, is_dir, may_create)?;
            // A detached copy of the source tree, made read-only and
            // nosuid before it is attached: it is never visible writable.
            let tree = open_tree(&source_fd).map_err(|e| VolumeError::OpenTree {
                target: target.to_path_buf(),
                path: source.clone(),
                source: e,
            })?;
            let mut attr = MountAttr::NOSUID | MountAttr::NODEV;
            if *read_only {
                attr |= MountAttr::RDONLY;
            }
            set_mount_attr(&tree, source, attr, true).map_err(shared)?;
            move_mount(&tree, &target_fd).map_err(|source| VolumeError::MoveMount {
                target: target.to_path_buf(),
                source,
            })
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
            .map_err(|source| VolumeError::MountTmpfs {
                target: target.to_path_buf(),
                options,
                source,
            })
        }
    }
}

/// Opens the target (creating it when missing and allowed) inside `merged`.
fn ensure_target(
    merged: &Path,
    target: &Path,
    dir: bool,
    may_create: &dyn Fn(&Path) -> bool,
) -> Result<OwnedFd, VolumeError> {
    let shared = |source| VolumeError::Rootfs {
        target: target.to_path_buf(),
        source,
    };
    if let Some(f) = open_in_root(merged, target) {
        let is_dir = f
            .metadata()
            .map_err(|source| VolumeError::StatTarget {
                target: target.to_path_buf(),
                source,
            })?
            .is_dir();
        if is_dir != dir {
            return Err(VolumeError::KindMismatch {
                target: target.to_path_buf(),
                target_is_dir: is_dir,
                source_is_dir: dir,
            });
        }
        return Ok(OwnedFd::from(f));
    }
    if !may_create(target) {
        return Err(VolumeError::CannotCreateTarget {
            target: target.to_path_buf(),
        });
    }
    if dir {
        mkdir_p_in(merged, target, None).map_err(shared)?;
    } else {
        let parent = target.parent().unwrap_or(Path::new("/"));
        mkdir_p_in(merged, parent, None).map_err(shared)?;
        let parent_fd =
            open_in_root(merged, parent).ok_or_else(|| VolumeError::ParentNotADirectory {
                target: target.to_path_buf(),
                parent: parent.to_path_buf(),
            })?;
        let dir_fd = reopen_dir(&parent_fd).map_err(|source| VolumeError::OpenParent {
            target: target.to_path_buf(),
            parent: parent.to_path_buf(),
            source,
        })?;
        let name = cstring(Path::new(target.file_name().unwrap_or_default())).map_err(shared)?;
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
            return Err(VolumeError::CreateTarget {
                target: target.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: openat just returned it; closed here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    open_in_root(merged, target)
        .map(OwnedFd::from)
        .ok_or_else(|| VolumeError::TargetVanished {
            target: target.to_path_buf(),
        })
}

/// Opens an `O_PATH` directory descriptor as a real one (for `openat`).
fn reopen_dir(fd: &std::fs::File) -> io::Result<OwnedFd> {
    // A decimal number cannot hold a NUL; std turns one into InvalidInput.
    let proc = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // SAFETY: NUL-terminated path; the descriptor is owned below.
    let dir = unsafe {
        libc::open(
            proc.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dir) })
}

/// Opens a host path with `O_PATH`, refusing any symlink on the way: the
/// agent recorded the canonical path it checked against the policy, so a
/// symlink swapped in since cannot redirect the mount.
fn open_no_symlinks(c_path: &CStr) -> io::Result<OwnedFd> {
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
        .ok_or_else(io::Error::last_os_error)?;
    // SAFETY: openat2 just returned it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of
/// the mount tree at `fd`.
fn open_tree(fd: &OwnedFd) -> io::Result<OwnedFd> {
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
        .ok_or_else(io::Error::last_os_error)?;
    // SAFETY: open_tree just returned it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(tree) })
}

/// Attaches the detached tree `tree` on `target_fd`.
fn move_mount(tree: &OwnedFd, target_fd: &OwnedFd) -> io::Result<()> {
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
        return Err(io::Error::last_os_error());
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

    #[test]
    fn mount_errors_name_the_volume_first() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("dir")).unwrap();
        let message = |target: &str, dir: bool, may_create: bool| {
            ensure_target(root.path(), Path::new(target), dir, &|_| may_create)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message("/dir", false, true),
            "volume /dir: the target is a directory but the source is a file"
        );
        assert_eq!(
            message("/missing", true, false),
            "volume /missing: the target does not exist and cannot be created in this root \
             (the host view is read-only: use an existing path or one under /tmp or /run)"
        );
        assert!(ensure_target(root.path(), Path::new("/new/sub"), true, &|_| true).is_ok());
        assert!(root.path().join("new/sub").is_dir());
    }
}
