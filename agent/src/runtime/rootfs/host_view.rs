//! The minimal host view ([`super::Rootfs::Host`]): what programs need to
//! run, and nothing of the node's data, state or secrets.
//!
//! The task's `/` is an empty tmpfs, read-only once assembled, holding
//! mount points only: read-only recursive binds of the host's
//! [`HOST_VIEW_DIRS`] (a top-level symlink such as `/bin -> usr/bin` is
//! copied as a symlink), of the node policy's additions
//! ([`HostRootPolicy::add`]), and of `/sys`, the task's own `/proc`, `/dev`,
//! `/tmp` and `/run`. Then the node's secrets are covered: every path of
//! [`HIDDEN_PATHS`] and [`HostRootPolicy::hide`], and every entry below
//! `/etc` that other users may not read (found by walking the host's
//! `/etc`), gets an empty file or an empty read-only tmpfs mounted over
//! it. A host directory not listed (`/root`, `/home`, `/srv`, `/var`, the
//! agent's data directory, certificate directories) is simply absent.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::mount::do_mount;
use super::{
    create_file_in_root, cstring, io_err, mkdir_p_in, open_in_root, set_mount_attr, MountAttr,
    RootfsError,
};
use crate::io_error::IoError;
use crate::policy::host_root::{HIDDEN_PATHS, HOST_VIEW_DIRS};
use crate::policy::HostRootPolicy;

/// The directory walked for entries other users may not read.
const SECRET_WALK_ROOT: &str = "/etc";
/// How deep and how many entries the walk of `/etc` goes; past that the
/// rest is shown as the host has it (still subject to its permissions).
const WALK_MAX_DEPTH: usize = 12;
const WALK_MAX_ENTRIES: usize = 100_000;

/// Builds the host view at `merged` (an existing empty directory in a
/// private mount namespace). `empty` is a file path in the task directory
/// where an empty, unreadable file is made to cover hidden files;
/// `host_sys` is bound read-only at `/sys`; `owned` (`uid=..,gid=..`) makes
/// the private `/run` root's inside the task.
pub(super) fn mount_host_view(
    merged: &Path,
    view: &HostRootPolicy,
    empty: &Path,
    host_sys: &Path,
    owned: &str,
) -> Result<(), RootfsError> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    do_mount(
        Some(Path::new("tmpfs")),
        merged,
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=755,size=1m"),
    )?;
    for dir in ["proc", "dev", "sys", "tmp", "run"] {
        mkdir_0755(&merged.join(dir))?;
    }
    let mut shown = Vec::new();
    for dir in HOST_VIEW_DIRS {
        if let Some(at) = show(merged, Path::new(dir))? {
            shown.push((at, false));
        }
    }
    for add in &view.add {
        if let Some(at) = show(merged, &add.path)? {
            shown.push((at, add.writable));
        }
    }
    hide_secrets(merged, view, empty)?;
    let rw = MountAttr::NOSUID | MountAttr::NODEV;
    for (path, writable) in &shown {
        let attr = if *writable {
            rw
        } else {
            rw | MountAttr::RDONLY
        };
        let mounted = open_in_root(merged, path)
            .ok_or_else(|| RootfsError::Vanished { path: path.clone() })?;
        set_mount_attr(&mounted, path, attr, true)?;
    }
    let sys = merged.join("sys");
    do_mount(
        Some(host_sys),
        &sys,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let sys_fd = fs::File::open(&sys).map_err(io_err("open", &sys))?;
    set_mount_attr(&sys_fd, &sys, MountAttr::RDONLY | rw, true)?;
    // The tmpfs `/` itself (not the mounts on it) becomes read-only.
    let root = fs::File::open(merged).map_err(io_err("open", merged))?;
    set_mount_attr(&root, merged, MountAttr::RDONLY | rw, false)?;
    do_mount(
        Some(Path::new("tmpfs")),
        &merged.join("run"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&format!("mode=755,{owned}")),
    )?;
    Ok(())
}

