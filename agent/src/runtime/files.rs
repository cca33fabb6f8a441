//! The on-disk layout of a task directory and the small file and procfs
//! helpers that both the agent side and the supervisor use.
//!
//! Layout: `<state_root>/<alloc_id>/<task>/{spec.json,cgroup.json,state.json,
//! supervisor.pid,supervisor.log,stdout.log,stderr.log,rootfs/}`, where
//! `rootfs/{upper,work,merged}` exists only for a task with a root
//! filesystem. `state.json` and `supervisor.pid` are only ever replaced
//! atomically (write a temp file, rename; plus fsyncs
//! for what must survive a power loss, see [`Durability`]), so a reader never
//! sees half a file even if the writer dies.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{RuntimeError, TaskSpec, TaskState};
use crate::io_error::IoError;
use crate::private_fs::{make_private, PRIVATE_FILE_MODE};

/// File name of the task specification written by the agent.
pub const SPEC_FILE: &str = "spec.json";
/// File name of the task state written by the supervisor.
pub const STATE_FILE: &str = "state.json";
/// File name holding the supervisor's host pid.
pub const SUPERVISOR_PID_FILE: &str = "supervisor.pid";
/// Where the task's cgroup is, written by the agent before the supervisor
/// starts (see `limits::CgroupPlacement`).
pub const CGROUP_FILE: &str = "cgroup.json";
/// Supervisor's own stderr (errors before the task could be started).
pub const SUPERVISOR_LOG_FILE: &str = "supervisor.log";
/// Task stdout, appended to.
pub const STDOUT_FILE: &str = "stdout.log";
/// Task stderr, appended to.
pub const STDERR_FILE: &str = "stderr.log";

/// The resolved OCI image of a task with [`super::Rootfs::Oci`]: layer
/// directories and working directory, written by the agent.
pub const IMAGE_FILE: &str = "image.json";

/// Directory of a task's root filesystem (overlay upper, work, merged).
pub const ROOTFS_DIR: &str = "rootfs";

/// The hidden subcommand the supervisor is started with.
pub const SUPERVISE_ARG: &str = "__supervise";

/// Checks that an alloc id or task name is a single, harmless path component.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How much a record written with [`write_atomic_with`] must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A power loss: the file and its directory are fsynced. For what
    /// still matters after a reboot: the spec, a final state.
    PowerLoss,
    /// The writer's or the agent's crash, not the host's: an atomic rename
    /// without fsync (the page cache survives a process). For records that
    /// mean nothing after a reboot, when no process has survived: a pid,
    /// "running", where the cgroup is. Saves four fsyncs per start.
    ProcessCrash,
}

/// Writes `bytes` to `path` atomically (temp file and rename): a reader
/// never sees half a file, even if the writer dies.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), RuntimeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // 0600: specs hold the task's environment; a temporary file left by
    // a crash may have another mode.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&tmp)
        .and_then(|f| make_private(&f).map(|()| f))
        .map_err(IoError::on("create", &tmp))?;
    file.write_all(bytes).map_err(IoError::on("write", &tmp))?;
    if durability == Durability::PowerLoss {
        file.sync_all().map_err(IoError::on("fsync", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(IoError::on("rename", path))?;
    if durability == Durability::ProcessCrash {
        return Ok(());
    }
    // The rename is only durable once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IoError::on("fsync", dir))?;
    Ok(())
}

/// Makes files written with [`Durability::ProcessCrash`] survive a power
/// loss too: fsyncs each, then each directory they are in (once). For a
/// caller that overlaps the fsyncs with other work (a task's spec and image
/// record, synced while the supervisor starts).
pub fn sync_written<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<(), RuntimeError> {
    let mut dirs: Vec<&Path> = Vec::new();
    for path in paths {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(IoError::on("fsync", path))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(IoError::on("fsync", dir))?;
    }
    Ok(())
}

/// Serializes `value` as JSON and writes it atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    write_json_with(path, value, Durability::PowerLoss)
}

/// Serializes `value` as JSON and writes it atomically.
pub fn write_json_with<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec(value).map_err(|source| RuntimeError::Json {
        path: path.to_owned(),
        source,
    })?;
    write_atomic_with(path, &bytes, durability)
}

/// Reads and parses a JSON file; `Ok(None)` when it does not exist, or is
/// empty (what a record written without fsync can be after a power loss).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    let bytes = match fs::read(path) {
        Ok(b) if b.is_empty() => return Ok(None),
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IoError::new("read", path, source).into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RuntimeError::Json {
            path: path.to_owned(),
            source,
        })
}

/// Reads `supervisor.pid`; `Ok(None)` when it does not exist yet (or is
/// empty, after a power loss).
pub fn read_pid(path: &Path) -> Result<Option<i32>, RuntimeError> {
    match fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => s
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| RuntimeError::Corrupt {
                path: path.to_owned(),
                what: format!("not a pid: {:?}", s.trim()),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IoError::new("read", path, source).into()),
    }
}

/// Opens a log file for appending, creating it (mode 0600) if needed.
pub fn open_append(path: &Path) -> Result<File, RuntimeError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|source| IoError::new("open", path, source).into())
}

/// Paths inside one task directory.
#[derive(Debug, Clone)]
pub struct TaskDir {
    /// The directory itself.
    pub dir: PathBuf,
}

impl TaskDir {
    /// Wraps a task directory path.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
    /// `spec.json`.
    pub fn spec(&self) -> PathBuf {
        self.dir.join(SPEC_FILE)
    }
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    /// `supervisor.pid`.
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join(SUPERVISOR_PID_FILE)
    }
    /// `supervisor.log`.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join(SUPERVISOR_LOG_FILE)
    }
    /// `stdout.log`.
    pub fn stdout(&self) -> PathBuf {
        self.dir.join(STDOUT_FILE)
    }
    /// `stderr.log`.
    pub fn stderr(&self) -> PathBuf {
        self.dir.join(STDERR_FILE)
    }
    /// `cgroup.json`.
    pub fn cgroup(&self) -> PathBuf {
        self.dir.join(CGROUP_FILE)
    }
    /// `rootfs/`: the overlay's upper and work dirs and the assembled root.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS_DIR)
    }
    /// `image.json`.
    pub fn image(&self) -> PathBuf {
        self.dir.join(IMAGE_FILE)
    }
    /// Reads `spec.json`.
    pub fn read_spec(&self) -> Result<Option<TaskSpec>, RuntimeError> {
        read_json(&self.spec())
    }
    /// Reads `state.json` as the supervisor last wrote it.
    pub fn read_state(&self) -> Result<Option<TaskState>, RuntimeError> {
        read_json(&self.state())
    }
}

/// Whether `pid` exists on the host and is not a zombie.
pub fn process_alive(proc_root: &Path, pid: i32) -> bool {
    match fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        // The state letter follows the last ')' (the command name may hold ')').
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Whether `pid` is a live supervisor for the task directory ending in
/// `<alloc_id>/<task>`: guards against the pid having been reused.
pub fn supervisor_alive(proc_root: &Path, pid: i32, alloc_id: &str, task: &str) -> bool {
    if !process_alive(proc_root, pid) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    let Some(pos) = args.iter().position(|a| *a == SUPERVISE_ARG.as_bytes()) else {
        return false;
    };
    let Some(dir) = args.get(pos + 1) else {
        return false;
    };
    let dir = Path::new(std::ffi::OsStr::from_bytes(dir));
    dir.ends_with(Path::new(alloc_id).join(task))
}
