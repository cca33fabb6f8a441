//! The errors of [`super`]: checking a [`Rootfs`](super::Rootfs) and assembling a
//! task's root.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::io_error::IoError;

/// Errors checking a [`Rootfs`](super::Rootfs) and assembling a task's root; each names
/// the path and, for a failed call, the syscall with its arguments.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A [`Rootfs::Oci`](super::Rootfs::Oci) image that is neither an
    /// absolute path nor a registry reference.
    #[error("rootfs image {} must be an absolute path or an image reference", image.display())]
    ImageNotAbsolute {
        /// The image as given.
        image: PathBuf,
    },
    /// A [`Rootfs::Dir`](super::Rootfs::Dir) given as a relative path.
    #[error("rootfs directory {} must be an absolute path", path.display())]
    DirNotAbsolute {
        /// The directory as given.
        path: PathBuf,
    },
    /// A [`Rootfs::Dir`](super::Rootfs::Dir) path that would be read as overlay options.
    #[error("rootfs directory {} must not contain ',', ':', '\\' or NUL", path.display())]
    DirUnusableInOverlay {
        /// The directory as given.
        path: PathBuf,
    },
    /// A [`Rootfs::Dir`](super::Rootfs::Dir) that is a file.
    #[error("rootfs directory {} is not a directory", path.display())]
    DirNotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// A [`Rootfs::Dir`](super::Rootfs::Dir) that cannot be `stat`ed.
    #[error(
        "rootfs directory {} does not exist or cannot be read: {source}; \
         create it or name another rootfs",
        path.display()
    )]
    DirUnreadable {
        /// The directory as given.
        path: PathBuf,
        /// Why `stat` failed.
        #[source]
        source: io::Error,
    },
    /// A path that cannot be passed to a syscall.
    #[error("path {} contains a NUL byte", path.display())]
    NulByte {
        /// The path.
        path: PathBuf,
    },
    /// A parent directory, resolved inside the root, is missing or not a
    /// directory.
    #[error("{} is not a directory in the root filesystem", path.display())]
    NotADirectoryInRoot {
        /// The path, as the task sees it.
        path: PathBuf,
    },
    /// `mkdirat` inside the root failed.
    #[error("mkdir {} in the root filesystem: {source}", path.display())]
    MkdirInRoot {
        /// The directory, as the task sees it.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `fchownat` inside the root failed.
    #[error("chown {uid}:{gid} {} in the root filesystem: {source}", path.display())]
    ChownInRoot {
        /// The directory, as the task sees it.
        path: PathBuf,
        /// Host uid given.
        uid: u32,
        /// Host gid given.
        gid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `openat2` with `O_CREAT` inside the root failed.
    #[error("create {} in {}: {source}", path.display(), root.display())]
    CreateInRoot {
        /// The file, as the task sees it.
        path: PathBuf,
        /// The root directory.
        root: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file operation on the host side of the root failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// `chown` of a directory of the root failed.
    #[error("chown {uid}:{gid} {}: {source}", path.display())]
    Chown {
        /// The directory.
        path: PathBuf,
        /// Host uid given.
        uid: u32,
        /// Host gid given.
        gid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Something other than a directory where a mount point must be.
    #[error("{} must be a directory (not a file or symlink) to mount on", path.display())]
    NotAMountDirectory {
        /// The would-be mount point.
        path: PathBuf,
    },
    /// The host view lacks a directory the task's own is mounted on.
    #[error("the host has no directory /{dir} to mount the task's on")]
    HostDirMissing {
        /// The directory below `/`.
        dir: &'static str,
    },
    /// An overlay root without any lower directory.
    #[error("an overlay root needs at least one lower directory")]
    NoLowerDirectory,
    /// An overlay directory that would be read as mount options.
    #[error("overlay directory {} contains ',', ':' or '\\'", path.display())]
    OverlayDirUnusable {
        /// The directory.
        path: PathBuf,
    },
    /// `mount(2)` failed.
    #[error(transparent)]
    Mount(Box<MountError>),
    /// The bind mount of a file over its target failed.
    #[error("{source} (mounting over {} in the task's root)", path.display())]
    MountOver {
        /// The target as resolved in the root.
        path: PathBuf,
        /// The failed mount.
        #[source]
        source: Box<MountError>,
    },
    /// The read-only remount of a file bound over its target failed.
    #[error("{source} (making {} read-only)", path.display())]
    RemountReadOnly {
        /// The target as resolved in the root.
        path: PathBuf,
        /// The failed mount.
        #[source]
        source: Box<MountError>,
    },
    /// `mount_setattr(2)` failed.
    #[error("mount_setattr({}, attr_set {attr_set:#x}): {source}", path.display())]
    MountSetattr {
        /// The mount (or detached tree) involved.
        path: PathBuf,
        /// The `MOUNT_ATTR_*` bits to set.
        attr_set: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `open_tree(2)` failed.
    #[error("open_tree({}, OPEN_TREE_CLONE): {source}", path.display())]
    OpenTree {
        /// The directory to clone.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mknod(2)` of a device node failed.
    #[error("mknod({}, S_IFCHR, {major}:{minor}): {source}", path.display())]
    Mknod {
        /// The device node.
        path: PathBuf,
        /// Device major number.
        major: u64,
        /// Device minor number.
        minor: u64,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// A `/dev` symlink could not be made.
    #[error("symlink {} -> {to}: {source}", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
        /// What it points to.
        to: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A mount target that names no file (`/`, or ending in `..`).
    #[error("{} names no file", path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },
    /// A mount target whose symlinks do not end.
    #[error("{} in {}: too many levels of symbolic links", path.display(), root.display())]
    SymlinkLoop {
        /// The target, as the task sees it.
        path: PathBuf,
        /// The root directory.
        root: PathBuf,
    },
    /// A file mount target that is not a regular file.
    #[error(
        "{} in {} is not a regular file; cannot mount {} over it",
        path.display(),
        root.display(),
        file.display()
    )]
    NotARegularFile {
        /// The target as resolved in the root.
        path: PathBuf,
        /// The root directory.
        root: PathBuf,
        /// The file that was to be mounted over it.
        file: PathBuf,
    },
    /// A mount target disappeared right after the mount.
    #[error("{} vanished after mounting over it", path.display())]
    Vanished {
        /// The target as resolved in the root.
        path: PathBuf,
    },
}

/// A failed `mount(2)`, with the arguments it was given.
#[derive(Debug, thiserror::Error)]
#[error(
    "mount({}, {}, {}, {flags:?}, {}): {errno}",
    from.as_ref().map_or_else(|| "none".to_owned(), |s| s.display().to_string()),
    target.display(),
    fstype.unwrap_or("none"),
    data.as_deref().unwrap_or("")
)]
pub struct MountError {
    /// The source (`None` for a remount).
    pub from: Option<PathBuf>,
    /// The mount point.
    pub target: PathBuf,
    /// The filesystem type (`None` for a bind or remount).
    pub fstype: Option<&'static str>,
    /// The flags.
    pub flags: MsFlags,
    /// The options.
    pub data: Option<String>,
    /// The errno.
    #[source]
    pub errno: Errno,
}

// Boxed inside `RootfsError`: a mount's arguments would double the size of
// every `Result` that carries one.
impl From<MountError> for RootfsError {
    fn from(e: MountError) -> Self {
        RootfsError::Mount(Box::new(e))
    }
}
