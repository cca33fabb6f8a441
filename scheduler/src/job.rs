//! The job model: validated domain types and the conversion from the wire.
//!
//! A submission arrives as a protobuf [`pb::Job`] from any gRPC client; the
//! scheduler trusts nothing in it. [`JobSpec::try_from`] checks every field
//! and reports *all* problems at once, each prefixed by its path
//! (`group "main" task "app": resources.memory_mb must be > 0`), so a user
//! fixes a file in one round trip.

use std::collections::BTreeMap;
use std::fmt;

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// Upper bound on a group's `count`; more is almost surely a typo.
pub const MAX_COUNT: i64 = 10_000;
/// Upper bound on a task's CPU request, in millicores (1000 cores).
pub const MAX_CPU_MILLIS: i64 = 1_000_000;
/// Upper bound on a task's memory request, in MiB (1 TiB).
pub const MAX_MEMORY_MB: i64 = 1_048_576;
/// Upper bound on a task's kill timeout (10 minutes).
pub const MAX_KILL_TIMEOUT_MS: i64 = 600_000;
/// Upper bound on restart attempts per allocation.
pub const MAX_RESTART_ATTEMPTS: i64 = 1_000;
/// Upper bound on the delay between restarts (1 hour).
pub const MAX_RESTART_DELAY_MS: i64 = 3_600_000;
/// Upper bound on a command's arguments.
pub const MAX_ARGS: usize = 4096;

/// What kind of work a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Kept running; failed instances are restarted or replaced.
    Service,
    /// Runs to completion.
    Batch,
    /// One instance of each group on every eligible node.
    System,
}

impl JobKind {
    /// The name used in job files and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Service => "service",
            JobKind::Batch => "batch",
            JobKind::System => "system",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// DNS label naming the job.
    pub name: String,
    /// Service, batch or system.
    pub kind: JobKind,
    /// At least one group, names unique.
    pub groups: Vec<GroupSpec>,
}

/// A validated group: `count` instances, each one allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// DNS label, unique within the job.
    pub name: String,
    /// Instances wanted (ignored for system jobs: one per eligible node).
    pub count: u32,
    /// At least one task, names unique.
    pub tasks: Vec<TaskSpec>,
    /// How the node restarts a failed task.
    pub restart: RestartPolicy,
    /// How its allocations are networked: empty or `"bridge"` (own
    /// namespace, veth on the node bridge, an address from the node
    /// subnet), `"host"` (the node's network; only where the node's policy
    /// allows it, checked on the node) or `"none"` (only `lo`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
}

/// The values a group's `network` may take.
pub const NETWORK_MODES: [&str; 4] = ["", "bridge", "host", "none"];

/// How a node restarts a task that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Restarts allowed before the allocation is failed.
    pub attempts: u32,
    /// Delay before each restart, in milliseconds.
    pub delay_ms: u64,
}

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

impl GroupSpec {
    /// Resources one instance of the group reserves: the sum of its tasks.
    pub fn resources(&self) -> Resources {
        self.tasks
            .iter()
            .fold(Resources::default(), |acc, t| acc.plus(t.resources))
    }
}

impl JobSpec {
    /// The group named `name`, if any.
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// A submission that failed validation: every problem, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job: {}", .problems.join("; "))]
pub struct InvalidJob {
    /// One entry per problem, e.g. `group "main": count must be >= 1, got 0`.
    pub problems: Vec<String>,
}

/// Checks that `s` is a DNS label as Drover uses them in names: 1 to 63
/// lowercase ASCII letters, digits or '-', not starting or ending with '-'.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "{s:?} is {} characters, at most 63 allowed",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{s:?} contains {c:?}; only lowercase letters, digits and '-' are allowed (it becomes a DNS name)"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("{s:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// Collects problems under a path prefix.
struct Problems {
    list: Vec<String>,
}

impl Problems {
    fn push(&mut self, path: &str, msg: impl fmt::Display) {
        if path.is_empty() {
            self.list.push(msg.to_string());
        } else {
            self.list.push(format!("{path}: {msg}"));
        }
    }

