//! The store's directory: created private (0700, files 0600 whatever the
//! umask, as the log holds every job's environment) and locked for one
//! server at a time with `flock` on `<data_dir>/store.lock`, which holds
//! the owner's pid so that a refused second server can name it.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::EmbeddedError;

/// Mode of the store's directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;
/// The lock file's name.
pub const LOCK_FILE: &str = "store.lock";

/// Holds the directory's lock until dropped (closing the file releases
/// the `flock`).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Flock<File>,
}

/// Creates `dir` if absent and makes it (and the files the store keeps in
/// it) private to the owner.
pub(crate) fn prepare(dir: &Path) -> Result<(), EmbeddedError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
        .map_err(io_err(dir, "chmod 0700"))?;
    for name in ["store.wal", "store.snap", LOCK_FILE] {
        restrict(&dir.join(name))?;
    }
    Ok(())
}

/// Sets an existing file's mode to 0600 (stores written by older builds
/// left them world-readable).
fn restrict(path: &Path) -> Result<(), EmbeddedError> {
    match std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, "chmod 0600")(e)),
        _ => Ok(()),
    }
}

/// Creates (truncating) a file with mode 0600 for writing.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // A file that existed keeps its mode through `open`.
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Options to open (creating, mode 0600) a file for reading and appending.
pub(crate) fn append_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).append(true).create(true).mode(FILE_MODE);
    o
}

/// Takes the directory's lock without waiting; a second server on the
/// same directory gets [`EmbeddedError::Locked`] naming it and the pid
/// holding it.
pub(crate) fn lock(dir: &Path) -> Result<DirLock, EmbeddedError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io_err(&path, "open"))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(EmbeddedError::Locked {
                dir: dir.to_path_buf(),
                pid: pid.trim().parse().ok(),
            });
        }
        Err((_, errno)) => return Err(io_err(&path, "flock")(io::Error::from(errno))),
    };
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{pid}"))
        .map_err(io_err(&path, "write pid to"))?;
    tracing::debug!(path = %path.display(), pid, "store directory locked");
    Ok(DirLock { _file: file })
}

/// Formats the holder of a lock for [`EmbeddedError::Locked`].
pub(crate) fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(p) => format!("pid {p}"),
        None => "an unknown process".to_string(),
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path: PathBuf = path.to_path_buf();
    move |source| EmbeddedError::Io { path, op, source }
}
