//! The runtime's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::files::SUPERVISE_ARG;
use super::identity::IdentityError;
use super::rootfs::RootfsError;
use super::volume::VolumeError;
use crate::io_error::IoError;

/// Errors of the runtime; each names the path, syscall or command involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An alloc id or task name that is not a simple path component.
    #[error("invalid {what} {name:?}: use 1-128 characters from [A-Za-z0-9._-], not '.' or '..'")]
    InvalidName {
        /// "alloc id" or "task name".
        what: &'static str,
        /// The offending value.
        name: String,
    },
    /// The spec has a field the supervisor could not use.
    #[error("alloc {alloc_id} task {task}: {problem}")]
    InvalidSpec {
        /// Allocation id.
        alloc_id: String,
        /// Task name.
        task: String,
        /// What is wrong, naming the field.
        #[source]
        problem: SpecProblem,
    },
    /// The node policy does not allow what the spec asks for.
    #[error("alloc {alloc_id} task {task}: refused by the node policy: {problem}")]
    PolicyRefused {
        /// Allocation id.
        alloc_id: String,
        /// Task name.
        task: String,
        /// What was asked, and the policy setting that refuses it.
        #[source]
        problem: SpecProblem,
    },
    /// The spec has an empty command.
    #[error("alloc {alloc_id} task {task}: command is empty")]
    EmptyCommand {
        /// Allocation id.
        alloc_id: String,
        /// Task name.
        task: String,
    },
    /// `command[0]` does not resolve to an executable file.
    #[error("command {command:?} not found: {detail}")]
    CommandNotFound {
        /// The command as given.
        command: String,
        /// Where it was looked for.
        detail: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A JSON file could not be (de)serialized.
    #[error("json {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A file holds something unexpected.
    #[error("{}: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The supervisor binary could not be executed.
    #[error("spawning supervisor {} {SUPERVISE_ARG} {}: {source}", exe.display(), task_dir.display())]
    SpawnSupervisor {
        /// The drover binary.
        exe: PathBuf,
        /// The task directory.
        task_dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A syscall on a task or supervisor process failed.
    #[error("{syscall} (pid {pid}): {source}")]
    Syscall {
        /// The syscall, with its arguments when useful.
        syscall: &'static str,
        /// The process involved.
        pid: i32,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// No task directory for this alloc/task.
    #[error("no task {task:?} in alloc {alloc_id:?}")]
    NotFound {
        /// Allocation id.
        alloc_id: String,
        /// Task name.
        task: String,
    },
    /// The task runs already (start) or still (remove).
    #[error("alloc {alloc_id} task {task} is still running (pid {pid:?}); stop it first")]
    StillRunning {
        /// Allocation id.
        alloc_id: String,
        /// Task name.
        task: String,
        /// Host pid of the task, when known.
        pid: Option<i32>,
    },
    /// Creating, reading or removing a task's cgroup failed.
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// Waiting for the supervisor timed out.
    #[error("timed out after {after:?} waiting for {what} in {}", task_dir.display())]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The task directory.
        task_dir: PathBuf,
        /// How long was waited.
        after: Duration,
    },
    /// An OCI image could not be used (bad digest, escaping entry, ...).
    #[error(transparent)]
    Image(#[from] super::oci::OciError),
    /// An image could not be pulled from its registry.
    #[error(transparent)]
    Pull(#[from] super::oci::registry::PullError),
}

/// What is wrong with a task spec ([`RuntimeError::InvalidSpec`]), or
/// what in it the node policy refuses ([`RuntimeError::PolicyRefused`]).
/// The module errors are boxed: they name paths and syscalls, and would
/// double the size of every `Result<_, RuntimeError>`.
#[derive(Debug, thiserror::Error)]
pub enum SpecProblem {
    /// The root filesystem.
    #[error(transparent)]
    Rootfs(#[from] Box<RootfsError>),
    /// A volume.
    #[error(transparent)]
    Volume(#[from] Box<VolumeError>),
    /// The task's user, or its ids under the node's user namespace.
    #[error(transparent)]
    User(#[from] Box<IdentityError>),
    /// Any other field, described in words: the checks of `spec.rs`,
    /// `admit.rs` and `logs.rs`, not yet given variants of their own.
    #[error("{0}")]
    Other(String),
}

impl From<RootfsError> for SpecProblem {
    fn from(e: RootfsError) -> Self {
        SpecProblem::Rootfs(Box::new(e))
    }
}

impl From<VolumeError> for SpecProblem {
    fn from(e: VolumeError) -> Self {
        SpecProblem::Volume(Box::new(e))
    }
}

impl From<IdentityError> for SpecProblem {
    fn from(e: IdentityError) -> Self {
        SpecProblem::User(Box::new(e))
    }
}

impl From<String> for SpecProblem {
    fn from(problem: String) -> Self {
        SpecProblem::Other(problem)
    }
}