    fn range(&mut self, path: &str, field: &str, v: i64, min: i64, max: i64) {
        if v < min {
            if min == 1 {
                self.push(path, format!("{field} must be > 0, got {v}"));
            } else {
                self.push(path, format!("{field} must be >= {min}, got {v}"));
            }
        } else if v > max {
            self.push(path, format!("{field} must be <= {max}, got {v}"));
        }
    }
}

fn clamp_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl TryFrom<&pb::Job> for JobSpec {
    type Error = InvalidJob;

    fn try_from(job: &pb::Job) -> Result<Self, InvalidJob> {
        let mut p = Problems { list: Vec::new() };
        if let Err(e) = check_dns_label(&job.name) {
            p.push("", format!("name {e}"));
        }
        let kind = match job.kind.as_str() {
            "" | "service" => JobKind::Service,
            "batch" => JobKind::Batch,
            "system" => JobKind::System,
            other => {
                p.push(
                    "",
                    format!("kind {other:?} is not one of \"service\", \"batch\", \"system\""),
                );
                JobKind::Service
            }
        };
        if job.groups.is_empty() {
            p.push("", "a job needs at least one [[group]]");
        }
        let mut groups = Vec::with_capacity(job.groups.len());
        let mut seen_groups = BTreeMap::new();
        for (gi, g) in job.groups.iter().enumerate() {
            let gpath = if g.name.is_empty() {
                format!("group #{}", gi + 1)
            } else {
                format!("group {:?}", g.name)
            };
            if let Err(e) = check_dns_label(&g.name) {
                p.push(&gpath, format!("name {e}"));
            } else if seen_groups.insert(g.name.clone(), ()).is_some() {
                p.push(&gpath, "duplicate group name");
            }
            if kind == JobKind::System {
                p.range(&gpath, "count", g.count, 0, 1);
            } else {
                p.range(&gpath, "count", g.count, 1, MAX_COUNT);
            }
            let restart = match &g.restart {
                Some(r) => {
                    p.range(
                        &gpath,
                        "restart.attempts",
                        r.attempts,
                        0,
                        MAX_RESTART_ATTEMPTS,
                    );
                    p.range(
                        &gpath,
                        "restart.delay_ms",
                        r.delay_ms,
                        0,
                        MAX_RESTART_DELAY_MS,
                    );
                    RestartPolicy {
                        attempts: u32::try_from(r.attempts).unwrap_or(0),
                        delay_ms: clamp_u64(r.delay_ms),
                    }
                }
                None => RestartPolicy::default_for(kind),
            };
            if g.tasks.is_empty() {
                p.push(&gpath, "a group needs at least one [[group.task]]");
            }
            let mut tasks = Vec::with_capacity(g.tasks.len());
            let mut seen_tasks = BTreeMap::new();
            for (ti, t) in g.tasks.iter().enumerate() {
                let tpath = if t.name.is_empty() {
                    format!("{gpath} task #{}", ti + 1)
                } else {
                    format!("{gpath} task {:?}", t.name)
                };
                if let Err(e) = check_dns_label(&t.name) {
                    p.push(&tpath, format!("name {e}"));
                } else if seen_tasks.insert(t.name.clone(), ()).is_some() {
                    p.push(&tpath, "duplicate task name");
                }
                // An OCI image's config may supply the command.
                let image_command = t.rootfs.as_ref().is_some_and(|r| r.kind == "oci");
                if !(image_command && t.command.is_empty()) {
                    check_command(&mut p, &tpath, &t.command);
                }
                for k in t.env.keys() {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        p.push(
                            &tpath,
                            format!("env name {k:?} must be non-empty without '=' or NUL"),
                        );
                    }
                }
                for (k, v) in &t.env {
                    if v.contains('\0') {
                        p.push(&tpath, format!("env {k:?} value contains a NUL byte"));
                    }
                }
                let rootfs = match &t.rootfs {
                    None => RootfsSpec::Host,
                    Some(r) => match r.kind.as_str() {
                        "" | "host" => {
                            if !r.path.is_empty() {
                                p.push(&tpath, "rootfs.path is only for type \"dir\"");
                            }
                            RootfsSpec::Host
                        }
                        "dir" | "oci" => {
                            if !r.path.starts_with('/') {
                                p.push(
                                    &tpath,
                                    format!(
                                        "rootfs.path must be an absolute path, got {:?}",
                                        r.path
                                    ),
                                );
                            } else if r.path.contains(['\0', ',', ':', '\\']) {
                                p.push(
                                    &tpath,
                                    format!(
                                        "rootfs.path {:?} may not contain NUL, ',', ':' or '\\'",
                                        r.path
                                    ),
                                );
                            }
                            if r.kind == "oci" {
                                RootfsSpec::Oci {
                                    path: r.path.clone(),
                                }
                            } else {
                                RootfsSpec::Dir {
                                    path: r.path.clone(),
                                }
                            }
                        }
                        other => {
                            p.push(
                                &tpath,
                                format!("rootfs.type {other:?} is not one of \"host\", \"dir\", \"oci\""),
                            );
                            RootfsSpec::Host
                        }
                    },
                };
                let res = t.resources.unwrap_or_default();
                p.range(
                    &tpath,
                    "resources.cpu_millis",
                    res.cpu_millis,
                    1,
                    MAX_CPU_MILLIS,
                );
                p.range(
                    &tpath,
                    "resources.memory_mb",
                    res.memory_mb,
                    1,
                    MAX_MEMORY_MB,
                );
                p.range(
                    &tpath,
                    "kill_timeout_ms",
                    t.kill_timeout_ms,
                    0,
                    MAX_KILL_TIMEOUT_MS,
                );
                check_user(&mut p, &tpath, &t.user);
                if !t.workdir.is_empty() {
                    if let Err(e) = check_abs_path(&t.workdir) {
                        p.push(&tpath, format!("workdir {e}"));
                    }
                }
                let volumes = check_volumes(&mut p, &tpath, &t.volumes);
                let logs = t.logs.as_ref().map(|l| {
                    p.range(
                        &tpath,
                        "logs.max_size_mb",
                        l.max_size_mb,
                        1,
                        MAX_LOG_SIZE_MB,
                    );
                    p.range(&tpath, "logs.max_files", l.max_files, 1, MAX_LOG_FILES);
                    LogSpec {
                        max_size_mb: u32::try_from(l.max_size_mb).unwrap_or(0),
                        max_files: u32::try_from(l.max_files).unwrap_or(0),
                    }
                });
                tasks.push(TaskSpec {
                    logs,
                    user: t.user.clone(),
                    workdir: t.workdir.clone(),
                    volumes,
                    name: t.name.clone(),
                    command: t.command.clone(),
                    env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    resources: Resources {
                        cpu_millis: clamp_u64(res.cpu_millis),
                        memory_mb: clamp_u64(res.memory_mb),
                    },
                    kill_timeout_ms: clamp_u64(t.kill_timeout_ms),
                    rootfs,
                });
            }
            if !NETWORK_MODES.contains(&g.network.as_str()) {
                p.push(
                    &gpath,
                    format!(
                        "network must be \"bridge\" (the default), \"host\" or \"none\", got {:?}",
                        g.network
                    ),
                );
            }
            groups.push(GroupSpec {
                name: g.name.clone(),
                count: u32::try_from(g.count).unwrap_or(0),
                tasks,
                restart,
                network: g.network.clone(),
            });
        }
        if !p.list.is_empty() {
            return Err(InvalidJob { problems: p.list });
        }
        Ok(JobSpec {
            name: job.name.clone(),
            kind,
            groups,
        })
    }
}

