//! What the scheduler asks of this node, decoded: the agent-side domain
//! types of an assignment (desired state, job kind, network mode, group,
//! tasks) and of what the agent reports (allocation status, task status).
//!
//! Protobuf stops here. The session decodes every `pb::Assignment` with
//! [`TryFrom`] as it arrives; a value this agent does not know (a newer
//! scheduler, a bad peer) is an [`InvalidAssignment`] that names the field,
//! never a silent default. Beyond this module nothing compares wire
//! strings: the wire names live only in the `as_str`/`parse` pairs of the
//! enums, which are the scheduler's too (`drover_model::wire`, re-exported
//! here); an unknown name becomes [`InvalidAssignment::Unknown`].
//!
//! This module depends on nothing else in the agent (only on the model and
//! the generated protobuf types).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use drover_model::job::{SeccompMode, ServiceSpec};
pub use drover_model::{
    AllocStatus, DesiredState, JobKind, NetworkMode, RootfsKind, TaskStatus, VolumeKind,
};
use drover_model::{CheckState, UnknownValue};
use drover_proto::v1 as pb;

/// Why an assignment was refused. Each variant names the field, as a path
/// from the assignment (`group.tasks["app"].rootfs.kind`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAssignment {
    /// A message that must be present is missing.
    #[error("{field} is missing")]
    Missing {
        /// The field's path.
        field: String,
    },
    /// A string field holds a value this agent does not know.
    #[error("{field} is {value:?}, which this agent does not know (expected {expected}); is the scheduler newer than the agent?")]
    Unknown {
        /// The field's path.
        field: String,
        /// What the scheduler sent.
        value: String,
        /// The values this agent knows.
        expected: &'static str,
    },
    /// A number is out of range (negative, or too large).
    #[error("{field} is {value}, out of range")]
    OutOfRange {
        /// The field's path.
        field: String,
        /// What the scheduler sent.
        value: i64,
    },
    /// A field's value breaks a rule the agent relies on.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl InvalidAssignment {
    /// The path of the field at fault.
    pub fn field(&self) -> &str {
        match self {
            Self::Missing { field }
            | Self::Unknown { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::Invalid { field, .. } => field,
        }
    }
}

impl From<UnknownValue> for InvalidAssignment {
    fn from(e: UnknownValue) -> Self {
        Self::Unknown {
            field: e.field,
            value: e.value,
            expected: e.expected,
        }
    }
}

/// One allocation this node should hold, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The allocation: identity, desired state, recorded status.
    pub alloc: Allocation,
    /// Its group: tasks, restart policy, network.
    pub group: Group,
    /// The job's kind.
    pub job_kind: JobKind,
}

/// An allocation's identity and states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Its id (never empty).
    pub id: String,
    /// `<job>.<group>[<index>]`.
    pub name: String,
    /// Its job.
    pub job: String,
    /// Its group.
    pub group: String,
    /// Its index in the group.
    pub index: u32,
    /// What the scheduler wants.
    pub desired: DesiredState,
    /// What the scheduler last recorded.
    pub status: AllocStatus,
}

impl Allocation {
    /// A DNS-safe host name for it: `<job>-<group>-<index>` (a periodic
    /// child's `/` becomes `-`: `web-periodic-1700000000-main-0`), cut to
    /// at most 63 bytes at a character boundary (names are the
    /// scheduler's DNS labels, but a bad peer's must not panic the agent).
    pub fn hostname(&self) -> String {
        let job = self.job.replace('/', "-");
        let mut h = format!("{job}-{}-{}", self.group, self.index);
        let mut end = h.len().min(63);
        while !h.is_char_boundary(end) {
            end -= 1;
        }
        h.truncate(end);
        h.trim_end_matches('-').to_string()
    }
}

/// A group, as far as the node needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its tasks, which share the allocation's network.
    pub tasks: Vec<Task>,
    /// How often and how soon an exited task is started again.
    pub restart: RestartPolicy,
    /// Its network mode.
    pub network: NetworkMode,
    /// The services its allocations offer, with their health checks.
    pub services: Vec<ServiceSpec>,
    /// How long the node may be without its scheduler before it stops the
    /// group's allocations itself; `None`: never.
    pub stop_after_disconnect: Option<Duration>,
}

