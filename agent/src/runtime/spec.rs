//! The task specification and the task state record, as stored in the task
//! directory, and the validation of a spec before anything is started.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::validate_name;
use super::identity::{IdMap, RunAs, UserSpec};
use super::logs::LogLimits;
use super::oci::{is_executable_in_layers, ImageDefaults};
use super::rootfs::{is_executable_in, Rootfs};
use super::volume::Volume;
use super::{RuntimeError, SpecProblem, DEFAULT_PATH};
use crate::policy::HostRootPolicy;
use crate::seccomp::Seccomp;

/// What to run: written by the agent to `<task_dir>/spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    /// Allocation id; a simple name (no `/`, not `.` or `..`).
    pub alloc_id: String,
    /// Task name within the allocation; a simple name.
    pub task: String,
    /// Hostname inside the task's UTS namespace.
    pub hostname: String,
    /// argv; `command[0]` is an absolute path or a name looked up in `PATH`.
    /// May be empty only with [`Rootfs::Oci`], whose image config then
    /// gives it (`Entrypoint` + `Cmd`).
    pub command: Vec<String>,
    /// The task's whole environment (`PATH` defaults to [`DEFAULT_PATH`]).
    pub env: BTreeMap<String, String>,
    /// Grace period between SIGTERM and SIGKILL on stop.
    pub kill_timeout_ms: u64,
    /// CPU bandwidth in millicores (1000 = one CPU), enforced as a CFS
    /// quota; 0 = unlimited.
    pub cpu_millis: u64,
    /// Memory limit in MiB, swap included (the task may not swap);
    /// 0 = unlimited. Exceeding it gets the task OOM-killed.
    pub memory_mb: u64,
    /// Maximum processes and threads in the task's cgroup; 0 = unlimited.
    #[serde(default = "default_pids_max")]
    pub pids_max: u64,
    /// The task's root filesystem; `None` (the default) shares the host's
    /// mount tree, with only `/proc` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Rootfs>,
    /// The allocation's network, set up by the agent before the task
    /// starts. `None` (specs written before networking existed, and
    /// runtime-level tests) gives the task a network namespace of its own
    /// with only `lo`, down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TaskNetwork>,
    /// Size-based rotation of the task's `stdout.log` and `stderr.log`
    /// (10 MiB x 3 files each unless the spec says otherwise).
    #[serde(default)]
    pub logs: LogLimits,
    /// Who the task runs as: `"uid"`, `"uid:gid"`, `"name"` or
    /// `"name:group"`, names looked up in the task's own `/etc/passwd` and
    /// `/etc/group`; `None` is root (of the task's user namespace).
    /// `Runtime::start` resolves it into [`TaskSpec::run_as`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory inside the task (absolute); `None` is the image's
    /// `WorkingDir`, else `/`. Created (owned by the task's user) when
    /// missing in a `dir` or `oci` root; with the `host` root it must
    /// exist, or lie below its private `/tmp` or `/run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Bind and tmpfs mounts into the task's root (a root filesystem is
    /// required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// The task's user namespace. Set by `Runtime::start` from the node
    /// policy (whatever the caller gave is replaced); `None` in a spec
    /// written before user namespaces existed, or with them disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<IdMap>,
    /// [`TaskSpec::user`] resolved to numbers, set by `Runtime::start`;
    /// `None` is root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
    /// What a [`Rootfs::Host`] root shows besides its defaults, set by
    /// `Runtime::start` from the node policy (whatever the caller gave is
    /// replaced); `None` shows the defaults only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_root: Option<HostRootPolicy>,
    /// The seccomp filter installed right before the task's `exec` (and
    /// every `drover exec` command's): the job asks for the default or
    /// none, `Runtime::start` applies the node policy (its profile; none
    /// only where allowed).
    #[serde(default, skip_serializing_if = "Seccomp::is_default")]
    pub seccomp: Seccomp,
    /// A minimal init as PID 1 of the task's PID namespace, which forwards
    /// signals to the task and reaps orphans (jobs have it unless a task
    /// says `init = false`); `false` (the runtime's default, and specs
    /// written before it existed) makes the task PID 1 itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

impl Default for TaskSpec {
    /// An empty spec (no command), for callers to fill with
    /// `..Default::default()`: default pids limit, no rootfs, no network,
    /// default log rotation, root, no volumes.
    fn default() -> Self {
        TaskSpec {
            alloc_id: String::new(),
            task: String::new(),
            hostname: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            kill_timeout_ms: 5_000,
            cpu_millis: 0,
            memory_mb: 0,
            pids_max: DEFAULT_PIDS_MAX,
            rootfs: None,
            network: None,
            logs: LogLimits::default(),
            user: None,
            workdir: None,
            volumes: Vec::new(),
            user_namespace: None,
            run_as: None,
            host_root: None,
            seccomp: Seccomp::Default,
            init: false,
        }
    }
}