/// `Ok` for an absolute path made of normal components (no `.`, `..`,
/// empty components or NUL); the error completes "<field> ...".
fn check_abs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("must be an absolute path, got {path:?}"));
    }
    if path.contains('\0') || path[1..].split('/').any(|c| c == "." || c == "..") {
        return Err(format!("{path:?} may not contain `.`, `..` or NUL"));
    }
    Ok(())
}

/// `user`: empty, or `user[:group]` where each is a number (a 32-bit id)
/// or a name of 1-32 characters from `[A-Za-z0-9_.-]`.
fn check_user(p: &mut Problems, path: &str, user: &str) {
    if user.is_empty() {
        return;
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    for (what, part) in [("user", Some(u)), ("group", g)] {
        let Some(part) = part else { continue };
        let ok = if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse::<u32>().is_ok()
        } else {
            !part.is_empty()
                && part.len() <= 32
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !ok {
            p.push(
                path,
                format!(
                    "user {user:?}: the {what} must be a number below 2^32 or a name of 1-32 \
                     characters from [A-Za-z0-9_.-] (forms: \"uid\", \"uid:gid\", \"name\", \
                     \"name:group\")"
                ),
            );
            return;
        }
    }
}

fn check_volumes(p: &mut Problems, path: &str, volumes: &[pb::Volume]) -> Vec<VolumeSpec> {
    let mut out = Vec::with_capacity(volumes.len());
    let mut targets = BTreeMap::new();
    for (i, v) in volumes.iter().enumerate() {
        let vpath = format!("{path} volume #{}", i + 1);
        let mut ok = true;
        let mut problem = |p: &mut Problems, msg: String| {
            ok = false;
            p.push(&vpath, msg);
        };
        match check_abs_path(&v.target) {
            Err(e) => problem(p, format!("target {e}")),
            Ok(()) => {
                let target = v.target.trim_end_matches('/');
                if target.is_empty() {
                    problem(p, "target / would hide the whole root filesystem".into());
                } else if let Some(r) = RESERVED_VOLUME_TARGETS
                    .iter()
                    .find(|r| target == **r || target.starts_with(&format!("{r}/")))
                {
                    problem(
                        p,
                        format!(
                            "target {:?} is at or under {r}, which the runtime provides",
                            v.target
                        ),
                    );
                } else if targets.insert(target.to_owned(), ()).is_some() {
                    problem(
                        p,
                        format!("target {:?} is used by another volume", v.target),
                    );
                }
            }
        }
        let volume = match v.kind.as_str() {
            "bind" => {
                if let Err(e) = check_abs_path(&v.source) {
                    problem(p, format!("source {e}"));
                }
                if v.size_mb != 0 {
                    problem(p, "size_mb is only for type \"tmpfs\"".into());
                }
                VolumeSpec::Bind {
                    source: v.source.clone(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                }
            }
            "tmpfs" => {
                if !v.source.is_empty() {
                    problem(p, "source is only for type \"bind\"".into());
                }
                if v.read_only {
                    problem(
                        p,
                        "read_only is only for type \"bind\" (an empty read-only tmpfs is useless)"
                            .into(),
                    );
                }
                if !(0..=MAX_TMPFS_MB).contains(&v.size_mb) {
                    problem(
                        p,
                        format!(
                            "size_mb must be between 0 and {MAX_TMPFS_MB}, got {}",
                            v.size_mb
                        ),
                    );
                }
                VolumeSpec::Tmpfs {
                    target: v.target.clone(),
                    size_mb: clamp_u64(v.size_mb),
                }
            }
            other => {
                problem(
                    p,
                    format!("type {other:?} is not one of \"bind\", \"tmpfs\""),
                );
                continue;
            }
        };
        if ok {
            out.push(volume);
        }
    }
    out
}

fn check_command(p: &mut Problems, path: &str, command: &[String]) {
    match command.first() {
        None => p.push(path, "command must not be empty"),
        Some(prog) if prog.trim().is_empty() => {
            p.push(path, "command[0] (the program) must not be empty")
        }
        Some(_) => {}
    }
    if command.len() > MAX_ARGS {
        p.push(
            path,
            format!(
                "command has {} arguments, at most {MAX_ARGS}",
                command.len()
            ),
        );
    }
    if let Some(i) = command.iter().position(|a| a.contains('\0')) {
        p.push(path, format!("command[{i}] contains a NUL byte"));
    }
}

impl RestartPolicy {
    /// The policy a group gets when its job file names none: services retry
    /// a few times with a short delay, batch jobs not at all.
    pub fn default_for(kind: JobKind) -> RestartPolicy {
        match kind {
            JobKind::Service | JobKind::System => RestartPolicy {
                attempts: 3,
                delay_ms: 1_000,
            },
            JobKind::Batch => RestartPolicy {
                attempts: 0,
                delay_ms: 0,
            },
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
                kind: "bind".into(),
                source: source.clone(),
                target: target.clone(),
                read_only: *read_only,
                size_mb: 0,
            },
            VolumeSpec::Tmpfs { target, size_mb } => pb::Volume {
                kind: "tmpfs".into(),
                source: String::new(),
                target: target.clone(),
                read_only: false,
                size_mb: i64::try_from(*size_mb).unwrap_or(i64::MAX),
            },
        }
    }
}

impl From<&JobSpec> for pb::Job {
    fn from(j: &JobSpec) -> pb::Job {
        pb::Job {
            name: j.name.clone(),
            kind: j.kind.as_str().to_string(),
            groups: j.groups.iter().map(pb::Group::from).collect(),
        }
    }
}

impl From<&GroupSpec> for pb::Group {
    fn from(g: &GroupSpec) -> pb::Group {
        pb::Group {
            name: g.name.clone(),
            count: i64::from(g.count),
            tasks: g
                .tasks
                .iter()
                .map(|t| pb::Task {
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
                            kind: "host".into(),
                            path: String::new(),
                        },
                        RootfsSpec::Dir { path } => pb::Rootfs {
                            kind: "dir".into(),
                            path: path.clone(),
                        },
                        RootfsSpec::Oci { path } => pb::Rootfs {
                            kind: "oci".into(),
                            path: path.clone(),
                        },
                    }),
                    user: t.user.clone(),
                    workdir: t.workdir.clone(),
                    volumes: t.volumes.iter().map(pb::Volume::from).collect(),
                })
                .collect(),
            restart: Some(pb::RestartPolicy {
                attempts: i64::from(g.restart.attempts),
                delay_ms: i64::try_from(g.restart.delay_ms).unwrap_or(i64::MAX),
            }),
            network: g.network.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn good() -> pb::Job {
        pb::Job {
            name: "hello".into(),
            kind: "service".into(),
            groups: vec![pb::Group {
                name: "main".into(),
                count: 2,
                restart: None,
                tasks: vec![pb::Task {
                    name: "app".into(),
                    command: vec!["/bin/sh".into(), "-c".into(), "sleep 1".into()],
                    env: Default::default(),
                    resources: Some(pb::Resources {
                        cpu_millis: 100,
                        memory_mb: 32,
                    }),
                    kill_timeout_ms: 5000,
                    rootfs: None,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn problems(job: &pb::Job) -> Vec<String> {
        JobSpec::try_from(job).unwrap_err().problems
    }

    #[test]
    fn user_workdir_and_volumes_are_checked() {
        let mut j = good();
        let t = &mut j.groups[0].tasks[0];
        t.user = "app:staff".into();
        t.workdir = "/srv/app".into();
        t.volumes = vec![
            pb::Volume {
                kind: "bind".into(),
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true,
                size_mb: 0,
            },
            pb::Volume {
                kind: "tmpfs".into(),
                target: "/scratch".into(),
                size_mb: 16,
                ..Default::default()
            },
        ];
        let spec = JobSpec::try_from(&j).unwrap();
        assert_eq!(spec.groups[0].tasks[0].volumes.len(), 2);
        assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);

        let t = &mut j.groups[0].tasks[0];
        t.user = "a b:1".into();
        t.workdir = "app".into();
        t.volumes.push(pb::Volume {
            kind: "bind".into(),
            source: "/srv/../etc".into(),
            target: "/proc/sys".into(),
            ..Default::default()
        });
        t.volumes.push(pb::Volume {
            kind: "tmpfs".into(),
            target: "/data".into(),
            read_only: true,
            size_mb: -1,
            ..Default::default()
        });
        t.volumes.push(pb::Volume {
            kind: "nfs".into(),
            target: "/".into(),
            ..Default::default()
        });
        t.volumes.push(pb::Volume {
            kind: "tmpfs".into(),
            target: "/".into(),
            ..Default::default()
        });
        let p = problems(&j);
        let has = |s: &str| p.iter().any(|x| x.contains(s));
        assert!(has("user \"a b:1\": the user must be"), "{p:?}");
        assert!(has("workdir must be an absolute path"), "{p:?}");
        assert!(
            has("volume #3: source \"/srv/../etc\" may not contain"),
            "{p:?}"
        );
        assert!(
            has("volume #3: target \"/proc/sys\" is at or under /proc"),
            "{p:?}"
        );
        assert!(
            has("volume #4: target \"/data\" is used by another volume"),
            "{p:?}"
        );
        assert!(
            has("volume #4: read_only is only for type \"bind\""),
            "{p:?}"
        );
        assert!(has("volume #4: size_mb must be between 0"), "{p:?}");
        assert!(has("volume #5: type \"nfs\" is not one of"), "{p:?}");
        assert!(has("volume #6: target / would hide"), "{p:?}");
    }

    #[test]
    fn accepts_a_good_job_and_round_trips() {
        let spec = JobSpec::try_from(&good()).unwrap();
        assert_eq!(spec.groups[0].count, 2);
        assert_eq!(spec.groups[0].resources().memory_mb, 32);
        let back = pb::Job::from(&spec);
        assert_eq!(JobSpec::try_from(&back).unwrap(), spec);
    }

    #[test]
    fn names_every_problem_with_its_path() {
        let mut j = good();
        j.groups[0].count = 0;
        j.groups[0].tasks[0].resources = Some(pb::Resources {
            cpu_millis: -5,
            memory_mb: 0,
        });
        j.groups[0].tasks[0].command.clear();
        let p = problems(&j);
        assert_eq!(
            p,
            vec![
                "group \"main\": count must be > 0, got 0",
                "group \"main\" task \"app\": command must not be empty",
                "group \"main\" task \"app\": resources.cpu_millis must be > 0, got -5",
                "group \"main\" task \"app\": resources.memory_mb must be > 0, got 0",
            ]
        );
    }

    #[test]
    fn refuses_absurd_values_and_duplicates() {
        let mut j = good();
        j.groups[0].count = 1_000_000;
        let t = j.groups[0].tasks[0].clone();
        j.groups[0].tasks.push(t);
        let g = j.groups[0].clone();
        j.groups.push(g);
        let p = problems(&j);
        assert!(p.contains(&"group \"main\": duplicate group name".to_string()));
        assert!(p.contains(&"group \"main\" task \"app\": duplicate task name".to_string()));
        assert!(p.contains(&"group \"main\": count must be <= 10000, got 1000000".to_string()));
    }

    #[test]
    fn refuses_names_that_are_not_dns_labels() {
        let mut j = good();
        j.name = "Hello_World".into();
        j.groups[0].name = "-x".into();
        j.groups[0].tasks[0].name = "a".repeat(64);
        let p = problems(&j);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("name \"Hello_World\" contains 'H'"),
            "{p:?}"
        );
        assert!(p[1].contains("must start and end with a letter or digit"));
        assert!(p[2].contains("is 64 characters"));
    }

    #[test]
    fn rootfs_is_host_by_default_and_dir_needs_an_absolute_path() {
        let spec = JobSpec::try_from(&good()).unwrap();
        assert_eq!(spec.groups[0].tasks[0].rootfs, RootfsSpec::Host);
        let mut j = good();
        j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
            kind: "dir".into(),
            path: "rootfs".into(),
        });
        assert_eq!(
            problems(&j),
            vec![
                "group \"main\" task \"app\": rootfs.path must be an absolute path, got \"rootfs\""
            ]
        );
        j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
            kind: "image".into(),
            path: String::new(),
        });
        assert!(problems(&j)[0].contains("rootfs.type \"image\" is not one of"));
        // An OCI image may supply the command; nothing else may.
        j.groups[0].tasks[0].command.clear();
        j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
            kind: "oci".into(),
            path: "/var/lib/images/web".into(),
        });
        let spec = JobSpec::try_from(&j).unwrap();
        assert_eq!(
            spec.groups[0].tasks[0].rootfs,
            RootfsSpec::Oci {
                path: "/var/lib/images/web".into()
            }
        );
        j.groups[0].tasks[0].rootfs = None;
        assert_eq!(
            problems(&j),
            vec!["group \"main\" task \"app\": command must not be empty"]
        );
    }

    #[test]
    fn refuses_unknown_kind_and_empty_job() {
        let j = pb::Job {
            name: "x".into(),
            kind: "cron".into(),
            groups: vec![],
        };
        let p = problems(&j);
        assert_eq!(
            p,
            vec![
                "kind \"cron\" is not one of \"service\", \"batch\", \"system\"",
                "a job needs at least one [[group]]",
            ]
        );
    }
}
