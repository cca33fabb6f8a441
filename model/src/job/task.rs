//! A validated task: its command and environment, the resources it
//! reserves, its root filesystem, volumes and log limits, and its wire form.

use std::collections::BTreeMap;

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::wire::{RootfsKind, VolumeKind};

/// Upper bound on a task's CPU request, in millicores (1000 cores).
pub const MAX_CPU_MILLIS: i64 = 1_000_000;
/// Upper bound on a task's memory request, in MiB (1 TiB).
pub const MAX_MEMORY_MB: i64 = 1_048_576;
/// Upper bound on a task's kill timeout (10 minutes).
pub const MAX_KILL_TIMEOUT_MS: i64 = 600_000;
/// Upper bound on a command's arguments.
pub const MAX_ARGS: usize = 4096;

/// A validated task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// DNS label, unique within the group.
    pub name: String,
    /// Program and arguments; never empty.
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// What the task reserves on its node.
    pub resources: Resources,
    /// Time between SIGTERM and SIGKILL on stop.
    pub kill_timeout_ms: u64,
    /// What the task sees as `/`.
    #[serde(default)]
    pub rootfs: RootfsSpec,
    /// Who the task runs as: `"uid"`, `"uid:gid"`, `"name"` or
    /// `"name:group"` (names from the task's own `/etc/passwd` and
    /// `/etc/group`, looked up on the node); empty is root (of the task's
    /// user namespace).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Working directory inside the task (absolute); empty is the image's,
    /// else `/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    /// Mounts into the task's root; host paths must be allowed by the
    /// node's policy (checked on the node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// Rotation of the task's stdout/stderr files; `None` is the node's
    /// default (10 MiB, 3 files per stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSpec>,
    /// Placement rules of the allocation that runs it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<super::Constraint>,
    /// Its seccomp filter: the node's, or none where the node allows it.
    #[serde(default, skip_serializing_if = "SeccompMode::is_default")]
    pub seccomp: SeccompMode,
    /// `init = false` in the job file: the task is PID 1 of its PID
    /// namespace itself, without the minimal init that forwards signals
    /// to it and reaps orphans.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_init: bool,
}

/// A task's seccomp setting (`seccomp = "unconfined"` in a job file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// The node's profile (Drover's built-in one unless its policy names
    /// another).
    #[default]
    Default,
    /// No filter; refused by a node whose policy does not allow it.
    Unconfined,
}

impl SeccompMode {
    /// Reads the wire form: `""` or `"default"`, or `"unconfined"`.
    pub fn parse(s: &str) -> Option<SeccompMode> {
        match s {
            "" | "default" => Some(SeccompMode::Default),
            "unconfined" => Some(SeccompMode::Unconfined),
            _ => None,
        }
    }

    /// The wire form (`""` for the default).
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Default => "",
            SeccompMode::Unconfined => "unconfined",
        }
    }

    /// Whether this is [`SeccompMode::Default`].
    pub fn is_default(&self) -> bool {
        *self == SeccompMode::Default
    }
}

/// Validated log rotation limits of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSpec {
    /// Size of one log file before it is rotated, MiB (1..=1024).
    pub max_size_mb: u32,
    /// Files kept per stream, the current one included (1..=100).
    pub max_files: u32,
}

/// Largest [`LogSpec::max_size_mb`].
pub const MAX_LOG_SIZE_MB: i64 = 1024;
/// Largest [`LogSpec::max_files`].
pub const MAX_LOG_FILES: i64 = 100;

/// A validated volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeSpec {
    /// A host path bound into the task.
    Bind {
        /// Absolute host path.
        source: String,
        /// Absolute path inside the task.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path inside the task.
        target: String,
        /// Size limit in MiB (0 = the node's default, 64).
        size_mb: u64,
    },
}

/// Upper bound on a tmpfs volume's size (1 TiB).
pub const MAX_TMPFS_MB: i64 = 1_048_576;
/// Paths a volume may not be mounted at or under (the runtime builds them).
pub const RESERVED_VOLUME_TARGETS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A task's root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootfsSpec {
    /// A read-only view of the node's `/` with private `/tmp` and `/run`.
    #[default]
    Host,
    /// A rootfs directory on the node, never written (an overlay per task).
    Dir {
        /// Absolute path on the node.
        path: String,
    },
    /// A local OCI image layout (directory or tar) on the node; its config
    /// supplies the command, env and working dir the task does not set.
    Oci {
        /// Absolute path on the node.
        path: String,
    },
    /// An OCI or Docker image pulled from a registry by every node that
    /// runs the task (`rootfs = { type = "oci", image = "..." }`).
    Image {
        /// The reference, normalised ([`crate::image_ref::ImageRef`]).
        image: String,
    },
}

/// Resources reserved on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
}

impl Resources {
    /// Component-wise sum.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_mb: self.memory_mb.saturating_add(other.memory_mb),
        }
    }
}

impl From<&VolumeSpec> for pb::Volume {
    fn from(v: &VolumeSpec) -> pb::Volume {
        match v {
            VolumeSpec::Bind {
                source,
                target,
                read_only,
            } => pb::Volume {
                kind: VolumeKind::Bind.as_str().into(),
                source: source.clone(),
                target: target.clone(),
                read_only: *read_only,
                size_mb: 0,
            },
            VolumeSpec::Tmpfs { target, size_mb } => pb::Volume {
                kind: VolumeKind::Tmpfs.as_str().into(),
                source: String::new(),
                target: target.clone(),
                read_only: false,
                size_mb: i64::try_from(*size_mb).unwrap_or(i64::MAX),
            },
        }
    }
}

impl From<&TaskSpec> for pb::Task {
    fn from(t: &TaskSpec) -> pb::Task {
        pb::Task {
            name: t.name.clone(),
            logs: t.logs.map(|l| pb::LogLimits {
                max_size_mb: i64::from(l.max_size_mb),
                max_files: i64::from(l.max_files),
            }),
            command: t.command.clone(),
            env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            resources: Some(pb::Resources {
                cpu_millis: i64::try_from(t.resources.cpu_millis).unwrap_or(i64::MAX),
                memory_mb: i64::try_from(t.resources.memory_mb).unwrap_or(i64::MAX),
            }),
            kill_timeout_ms: i64::try_from(t.kill_timeout_ms).unwrap_or(i64::MAX),
            rootfs: Some(match &t.rootfs {
                RootfsSpec::Host => pb::Rootfs {
                    kind: RootfsKind::Host.as_str().into(),
                    path: String::new(),
                    image: String::new(),
                },
                RootfsSpec::Dir { path } => pb::Rootfs {
                    kind: RootfsKind::Dir.as_str().into(),
                    path: path.clone(),
                    image: String::new(),
                },
                RootfsSpec::Oci { path } => pb::Rootfs {
                    kind: RootfsKind::Oci.as_str().into(),
                    path: path.clone(),
                    image: String::new(),
                },
                RootfsSpec::Image { image } => pb::Rootfs {
                    kind: RootfsKind::Oci.as_str().into(),
                    path: String::new(),
                    image: image.clone(),
                },
            }),
            user: t.user.clone(),
            workdir: t.workdir.clone(),
            seccomp: t.seccomp.as_str().into(),
            no_init: t.no_init,
            constraints: t.constraints.iter().map(pb::Constraint::from).collect(),
            volumes: t.volumes.iter().map(pb::Volume::from).collect(),
        }
    }
}