/// How a task joins its allocation's network (see `crate::net::wiring`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TaskNetwork {
    /// The allocation's network namespace (a bind-mounted namespace file)
    /// that the supervisor joins with `setns` instead of creating one;
    /// `None` keeps the host's network namespace (`network = "host"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// Bind-mounted read-only over the task's `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
    /// Bind-mounted read-only over the task's `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<PathBuf>,
}

/// [`TaskSpec::pids_max`] when a spec does not say.
pub const DEFAULT_PIDS_MAX: u64 = 1024;

fn default_pids_max() -> u64 {
    DEFAULT_PIDS_MAX
}

/// A task's lifecycle as recorded in `<task_dir>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// The supervisor is starting and has not spawned the task yet.
    Pending,
    /// The task runs; `pid` is its pid in the host PID namespace.
    Running {
        /// Host pid of the task.
        pid: i32,
        /// When it was spawned.
        started_unix_ms: i64,
    },
    /// The task ended (or its supervisor died and the status is lost).
    Exited {
        /// Host pid the task had.
        pid: i32,
        /// Exit code, when it exited normally.
        exit_code: Option<i32>,
        /// Signal number, when a signal killed it.
        signal: Option<i32>,
        /// When the end was observed.
        finished_unix_ms: i64,
        /// Human-readable summary.
        message: String,
        /// Whether the OOM killer killed the task (its cgroup recorded an
        /// OOM kill and the task died by SIGKILL).
        #[serde(default)]
        oom_killed: bool,
    },
    /// The task could not be started, or is beyond supervision.
    Failed {
        /// What went wrong.
        message: String,
    },
}

impl TaskState {
    /// Whether this state can no longer change.
    pub fn is_terminal(&self) -> bool {
        matches!(self, TaskState::Exited { .. } | TaskState::Failed { .. })
    }
}

impl TaskSpec {
    /// Checks everything the supervisor would otherwise fail on: names,
    /// hostname (1-64 bytes, no NUL), argv and environment (no NUL, keys
    /// without `=`), the root filesystem ([`Rootfs::validate`]), and that
    /// `command[0]` resolves to an executable (inside the rootfs, when the
    /// spec has a [`Rootfs::Dir`]). Returns the resolved program path, as
    /// the task will see it. With [`Rootfs::Oci`] the command may be empty
    /// and is not resolved here (the image is needed: `Runtime::start` does
    /// it); `command[0]` is returned as given.
    pub fn validate(&self) -> Result<PathBuf, RuntimeError> {
        validate_name("alloc id", &self.alloc_id)?;
        validate_name("task name", &self.task)?;
        if self.hostname.is_empty() || self.hostname.len() > 64 || self.hostname.contains('\0') {
            return Err(self.invalid(format!(
                "hostname {:?} must be 1-64 bytes without NUL",
                self.hostname
            )));
        }
        if let Some((i, _)) = self
            .command
            .iter()
            .enumerate()
            .find(|(_, a)| a.contains('\0'))
        {
            return Err(self.invalid(format!("command[{i}] contains a NUL byte")));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(self.invalid(format!(
                    "env key {key:?} must be non-empty, without '=' or NUL"
                )));
            }
            if value.contains('\0') {
                return Err(self.invalid(format!("env {key} contains a NUL byte")));
            }
        }
        if let Some(rootfs) = &self.rootfs {
            rootfs.validate().map_err(|e| self.invalid(e))?;
        }
        self.validate_isolation().map_err(|e| self.invalid(e))?;
        self.logs.validate().map_err(|e| self.invalid(e))?;
        if let Some(net) = &self.network {
            let paths = [
                ("network namespace", &net.netns),
                ("resolv.conf", &net.resolv_conf),
                ("hosts file", &net.hosts),
            ];
            for (what, path) in paths {
                if let Some(p) = path.as_ref().filter(|p| !p.is_absolute()) {
                    return Err(
                        self.invalid(format!("{what} {} must be an absolute path", p.display()))
                    );
                }
            }
        }
        if let Some(Rootfs::Oci { .. }) = &self.rootfs {
            // The command may come from the image; `Runtime::start`
            // resolves the image, applies its defaults
            // ([`TaskSpec::with_image_defaults`]) and looks the command up
            // in its layers ([`resolve_command_in_layers`]).
            return Ok(PathBuf::from(
                self.command.first().cloned().unwrap_or_default(),
            ));
        }
        resolve_command(self)
    }

    /// [`RuntimeError::InvalidSpec`] for this spec's alloc and task.
    fn invalid(&self, problem: impl Into<SpecProblem>) -> RuntimeError {
        RuntimeError::InvalidSpec {
            alloc_id: self.alloc_id.clone(),
            task: self.task.clone(),
            problem: problem.into(),
        }
    }

    /// The shape of `user`, `workdir` and `volumes` (the node policy and
    /// the lookups are `Runtime::start`'s): a parsable user, an absolute
    /// normal working directory, valid volumes with distinct targets and a
    /// root filesystem for them to go into.
    fn validate_isolation(&self) -> Result<(), SpecProblem> {
        if let Some(user) = &self.user {
            UserSpec::parse(user)?;
        }
        if let Some(workdir) = &self.workdir {
            if !super::volume::is_normal_absolute(workdir) {
                return Err(format!(
                    "workdir {} must be an absolute path without `.`, `..` or NUL",
                    workdir.display()
                )
                .into());
            }
        }
        if !self.volumes.is_empty() && self.rootfs.is_none() {
            return Err("volumes need a root filesystem (rootfs host, dir or oci)"
                .to_owned()
                .into());
        }
        let mut targets = std::collections::BTreeSet::new();
        for volume in &self.volumes {
            volume.validate()?;
            if !targets.insert(volume.target()) {
                return Err(
                    format!("two volumes have the target {}", volume.target().display()).into(),
                );
            }
        }
        Ok(())
    }

    /// This spec with an image config's defaults applied: an empty
    /// `command` becomes `Entrypoint` + `Cmd` (a given command replaces
    /// both), and the image's `Env` lies under the spec's `env` (the
    /// spec's value wins for a key both set); the image's `User` is the
    /// task's user unless the spec names one. Fails when neither the spec
    /// nor the image names a command.
    pub fn with_image_defaults(
        &self,
        image: &Path,
        defaults: &ImageDefaults,
    ) -> Result<TaskSpec, RuntimeError> {
        let mut spec = self.clone();
        if spec.command.is_empty() {
            spec.command = defaults.command();
            if spec.command.is_empty() {
                return Err(RuntimeError::InvalidSpec {
                    alloc_id: self.alloc_id.clone(),
                    task: self.task.clone(),
                    problem: format!(
                        "command is empty and image {} has no Entrypoint or Cmd; \
                         give the task a command",
                        image.display()
                    )
                    .into(),
                });
            }
        }
        let mut env = defaults.env_map();
        env.extend(self.env.clone());
        spec.env = env;
        if spec.user.is_none() {
            spec.user.clone_from(&defaults.user);
        }
        Ok(spec)
    }
}

