//! The per-task supervisor: `drover __supervise <task_dir>`.
//!
//! It runs synchronously on a single thread (`unshare(CLONE_NEWNS)` refuses
//! multi-threaded callers), creates the task's cgroup with its limits, puts
//! itself into fresh PID, mount, UTS, IPC and network namespaces (after
//! making the task's user namespace with a helper, see
//! [`super::identity`]), assembles the task's root filesystem and volumes
//! there when the spec has one (see [`super::rootfs`],
//! [`super::volume`]), spawns the task (which joins the cgroup, unshares
//! its cgroup namespace, is hardened, joins the user namespace and takes
//! its uid/gid, sets `no_new_privs` and installs its seccomp filter
//! ([`crate::seccomp`]) before it execs, and becomes PID 1 of the new PID
//! namespace), records every transition in
//! `state.json` (an OOM kill as such), reaps the task, removes the cgroup
//! and exits. It ignores the usual termination signals: the agent
//! signals the task directly, and the supervisor must outlive the task to
//! record its exit status.

mod command;
mod init;
mod memory;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::files::{
    now_unix_ms, read_json, write_atomic_with, write_json, write_json_with, Durability, TaskDir,
};
use super::identity::{self, Identity, RunAs};
use super::limits::{CgroupPlacement, Hardening};
use super::logs::{LogPump, RotatingLog};
use super::oci::ResolvedImage;
use super::pidfd::PidFd;
use super::rootfs::{self, PreparedRoot, RootBase, RootIds, Rootfs, RootfsDirs};
use super::spec::resolve_command_in;
use super::volume::{self, HOST_WRITABLE_DIRS};
use super::{RuntimeError, TaskSpec, TaskState};
use crate::cgroup::{self, CgroupError, Cgroups, Limits};
use command::build_command;
use memory::release_setup_memory;

/// How long the supervisor retries removing the task's cgroup while the
/// kernel finishes tearing down its processes.
const CGROUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a task runs before its supervisor gives back the memory that
/// setting it up used ([`release_setup_memory`]); a task that ends sooner
/// would only make the supervisor fault its code back in.
const RELEASE_SETUP_AFTER: Duration = Duration::from_millis(500);

/// Signals the supervisor ignores and the task gets back at their default.
const HANDLED_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGPIPE,
];

/// Entry point of `drover __supervise <task_dir>`; returns the process exit
/// code. Must be called before any other thread is started.
///
/// Exit codes: 0 when the task ran and its exit was recorded, 127 when the
/// command does not exist, 1 for every other failure (recorded as
/// `{"state":"failed"}` in `state.json` when the directory is writable).
pub fn supervise_main(task_dir: &Path) -> i32 {
    let dir = TaskDir::new(task_dir.to_owned());
    match supervise(&dir) {
        Ok(()) => 0,
        Err(failure) => {
            let state = TaskState::Failed {
                message: failure.message.clone(),
            };
            if let Err(e) = write_json(&dir.state(), &state) {
                // stderr is supervisor.log; nobody else will see this.
                let _ = writeln!(io::stderr(), "drover supervisor: {e}");
            }
            let _ = writeln!(io::stderr(), "drover supervisor: {}", failure.message);
            failure.exit_code
        }
    }
}

/// Why the supervisor gave up, and with which exit code.
struct Failure {
    message: String,
    exit_code: i32,
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure {
            message: e.to_string(),
            exit_code: 1,
        }
    }
}

fn fail(message: String) -> Failure {
    Failure {
        message,
        exit_code: 1,
    }
}