fn mkdir_0755(path: &Path) -> Result<(), RootfsError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_err("mkdir", path))?;
    // Whatever the umask took away.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_err("chmod 0755", path))
}

/// Shows the host's `path` at the same place in the view: a symlink as
/// the same symlink, a directory or file as a recursive bind (returned, to
/// be made read-only once the secrets are covered). A path the host does
/// not have is skipped.
fn show(merged: &Path, path: &Path) -> Result<Option<PathBuf>, RootfsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IoError::new("lstat", path, source).into()),
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| RootfsError::NoFileName {
            path: path.to_path_buf(),
        })?
        .to_owned();
    if open_in_root(merged, path).is_none() {
        mkdir_p_in(merged, parent, None)?;
        let dir = open_in_root(merged, parent).ok_or_else(|| RootfsError::NotADirectoryInRoot {
            path: parent.to_path_buf(),
        })?;
        let c_name = CString::new(name.as_bytes()).map_err(|_| RootfsError::NulByte {
            path: path.to_path_buf(),
        })?;
        if meta.file_type().is_symlink() {
            let to = fs::read_link(path).map_err(io_err("readlink", path))?;
            let c_to = cstring(&to)?;
            // SAFETY: NUL-terminated strings and an open directory, all
            // alive for the call.
            let rc = unsafe { libc::symlinkat(c_to.as_ptr(), dir.as_raw_fd(), c_name.as_ptr()) };
            if rc != 0 {
                let source = io::Error::last_os_error();
                return Err(IoError::new("symlink", path, source).into());
            }
            return Ok(None);
        }
        if meta.is_dir() {
            // SAFETY: as above.
            let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), 0o755) };
            if rc != 0 {
                let source = io::Error::last_os_error();
                return Err(RootfsError::MkdirInRoot {
                    path: path.to_path_buf(),
                    source,
                });
            }
        } else {
            create_file_in_root(merged, path)?;
        }
    } else if meta.file_type().is_symlink() {
        // Already shown through what holds it (`/lib64` inside `/usr`...).
        return Ok(None);
    }
    bind_at(merged, path, path, MsFlags::MS_BIND | MsFlags::MS_REC)?;
    Ok(Some(path.to_path_buf()))
}

/// Bind-mounts the host path `source` (with `flags`) over
/// `target` resolved inside `merged`, through `/proc/self/fd`: no path is
/// resolved twice and no symlink leads out of the view.
fn bind_at(merged: &Path, target: &Path, source: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let at = open_in_root(merged, target).ok_or_else(|| RootfsError::Vanished {
        path: target.to_path_buf(),
    })?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", at.as_raw_fd()));
    do_mount(Some(source), &fd_path, None, flags, None).map_err(|e| RootfsError::MountOver {
        path: target.to_path_buf(),
        source: Box::new(e),
    })
}

/// Covers every secret the view would show: [`HIDDEN_PATHS`], the
/// policy's `hide`, and what other users may not read below `/etc`.
fn hide_secrets(merged: &Path, view: &HostRootPolicy, empty: &Path) -> Result<(), RootfsError> {
    let mut hidden: Vec<PathBuf> = HIDDEN_PATHS.iter().map(PathBuf::from).collect();
    hidden.extend(view.hide.iter().cloned());
    let mut budget = WALK_MAX_ENTRIES;
    let mut found = Vec::new();
    unreadable_below(
        Path::new(SECRET_WALK_ROOT),
        0,
        &hidden,
        &mut budget,
        &mut |p| found.push(p),
    );
    hidden.extend(found);
    hidden.sort();
    hidden.dedup();
    let mut empty_made = false;
    for path in &hidden {
        // The host's own entry: a symlink is not followed (what it leads
        // to is covered where it lives, or not shown at all).
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        if meta.file_type().is_symlink() || open_in_root(merged, path).is_none() {
            continue;
        }
        // Below a path hidden already.
        if hidden.iter().any(|h| h != path && path.starts_with(h)) {
            continue;
        }
        if meta.is_dir() {
            cover_dir(merged, path)?;
        } else {
            if !empty_made {
                make_empty(empty)?;
                empty_made = true;
            }
            cover_file(merged, path, empty)?;
        }
    }
    Ok(())
}

