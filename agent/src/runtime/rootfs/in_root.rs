//! Paths inside a task's root as the task will see them: every component
//! resolved inside the root (`openat2(RESOLVE_IN_ROOT)`), so that a symlink
//! in an image or rootfs directory cannot lead a lookup, read or mkdir out
//! of it.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::RootfsError;

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
/// creation out of it. Mode 0755; each directory created is given to
/// `owner` (host uid, gid) when there is one.
pub(crate) fn mkdir_p_in(
    root: &Path,
    path: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), RootfsError> {
    let mut current = PathBuf::from("/");
    for component in path.components() {
        let std::path::Component::Normal(name) = component else {
            continue;
        };
        let next = current.join(name);
        if !is_dir_in(root, &next) {
            let parent =
                open_in_root(root, &current).ok_or_else(|| RootfsError::NotADirectoryInRoot {
                    path: current.clone(),
                })?;
            let c_name = CString::new(name.as_bytes())
                .map_err(|_| RootfsError::NulByte { path: next.clone() })?;
            // SAFETY: `parent` is an open descriptor and `c_name` a
            // NUL-terminated single component; both outlive the call.
            let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), c_name.as_ptr(), 0o755) };
            // 0755 whatever the umask (the supervisor's is 0077): the
            // task's users must enter it.
            let rc = if rc == 0 {
                // SAFETY: as for mkdirat.
                unsafe { libc::fchmodat(parent.as_raw_fd(), c_name.as_ptr(), 0o755, 0) }
            } else {
                rc
            };
            if rc != 0 {
                return Err(RootfsError::MkdirInRoot {
                    path: next,
                    source: io::Error::last_os_error(),
                });
            }
            if let Some((uid, gid)) = owner {
                // SAFETY: as for mkdirat; AT_SYMLINK_NOFOLLOW: the entry
                // just made is a directory, never followed elsewhere.
                let rc = unsafe {
                    libc::fchownat(
                        parent.as_raw_fd(),
                        c_name.as_ptr(),
                        uid,
                        gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
                if rc != 0 {
                    return Err(RootfsError::ChownInRoot {
                        path: next,
                        uid,
                        gid,
                        source: io::Error::last_os_error(),
                    });
                }
            }
        }
        current = next;
    }
    Ok(())
}

/// Reads the regular file `path` (absolute, as the task sees it) inside
/// `root`, resolved as [`is_executable_in`] does; `None` when missing or
/// unreadable. At most 4 MiB (passwd and group files).
pub(crate) fn read_in_root(root: &Path, path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    // O_NONBLOCK: a FIFO put there by the task must not hang the caller
    // (the agent) in open(2); it is then refused as not a regular file.
    let file = open_in_root_with(root, path, libc::O_RDONLY | libc::O_NONBLOCK)?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut out = Vec::new();
    file.take(4 << 20).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Opens `path` with `O_PATH`, every component resolved inside `root`.
pub(crate) fn open_in_root(root: &Path, path: &Path) -> Option<fs::File> {
    open_in_root_with(root, path, libc::O_PATH)
}

/// Opens `path` with `flags` (plus `O_CLOEXEC`), every component resolved
/// inside `root`.
pub(super) fn open_in_root_with(root: &Path, path: &Path, flags: libc::c_int) -> Option<fs::File> {
    let Ok(root_dir) = fs::File::open(root) else {
        return None;
    };
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return None;
    };
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
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