fn supervise(dir: &TaskDir) -> Result<(), Failure> {
    for sig in HANDLED_SIGNALS {
        // SAFETY: SIG_IGN installs no handler code, so no handler can run
        // concurrently with anything; the previous disposition is not needed.
        unsafe { signal(sig, SigHandler::SigIgn) }
            .map_err(|e| fail(format!("sigaction({sig}, SIG_IGN): {e}")))?;
    }

    let spec = dir
        .read_spec()?
        .ok_or_else(|| fail(format!("{} does not exist", dir.spec().display())))?;
    write_atomic_with(
        &dir.supervisor_pid(),
        std::process::id().to_string().as_bytes(),
        Durability::ProcessCrash,
    )?;
    let placement: CgroupPlacement = read_json(&dir.cgroup())?.unwrap_or_default();
    placement.validate().map_err(cgroup_failure)?;
    let cgroups = cgroup::detect(&placement.root).map_err(cgroup_failure)?;
    let cg_path = placement.task_path(&spec);
    let limits = Limits::from_spec(spec.memory_mb, spec.cpu_millis, spec.pids_max);
    cgroups.create(&cg_path, &limits).map_err(cgroup_failure)?;

    let result = run_task(dir, &spec, cgroups.as_ref(), &cg_path);

    // The task and every process of its PID namespace are gone (or were
    // never started); the kernel may still be tearing some down, which
    // `remove` waits out.
    let prune = placement.prune_paths(&spec.alloc_id);
    let prune: Vec<&Path> = prune.iter().map(PathBuf::as_path).collect();
    if let Err(e) = cgroups.remove(&cg_path, &prune, CGROUP_REMOVE_TIMEOUT) {
        // The runtime retries on stop/remove; the state is already final.
        let _ = writeln!(io::stderr(), "drover supervisor: removing cgroup: {e}");
    }
    result
}

fn cgroup_failure(e: CgroupError) -> Failure {
    fail(format!("cgroup: {e}"))
}

/// Spawns the task inside the cgroup `cg_path`, records its exit and reaps it.
fn run_task(
    dir: &TaskDir,
    spec: &TaskSpec,
    cgroups: &dyn Cgroups,
    cg_path: &Path,
) -> Result<(), Failure> {
    // Opened before the fork, so that the child only has to write(2).
    let mut procs = Vec::new();
    for path in cgroups.join_files(cg_path) {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| fail(format!("open {}: {e}", path.display())))?;
        procs.push(OwnedFd::from(file));
    }
    let hardening = Hardening::new(Path::new("/proc")).map_err(fail)?;
    // A cgroup left by a supervisor that died may have counted kills already.
    let oom_before = cgroups.oom_kills(cg_path).map_err(cgroup_failure)?;

    // The user namespace is made first, by a helper forked while nothing
    // is unshared yet (it must not become PID 1 of the task's PID
    // namespace). The task's child joins it as its very last step, after
    // the network namespace below, every mount and `sethostname`: all the
    // other namespaces stay owned by the host's user namespace.
    let (userns, mut userns_helper) = match &spec.user_namespace {
        Some(map) => {
            let (ns, helper) =
                identity::create_user_namespace(map).map_err(|e| fail(e.to_string()))?;
            (Some(ns), Some(helper))
        }
        None => (None, None),
    };
    let run_as = spec.run_as.unwrap_or_default();
    let ids = host_ids(spec, run_as, userns.as_ref().map(AsFd::as_fd))?;
    enter_namespaces(spec)?;
    let root = prepare_mounts(dir, spec, &ids)?;

    // Created before the task starts, so that `drover logs` finds both.
    let mut logs = Vec::new();
    for path in [dir.stdout(), dir.stderr()] {
        let log = RotatingLog::open(path.clone(), spec.logs)
            .map_err(|e| fail(format!("open {}: {e}", path.display())))?;
        logs.push(log);
    }
    let identity = Identity { userns, run_as };
    let mut status_pipe = match spec.init {
        true => Some(
            init::StatusPipe::new().map_err(|e| fail(format!("pipe2 for the task's init: {e}")))?,
        ),
        false => None,
    };
    let init_steps = status_pipe.as_ref().map(init::StatusPipe::steps);
    let command = build_command(spec, &procs, hardening, identity, root.as_ref(), init_steps)?;
    let mut child = spawn_task(command, spec)?;
    drop(procs);
    if let Some(pipe) = status_pipe.as_mut() {
        pipe.close_write();
    }
    let pipes = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    let pid =
        i32::try_from(child.id()).map_err(|_| fail(format!("pid {} out of range", child.id())))?;
    record_running(dir, pid)?;
    if let Some(helper) = userns_helper.as_mut() {
        helper.reap();
    }
    let streams: Vec<_> = pipes
        .into_iter()
        .zip(logs)
        .filter_map(|(pipe, log)| pipe.map(|p| (p, log)))
        .collect();
    copy_logs(pid, streams);
    let status = wait_exit(pid)?;
    let oom_kills = match cgroups.oom_kills(cg_path) {
        Ok(n) => n.saturating_sub(oom_before),
        Err(e) => {
            let _ = writeln!(io::stderr(), "drover supervisor: {e}");
            0
        }
    };
    // With an init, the task's own end (the init reports it) rather than
    // the init's 128 + signal; the init's own when it reported none (it
    // was SIGKILLed: so was everything in the namespace).
    let status = status_pipe
        .as_ref()
        .and_then(|p| p.task_status(pid))
        .unwrap_or(status);
    let exited = exit_record(pid, status, oom_kills, spec.memory_mb);
    write_json(&dir.state(), &exited)?;
    // Now reap it; the exit is already on disk.
    child
        .wait()
        .map_err(|e| fail(format!("waitpid(pid {pid}): {e}")))?;
    Ok(())
}

