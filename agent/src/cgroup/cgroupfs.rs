//! The files of cgroupfs: control files written whole and read as numbers,
//! cgroup directories created and removed the way the kernel allows.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CgroupError, RMDIR_RETRY};
use crate::io_error::IoError;

/// The subdirectories of `dir` (child cgroups); none when it is gone.
pub(super) fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(IoError::new("read directory", dir, source).into()),
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// Writes `value` to an existing cgroup file (never creates one: a missing
/// control file means the controller is missing, which is an error).
pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(IoError::on("open", path))?;
    // One write(2): cgroupfs parses each write as a whole value.
    file.write_all(value.as_bytes())
        .map_err(IoError::on("write", path))?;
    Ok(())
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    Ok(fs::read_to_string(path).map_err(IoError::on("read", path))?)
}

/// Reads a single unsigned number, e.g. `pids.current`.
pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read_file(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        what: format!("not a number: {:?}", text.trim()),
    })
}

/// Reads the value of `key` from a flat-keyed file (`key value` lines, as
/// `memory.events` or `memory.oom_control`); 0 when the key is absent.
pub(super) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read_file(path)?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or_default();
            return value.parse().map_err(|_| CgroupError::Parse {
                path: path.to_owned(),
                what: format!("{key}: not a number: {value:?}"),
            });
        }
    }
    Ok(0)
}

/// Reads the pids in a `cgroup.procs` file; none when it does not exist.
pub(super) fn read_procs(path: &Path) -> Result<Vec<i32>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(IoError::new("read", path, source).into()),
    }
}

/// `mkdir -p` below `base` that tolerates a concurrent [`rmdir_retry`] of an
/// empty ancestor (another task's removal pruning the shared parent):
/// ENOENT on the way down starts over, a few times.
pub(super) fn mkdir_all(base: &Path, rel: &Path) -> Result<PathBuf, CgroupError> {
    let target = base.join(rel);
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(&target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 && base.is_dir() => {
                attempts += 1;
            }
            Err(source) => return Err(IoError::new("mkdir", target, source).into()),
        }
    }
}

/// Removes one cgroup directory, retrying while the kernel still holds
/// exiting tasks in it (EBUSY) until `deadline`. Missing is success.
pub(super) fn rmdir_retry(
    dir: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), CgroupError> {
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(RMDIR_RETRY);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    path: dir.to_owned(),
                    pids: read_procs(&dir.join("cgroup.procs")).unwrap_or_default(),
                    after: timeout,
                })
            }
            Err(source) => return Err(IoError::new("rmdir", dir, source).into()),
        }
    }
}

/// Removes a cgroup if it is empty; busy or non-empty (another task's
/// cgroup below it) is fine. Returns whether it was removed now.
pub(super) fn rmdir_if_empty(dir: &Path) -> Result<bool, CgroupError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) =>
        {
            Ok(false)
        }
        Err(source) => Err(IoError::new("rmdir", dir, source).into()),
    }
}