/// Checks that `command[0]` names an executable file: an absolute path as
/// is, a bare name through the task's `PATH` (or [`DEFAULT_PATH`]). Without
/// a rootfs, or with [`Rootfs::Host`], the host's view is the task's view;
/// with a [`Rootfs::Dir`] the path is looked up inside that directory.
pub(crate) fn resolve_command(spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
    match &spec.rootfs {
        Some(Rootfs::Dir { path }) => resolve_command_in(spec, path),
        None | Some(Rootfs::Host) => resolve_command_in(spec, Path::new("/")),
        Some(Rootfs::Oci { image }) => Err(RuntimeError::InvalidSpec {
            alloc_id: spec.alloc_id.clone(),
            task: spec.task.clone(),
            problem: format!(
                "the command can only be resolved once image {} is unpacked",
                image.display()
            )
            .into(),
        }),
    }
}

/// [`resolve_command`] inside the root directory `root`: symlinks are
/// resolved as the task will see them, after `pivot_root` into `root`.
pub(crate) fn resolve_command_in(spec: &TaskSpec, root: &Path) -> Result<PathBuf, RuntimeError> {
    let host = root == Path::new("/");
    let in_rootfs = if host {
        String::new()
    } else {
        format!(" in rootfs {}", root.display())
    };
    let executable = |p: &Path| {
        if host {
            is_executable(p)
        } else {
            is_executable_in(root, p)
        }
    };
    resolve_with(spec, &executable, &in_rootfs)
}

/// [`resolve_command`] in the overlay of the unpacked `layers` (top
/// first) of `image`, as the task will see it once they are mounted.
pub(crate) fn resolve_command_in_layers(
    spec: &TaskSpec,
    image: &Path,
    layers: &[PathBuf],
) -> Result<PathBuf, RuntimeError> {
    let executable = |p: &Path| is_executable_in_layers(layers, p);
    resolve_with(spec, &executable, &format!(" in image {}", image.display()))
}

fn resolve_with(
    spec: &TaskSpec,
    executable: &dyn Fn(&Path) -> bool,
    in_rootfs: &str,
) -> Result<PathBuf, RuntimeError> {
    let program = spec
        .command
        .first()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| RuntimeError::EmptyCommand {
            alloc_id: spec.alloc_id.clone(),
            task: spec.task.clone(),
        })?;
    let not_found = |detail: String| RuntimeError::CommandNotFound {
        command: program.clone(),
        detail: format!("{detail}{in_rootfs}"),
    };
    if program.contains('/') {
        let path = Path::new(program);
        if !path.is_absolute() {
            return Err(not_found(
                "a path must be absolute; use a bare name to search PATH".to_owned(),
            ));
        }
        return if executable(path) {
            Ok(path.to_owned())
        } else {
            Err(not_found("no executable file at that path".to_owned()))
        };
    }
    let search = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    search
        .split(':')
        .filter(|d| Path::new(d).is_absolute())
        .map(|d| Path::new(d).join(program))
        .find(|p| executable(p))
        .ok_or_else(|| not_found(format!("no executable of that name in PATH={search}")))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