/// The host ids of root and of the task's user, which must both lie in
/// the user namespace's mapped range.
fn host_ids<'a>(
    spec: &TaskSpec,
    run_as: RunAs,
    userns: Option<BorrowedFd<'a>>,
) -> Result<HostIds<'a>, Failure> {
    let map = spec.user_namespace.as_ref();
    let outside = |who: &str, ids: RunAs| {
        ids.on_host(map).ok_or_else(|| {
            fail(format!(
                "{who} {}:{} is outside the mapped range of the user namespace {map:?}",
                ids.uid, ids.gid
            ))
        })
    };
    Ok(HostIds {
        root: outside("root", RunAs::default())?,
        task: outside("user", run_as)?,
        userns,
    })
}

/// Puts the supervisor into the task's PID, mount, UTS, IPC and network
/// namespaces, with a private mount tree.
fn enter_namespaces(spec: &TaskSpec) -> Result<(), Failure> {
    // The allocation's network namespace, which the agent set up (veth,
    // address, routes), is joined by the supervisor while it is real root
    // in the host's user namespace (the task enters its user namespace
    // only as its last step). Without a network in the spec the task gets
    // an empty namespace of its own (only `lo`, down); with host
    // networking it stays in the host's.
    let mut flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    match &spec.network {
        None => flags |= CloneFlags::CLONE_NEWNET,
        Some(net) => {
            if let Some(path) = &net.netns {
                join_netns(path)?;
            }
        }
    }
    unshare(flags).map_err(|e| fail(format!("unshare({flags:?}): {e}")))?;
    // Nothing mounted in this namespace (by us or by the task) may
    // propagate back to the host.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail(format!("mount(/, MS_REC|MS_PRIVATE): {e}")))
}

/// The task's root (when the spec has one) and the allocation's
/// `resolv.conf` and `hosts` over the root's own (the host's, without a
/// rootfs: this mount namespace is private).
fn prepare_mounts(
    dir: &TaskDir,
    spec: &TaskSpec,
    ids: &HostIds<'_>,
) -> Result<Option<(PreparedRoot, PathBuf)>, Failure> {
    let root = match &spec.rootfs {
        None => None,
        Some(rootfs) => Some(prepare_root(dir, spec, rootfs, ids)?),
    };
    if let Some(net) = &spec.network {
        let in_root = root
            .as_ref()
            .map_or(Path::new("/"), |(prepared, _)| prepared.merged.as_path());
        for (target, source) in [
            ("/etc/resolv.conf", &net.resolv_conf),
            ("/etc/hosts", &net.hosts),
        ] {
            if let Some(source) = source {
                rootfs::bind_file_readonly_in(in_root, Path::new(target), source)
                    .map_err(|e| fail(format!("network files: {e}")))?;
            }
        }
    }
    Ok(root)
}