/// Calls `found` with every entry below `dir` that other users may not
/// read (a directory they may not list or enter, a file they may not read),
/// without descending into those or into `skip`. Symlinks are not
/// followed; unreadable directories are skipped.
fn unreadable_below(
    dir: &Path,
    depth: usize,
    skip: &[PathBuf],
    budget: &mut usize,
    found: &mut dyn FnMut(PathBuf),
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() || skip.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        let others = meta.mode() & 0o007;
        if meta.is_dir() {
            if others & 0o5 != 0o5 {
                found(path);
            } else if depth < WALK_MAX_DEPTH {
                unreadable_below(&path, depth + 1, skip, budget, found);
            }
        } else if others & 0o4 == 0 {
            found(path);
        }
    }
}

/// The empty file bound over hidden files: mode 0, owned by host root.
fn make_empty(empty: &Path) -> Result<(), RootfsError> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o0)
        .open(empty)
        .map_err(io_err("create", empty))?;
    fs::set_permissions(empty, std::os::unix::fs::PermissionsExt::from_mode(0o0))
        .map_err(io_err("chmod 0", empty))
}

fn cover_file(merged: &Path, path: &Path, empty: &Path) -> Result<(), RootfsError> {
    bind_at(merged, path, empty, MsFlags::MS_BIND)?;
    let mounted =
        open_in_root(merged, path).ok_or_else(|| RootfsError::Vanished { path: path.into() })?;
    set_mount_attr(
        &mounted,
        path,
        MountAttr::RDONLY | MountAttr::NOSUID | MountAttr::NODEV,
        false,
    )
}

fn cover_dir(merged: &Path, path: &Path) -> Result<(), RootfsError> {
    let at =
        open_in_root(merged, path).ok_or_else(|| RootfsError::Vanished { path: path.into() })?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", at.as_raw_fd()));
    do_mount(
        Some(Path::new("tmpfs")),
        &fd_path,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0555,size=4k"),
    )
    .map_err(|e| RootfsError::MountOver {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_walk_finds_what_others_may_not_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let etc = tmp.path();
        let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m));
        fs::create_dir_all(etc.join("ssl/private")).unwrap();
        fs::create_dir_all(etc.join("ssl/certs")).unwrap();
        fs::create_dir_all(etc.join("skipped")).unwrap();
        fs::write(etc.join("passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        fs::write(etc.join("shadow"), "root:*:1::::::\n").unwrap();
        fs::write(etc.join("ssl/certs/ca.pem"), "x").unwrap();
        fs::write(etc.join("ssl/private/key.pem"), "x").unwrap();
        fs::write(etc.join("skipped/key"), "x").unwrap();
        std::os::unix::fs::symlink("shadow", etc.join("link")).unwrap();
        mode(&etc.join("passwd"), 0o644).unwrap();
        mode(&etc.join("shadow"), 0o640).unwrap();
        mode(&etc.join("ssl/certs"), 0o755).unwrap();
        mode(&etc.join("ssl/certs/ca.pem"), 0o644).unwrap();
        mode(&etc.join("ssl/private/key.pem"), 0o600).unwrap();
        mode(&etc.join("ssl/private"), 0o700).unwrap();
        mode(&etc.join("skipped/key"), 0o600).unwrap();
        let mut found = Vec::new();
        let mut budget = WALK_MAX_ENTRIES;
        unreadable_below(etc, 0, &[etc.join("skipped")], &mut budget, &mut |p| {
            found.push(p)
        });
        found.sort();
        // The private dir as a whole (not descended into), the shadow
        // file; not the symlink, not the readable files, not what is
        // skipped.
        assert_eq!(found, vec![etc.join("shadow"), etc.join("ssl/private")]);
    }
}