/// A group's restart policy (unset: no restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed per task.
    pub attempts: u32,
    /// Pause before each restart.
    pub delay: Duration,
}

/// One task of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its name, unique in the group.
    pub name: String,
    /// argv; may be empty with an OCI image (the image's command).
    pub command: Vec<String>,
    /// The job's environment for it.
    pub env: BTreeMap<String, String>,
    /// CPU limit, millicores.
    pub cpu_millis: u64,
    /// Memory limit, MiB.
    pub memory_mb: u64,
    /// SIGTERM to SIGKILL grace on stop.
    pub kill_timeout: Duration,
    /// Its root filesystem.
    pub rootfs: Rootfs,
    /// The user it runs as, as written in the job; `None`: the default.
    pub user: Option<String>,
    /// Its working directory; `None`: the default.
    pub workdir: Option<PathBuf>,
    /// Its mounts.
    pub volumes: Vec<Volume>,
    /// Rotation of its output files; `None`: the node's defaults.
    pub logs: Option<LogLimits>,
    /// Its seccomp setting (the node's policy decides what it gets).
    pub seccomp: SeccompMode,
    /// Whether a minimal init is its PID 1 (the job's `init`, default on).
    pub init: bool,
    /// For a registry image named by tag: the reference pinned to the
    /// digest its deployment resolved (`Assignment.image_pins`), which it
    /// runs instead of what the tag names now; `None` before the
    /// deployment has one.
    pub pinned_image: Option<String>,
}

/// A task's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// A read-only view of the node's `/`.
    Host,
    /// A rootfs directory on the node.
    Dir(PathBuf),
    /// A local OCI image (directory or archive), or a registry image
    /// reference (not an absolute path).
    Oci(PathBuf),
}

/// A mount into a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    /// A host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside the task.
        target: PathBuf,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Path inside the task.
        target: PathBuf,
        /// Size limit in MiB; 0 is the node's default.
        size_mb: u64,
    },
}

/// Rotation of a task's output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Size of one file before rotation, MiB.
    pub max_size_mb: u64,
    /// Files kept per stream.
    pub max_files: u32,
}

fn non_negative<T: TryFrom<i64>>(
    field: impl FnOnce() -> String,
    value: i64,
) -> Result<T, InvalidAssignment> {
    T::try_from(value).map_err(|_| InvalidAssignment::OutOfRange {
        field: field(),
        value,
    })
}

impl TryFrom<&pb::Assignment> for Assignment {
    type Error = InvalidAssignment;

    fn try_from(a: &pb::Assignment) -> Result<Self, InvalidAssignment> {
        let alloc = a
            .allocation
            .as_ref()
            .ok_or_else(|| InvalidAssignment::Missing {
                field: "allocation".into(),
            })?;
        let group = a.group.as_ref().ok_or_else(|| InvalidAssignment::Missing {
            field: "group".into(),
        })?;
        let mut group = Group::try_from(group)?;
        pins::apply(&mut group.tasks, &a.image_pins);
        Ok(Assignment {
            alloc: Allocation::try_from(alloc)?,
            group,
            job_kind: JobKind::parse("job_kind", &a.job_kind)?,
        })
    }
}

impl TryFrom<&pb::Allocation> for Allocation {
    type Error = InvalidAssignment;

    fn try_from(a: &pb::Allocation) -> Result<Self, InvalidAssignment> {
        if a.id.is_empty() {
            return Err(InvalidAssignment::Missing {
                field: "allocation.id".into(),
            });
        }
        Ok(Allocation {
            id: a.id.clone(),
            name: a.name.clone(),
            job: a.job.clone(),
            group: a.group.clone(),
            index: a.index,
            desired: DesiredState::parse("allocation.desired", &a.desired)?,
            status: AllocStatus::parse("allocation.status", &a.status)?,
        })
    }
}

impl TryFrom<&pb::Group> for Group {
    type Error = InvalidAssignment;