/// Forks and execs the task; a missing program is exit code 127.
fn spawn_task(mut command: Command, spec: &TaskSpec) -> Result<std::process::Child, Failure> {
    let program = spec.command.first().cloned().unwrap_or_default();
    match command.spawn() {
        Ok(child) => Ok(child),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure {
            message: format!("command {program:?} not found: {e}"),
            exit_code: 127,
        }),
        Err(e) => Err(fail(format!(
            "spawning {program:?} (fork; in the child: join the cgroup, with a rootfs \
             unshare(CLONE_NEWNS) and pivot_root into it, mount /proc, sethostname, setsid, \
             setrlimit, prctl(PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS), seccomp, exec): {e}"
        ))),
    }
}

/// Records the task running and tells a waiting runtime to look now.
fn record_running(dir: &TaskDir, pid: i32) -> Result<(), Failure> {
    write_json_with(
        &dir.state(),
        &TaskState::Running {
            pid,
            started_unix_ms: now_unix_ms(),
        },
        Durability::ProcessCrash,
    )?;
    // Our stdout is the runtime's pipe. Nobody may be reading any more: an
    // error (EPIPE, SIGPIPE is ignored) is fine.
    let mut out = io::stdout().lock();
    let _ = out.write_all(b"r").and_then(|()| out.flush());
    Ok(())
}

/// Copies the task's output into its (rotating) log files until it has
/// exited and the pipes are drained, so that the exit recorded afterwards
/// comes after its last log line.
fn copy_logs(pid: i32, streams: Vec<(OwnedFd, RotatingLog)>) {
    match PidFd::open(pid) {
        Ok(Some(exit_fd)) => {
            // From then on the supervisor only copies logs and waits, for
            // as long as the task runs: it gives back what setting up used.
            let pump = LogPump::new(streams).on_idle(RELEASE_SETUP_AFTER, release_setup_memory);
            if let Err(e) = pump.run(&exit_fd, &mut io::stderr()) {
                let _ = writeln!(io::stderr(), "drover supervisor: copying logs: {e}");
            }
        }
        // Our unreaped child always exists; only fd exhaustion gets here.
        other => {
            let _ = writeln!(
                io::stderr(),
                "drover supervisor: pidfd_open({pid}): {other:?}; task output is not logged"
            );
        }
    }
}

/// Observes the exit without reaping: while the zombie exists its pid
/// cannot be reused, so an agent that read "running" and then signals the
/// pid (through a pidfd opened before reading) never hits another process.
fn wait_exit(pid: i32) -> Result<WaitStatus, Failure> {
    loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(status) => return Ok(status),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail(format!("waitid(pid {pid}): {e}"))),
        }
    }
}

/// Joins the network namespace bind-mounted at `path` (`setns`).
fn join_netns(path: &Path) -> Result<(), Failure> {
    let ns = std::fs::File::open(path).map_err(|e| {
        fail(format!(
            "open network namespace {}: {e} (the agent sets it up before starting the task)",
            path.display()
        ))
    })?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| fail(format!("setns({}, CLONE_NEWNET): {e}", path.display())))
}

