//! The mount system calls a task's root is built with: plain mounts,
//! `mount_setattr` (read-only recursion, idmapped binds), each failure
//! naming the call and the paths involved.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::{cstring, MountError, RootfsError};

pub(super) fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&'static str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    mount(source, target, fstype, flags, data).map_err(|errno| MountError {
        from: source.map(Path::to_path_buf),
        target: target.to_path_buf(),
        fstype,
        flags,
        data: data.map(str::to_owned),
        errno,
    })
}

/// Mount attributes for `mount_setattr(2)` (`MOUNT_ATTR_*` from
/// `linux/mount.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MountAttr(u64);

impl MountAttr {
    pub const RDONLY: MountAttr = MountAttr(0x1);
    pub const NOSUID: MountAttr = MountAttr(0x2);
    pub const NODEV: MountAttr = MountAttr(0x4);
    const IDMAP: MountAttr = MountAttr(0x0010_0000);
}

impl std::ops::BitOr for MountAttr {
    type Output = MountAttr;
    fn bitor(self, rhs: MountAttr) -> MountAttr {
        MountAttr(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for MountAttr {
    fn bitor_assign(&mut self, rhs: MountAttr) {
        self.0 |= rhs.0;
    }
}

/// `struct mount_attr` from `linux/mount.h`.
#[repr(C)]
pub(super) struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(super) const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `mount_setattr(dirfd, path, flags, attr)`; `what` names it in errors.
pub(super) fn mount_setattr(
    dirfd: libc::c_int,
    path: &CString,
    flags: libc::c_uint,
    attr: &RawMountAttr,
    what: &Path,
) -> Result<(), RootfsError> {
    // SAFETY: `path` is NUL-terminated and `attr` a valid mount_attr whose
    // size is passed; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const RawMountAttr,
            std::mem::size_of::<RawMountAttr>(),
        )
    };
    if rc != 0 {
        return Err(RootfsError::MountSetattr {
            path: what.to_path_buf(),
            attr_set: attr.attr_set,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sets `attr` on the mount (or detached tree) `fd`, and every mount below
/// it when `recursive`; `what` names it in errors.
pub(crate) fn set_mount_attr(
    fd: &impl AsRawFd,
    what: &Path,
    attr: MountAttr,
    recursive: bool,
) -> Result<(), RootfsError> {
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    let raw = RawMountAttr {
        attr_set: attr.0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(fd.as_raw_fd(), &CString::default(), flags, &raw, what)
}

/// Makes every mount at or below `path` read-only (`mount_setattr(2)` with
/// `AT_RECURSIVE`); a plain remount would only change the top mount.
pub(super) fn make_readonly_recursive(path: &Path) -> Result<(), RootfsError> {
    let raw = RawMountAttr {
        attr_set: MountAttr::RDONLY.0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(libc::AT_FDCWD, &cstring(path)?, AT_RECURSIVE, &raw, path)
}

/// The id of the mount `path` is on (`statx` `STATX_MNT_ID`), following
/// symlinks; `None` where the kernel does not say.
pub(super) fn mount_id(path: &Path) -> Option<u64> {
    let c_path = cstring(path).ok()?;
    // SAFETY: all-zero is a valid `statx` (plain integers).
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer of the right type that
    // outlives the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            libc::STATX_MNT_ID,
            &raw mut buf,
        )
    };
    (rc == 0 && buf.stx_mask & libc::STATX_MNT_ID != 0).then_some(buf.stx_mnt_id)
}

/// An idmapped view of the directory `source`, as a detached mount (not
/// attached anywhere; gone when the descriptor is closed, unless mounted
/// on): files owned by host id `n` appear owned by host id `host_base +
/// n`, i.e. by container id `n` in the user namespace `userns`. Read-only,
/// nosuid, nodev: only overlay lower layers use it, named to the overlay
/// as `/proc/self/fd/<fd>` (no mount point to create, no mount to move
/// into the tree: two syscalls a layer fewer). Fails with `EINVAL` on
/// filesystems that do not support idmapped mounts.
pub(super) fn idmapped_tree(source: &Path, userns: BorrowedFd<'_>) -> Result<OwnedFd, RootfsError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c_source = cstring(source)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: NUL-terminated path; the descriptor is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_source.as_ptr(),
            flags,
        )
    };
    let tree = i32::try_from(tree)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| RootfsError::OpenTree {
            path: source.to_path_buf(),
            source: io::Error::last_os_error(),
        })?;
    // SAFETY: open_tree just returned it; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let raw = RawMountAttr {
        attr_set: (MountAttr::IDMAP | MountAttr::RDONLY | MountAttr::NOSUID | MountAttr::NODEV).0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    mount_setattr(
        tree.as_raw_fd(),
        &CString::default(),
        libc::AT_EMPTY_PATH as libc::c_uint,
        &raw,
        source,
    )?;
    Ok(tree)
}