    fn try_from(g: &pb::Group) -> Result<Self, InvalidAssignment> {
        let restart = match &g.restart {
            None => RestartPolicy::default(),
            Some(r) => RestartPolicy {
                attempts: non_negative(|| "group.restart.attempts".into(), r.attempts)?,
                delay: Duration::from_millis(non_negative(
                    || "group.restart.delay_ms".into(),
                    r.delay_ms,
                )?),
            },
        };
        let tasks: Vec<Task> = g
            .tasks
            .iter()
            .map(Task::try_from)
            .collect::<Result<_, _>>()?;
        let stop_after_disconnect = match &g.disconnect {
            None => None,
            Some(d) => Some(Duration::from_millis(non_negative(
                || "group.disconnect.stop_after_ms".into(),
                d.stop_after_ms,
            )?)),
        };
        Ok(Group {
            stop_after_disconnect,
            name: g.name.clone(),
            services: services::decode(g, &tasks)?,
            tasks,
            restart,
            network: NetworkMode::parse("group.network", &g.network)?,
        })
    }
}

impl TryFrom<&pb::Task> for Task {
    type Error = InvalidAssignment;

    fn try_from(t: &pb::Task) -> Result<Self, InvalidAssignment> {
        let at = |field: &str| format!("group.tasks[{:?}].{field}", t.name);
        let res = t.resources.unwrap_or_default();
        let rootfs = match &t.rootfs {
            None => Rootfs::Host,
            Some(r) => match RootfsKind::parse(&at("rootfs.kind"), &r.kind)? {
                RootfsKind::Host => Rootfs::Host,
                RootfsKind::Dir => Rootfs::Dir(PathBuf::from(&r.path)),
                // A registry image rides as a reference where a layout's
                // path would be (the runtime tells them apart).
                RootfsKind::Oci if r.path.is_empty() && !r.image.is_empty() => {
                    Rootfs::Oci(PathBuf::from(&r.image))
                }
                RootfsKind::Oci => Rootfs::Oci(PathBuf::from(&r.path)),
            },
        };
        let volumes = t
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Ok(
                    match VolumeKind::parse(&at(&format!("volumes[{i}].kind")), &v.kind)? {
                        VolumeKind::Bind => Volume::Bind {
                            source: PathBuf::from(&v.source),
                            target: PathBuf::from(&v.target),
                            read_only: v.read_only,
                        },
                        VolumeKind::Tmpfs => Volume::Tmpfs {
                            target: PathBuf::from(&v.target),
                            size_mb: non_negative(
                                || at(&format!("volumes[{i}].size_mb")),
                                v.size_mb,
                            )?,
                        },
                    },
                )
            })
            .collect::<Result<_, InvalidAssignment>>()?;
        let logs = match &t.logs {
            None => None,
            Some(l) => Some(LogLimits {
                max_size_mb: non_negative(|| at("logs.max_size_mb"), l.max_size_mb)?,
                max_files: non_negative(|| at("logs.max_files"), l.max_files)?,
            }),
        };
        Ok(Task {
            name: t.name.clone(),
            command: t.command.clone(),
            env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cpu_millis: non_negative(|| at("resources.cpu_millis"), res.cpu_millis)?,
            memory_mb: non_negative(|| at("resources.memory_mb"), res.memory_mb)?,
            kill_timeout: Duration::from_millis(non_negative(
                || at("kill_timeout_ms"),
                t.kill_timeout_ms,
            )?),
            rootfs,
            user: Some(t.user.clone()).filter(|u| !u.is_empty()),
            workdir: (!t.workdir.is_empty()).then(|| PathBuf::from(&t.workdir)),
            volumes,
            logs,
            seccomp: SeccompMode::parse(&t.seccomp).ok_or_else(|| InvalidAssignment::Unknown {
                field: at("seccomp"),
                value: t.seccomp.clone(),
                expected: "\"\", \"default\" or \"unconfined\"",
            })?,
            init: !t.no_init,
            pinned_image: None,
        })
    }
}