/// The `Exited` record for a wait status; `oom_kills` is how many processes
/// the OOM killer killed in the task's cgroup meanwhile.
pub(super) fn exit_record(
    pid: i32,
    status: WaitStatus,
    oom_kills: u64,
    memory_mb: u64,
) -> TaskState {
    let (exit_code, sig, mut message) = match status {
        WaitStatus::Exited(_, code) => (Some(code), None, format!("exited with code {code}")),
        WaitStatus::Signaled(_, sig, core) => (
            None,
            Some(sig as i32),
            format!(
                "killed by signal {} ({sig}){}",
                sig as i32,
                if core { ", core dumped" } else { "" }
            ),
        ),
        other => (None, None, format!("unexpected wait status {other:?}")),
    };
    let oom_killed = oom_kills > 0 && sig == Some(Signal::SIGKILL as i32);
    if oom_killed {
        message = format!("killed by the OOM killer: memory limit {memory_mb} MiB");
    } else if oom_kills > 0 {
        message.push_str(&format!(
            "; the OOM killer killed {oom_kills} of its processes (memory limit {memory_mb} MiB)"
        ));
    }
    TaskState::Exited {
        pid,
        exit_code,
        signal: sig,
        finished_unix_ms: now_unix_ms(),
        message,
        oom_killed,
    }
}

/// Host ids the task's root filesystem is prepared for.
struct HostIds<'a> {
    /// Host uid and gid of root inside the task.
    root: (u32, u32),
    /// Host uid and gid of the task's user.
    task: (u32, u32),
    /// The task's user namespace, for idmapped lower layers.
    userns: Option<BorrowedFd<'a>>,
}

/// Assembles the task's root in this (private) mount namespace (with its
/// volumes and working directory) and resolves the command inside it, as
/// the task will see it.
fn prepare_root(
    dir: &TaskDir,
    spec: &TaskSpec,
    rootfs: &Rootfs,
    ids: &HostIds<'_>,
) -> Result<(PreparedRoot, PathBuf), Failure> {
    rootfs
        .validate()
        .map_err(|e| fail(format!("rootfs: {e}")))?;
    let (base, image_cwd) = match rootfs {
        Rootfs::Host => (
            RootBase::Host(spec.host_root.clone().unwrap_or_default()),
            None,
        ),
        Rootfs::Dir { path } => (RootBase::Overlay(vec![path.clone()]), None),
        Rootfs::Oci { image } => {
            let resolved: ResolvedImage = read_json(&dir.image())?.ok_or_else(|| {
                fail(format!(
                    "image {}: {} is missing (the agent writes it)",
                    image.display(),
                    dir.image().display()
                ))
            })?;
            let cwd = resolved
                .defaults
                .working_dir
                .map(|w| Path::new("/").join(w));
            (RootBase::Overlay(resolved.layers), cwd)
        }
    };
    // The task's own working directory, else the image's, else `/`.
    let cwd = spec
        .workdir
        .clone()
        .or(image_cwd)
        .unwrap_or_else(|| PathBuf::from("/"));
    let dirs = RootfsDirs::new(&dir.rootfs());
    let root_ids = RootIds {
        userns: ids.userns,
        root: ids.root,
    };
    let prepared = rootfs::prepare(&base, &dirs, Path::new("/sys"), &cwd, &root_ids)
        .map_err(|e| fail(format!("preparing the root filesystem: {e}")))?;
    let host = matches!(base, RootBase::Host(_));
    let may_create = |target: &Path| {
        !host
            || HOST_WRITABLE_DIRS
                .iter()
                .any(|d| target.starts_with(Path::new(d)))
    };
    volume::mount_all(&prepared.merged, &spec.volumes, ids.root, &may_create)
        .map_err(|e| fail(e.to_string()))?;
    // As Docker does, a missing working directory is created, owned by the
    // task's user (in the task's upper dir, or a tmpfs of the host view;
    // the layers and the host are never written).
    if !rootfs::is_dir_in(&prepared.merged, &cwd) {
        rootfs::mkdir_p_in(&prepared.merged, &cwd, Some(ids.task))
            .map_err(|e| fail(format!("working directory {}: {e}", cwd.display())))?;
    }
    let program = resolve_command_in(spec, &prepared.merged).map_err(|e| Failure {
        message: e.to_string(),
        exit_code: 127,
    })?;
    Ok((prepared, program))
}