/// What the node reports of one allocation (`AllocStatus` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocReport {
    /// The allocation's id.
    pub alloc_id: String,
    /// Its status.
    pub status: AllocStatus,
    /// Its tasks, by name.
    pub tasks: Vec<TaskReport>,
    /// Its address on the node bridge, if it has one.
    pub ip: Option<std::net::Ipv4Addr>,
    /// Every health check of its services. Left empty by
    /// [`crate::allocs`]; the session fills it in from
    /// [`crate::checks`] as the report is sent.
    pub checks: Vec<CheckState>,
    /// What happened to it since the last report, oldest first (see
    /// [`crate::allocs::events`]); not part of its state: reports are
    /// compared without them.
    pub events: Vec<TaskEvent>,
}

/// One thing that happened to a task of an allocation (`AllocEvent` on
/// the wire, the scheduler filling in what it knows of the allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// When, ms since the Unix epoch.
    pub time_unix_ms: i64,
    /// The task; empty for the allocation as a whole.
    pub task: String,
    /// What kind of thing.
    pub kind: drover_model::EventType,
    /// What happened, for people.
    pub message: String,
}

impl From<&TaskEvent> for pb::AllocEvent {
    fn from(e: &TaskEvent) -> pb::AllocEvent {
        pb::AllocEvent {
            time_unix_ms: e.time_unix_ms,
            task: e.task.clone(),
            r#type: e.kind.as_str().into(),
            message: e.message.clone(),
            ..Default::default()
        }
    }
}

/// What the node reports of one task (`TaskState` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    /// The task's name.
    pub name: String,
    /// Its status.
    pub status: TaskStatus,
    /// Host pid of its process while running, else 0.
    pub pid: i32,
    /// Exit code, once it exited normally.
    pub exit_code: Option<i32>,
    /// Signal number, once a signal killed it.
    pub signal: Option<i32>,
    /// Why it ended or failed.
    pub message: String,
    /// How often it was restarted.
    pub restarts: u32,
    /// The pinned reference of a registry image it runs, else empty.
    pub image_digest: String,
}

impl From<&TaskReport> for pb::TaskState {
    fn from(t: &TaskReport) -> pb::TaskState {
        pb::TaskState {
            name: t.name.clone(),
            state: t.status.as_str().into(),
            pid: t.pid,
            exit_code: t.exit_code,
            signal: t.signal,
            message: t.message.clone(),
            restarts: t.restarts,
            image_digest: t.image_digest.clone(),
        }
    }
}

impl From<&AllocReport> for pb::AllocStatus {
    fn from(r: &AllocReport) -> pb::AllocStatus {
        pb::AllocStatus {
            alloc_id: r.alloc_id.clone(),
            status: r.status.as_str().into(),
            tasks: r.tasks.iter().map(pb::TaskState::from).collect(),
            ip: r.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            checks: r.checks.iter().map(pb::CheckState::from).collect(),
            events: r.events.iter().map(pb::AllocEvent::from).collect(),
        }
    }
}

/// An assignment the agent could not decode: what it knows of it, to report
/// it failed with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The allocation's id.
    pub alloc_id: String,
    /// Its tasks' names, as sent.
    pub tasks: Vec<String>,
    /// Why.
    pub error: InvalidAssignment,
}

/// Decodes a node's full list of assignments. Those that cannot be
/// decoded but name an allocation are returned apart; those that do not
/// even name one are dropped with a log line (there is nothing to report
/// them against).
pub fn decode_all(list: &[pb::Assignment]) -> (Vec<Assignment>, Vec<Refused>) {
    let mut ok = Vec::with_capacity(list.len());
    let mut refused = Vec::new();
    for a in list {
        match Assignment::try_from(a) {
            Ok(decoded) => ok.push(decoded),
            Err(error) => {
                let alloc_id = a
                    .allocation
                    .as_ref()
                    .map(|x| x.id.clone())
                    .unwrap_or_default();
                tracing::error!(alloc_id = %alloc_id, field = error.field(), %error, "assignment refused");
                if !alloc_id.is_empty() {
                    let tasks = a
                        .group
                        .iter()
                        .flat_map(|g| g.tasks.iter().map(|t| t.name.clone()))
                        .collect();
                    refused.push(Refused {
                        alloc_id,
                        tasks,
                        error,
                    });
                }
            }
        }
    }
    (ok, refused)
}

mod pins;
mod services;

#[cfg(test)]
mod tests;
