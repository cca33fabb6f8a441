//! The exec helper: `drover __exec <request-json>`, started by the agent for
//! one `drover exec` session.
//!
//! `setns(2)` into a mount or user namespace is refused to a multithreaded
//! process, so this runs in a process of its own, dispatched before any
//! thread or async runtime exists, and stays single-threaded throughout:
//!
//! 1. opens the target task's pidfd and every `/proc/<pid>/ns/*` file
//!    first, then checks the pidfd again, so that all of them are the
//!    task's even if it exits meanwhile;
//! 2. joins the task's cgroup (writes its own pid to each `cgroup.procs`;
//!    the command inherits it) while it still sees the host's cgroupfs;
//! 3. joins the cgroup, IPC, UTS, network, PID and mount namespaces, in that
//!    order, skipping any it shares already; changes to the working
//!    directory and resolves the command inside the container; opens a
//!    pseudo-terminal there (in the container's `devpts`) when asked;
//! 4. joins the user namespace last (only when the task's differs from
//!    ours: the other namespaces belong to the initial one and need its
//!    privileges) and becomes uid/gid 0 inside;
//! 5. forks, so that the PID namespace applies, and the child takes the
//!    terminal as its controlling tty, hardens itself as the task was
//!    (rlimits, bounding set), becomes the task's user (or the one asked
//!    for), dies with the helper (`PR_SET_PDEATHSIG`), sets
//!    `no_new_privs`, installs the task's seccomp filter and execs;
//! 6. waits for it, relaying the terminal when there is one, and writes one
//!    [`HelperReport`] line on the report descriptor.
//!
//! Without a terminal the command's stdin, stdout and stderr are the
//! helper's own (pipes from the agent). With one, the helper copies its
//! stdin to the terminal and the terminal to its stdout, and applies the
//! resize messages (`"<rows> <cols>\n"`) the agent writes on the control
//! descriptor. End of file on the control descriptor means the agent is
//! gone: the command is killed.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::pty::{openpty, OpenptyResult, Winsize};
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::runtime::{Hardening, PidFd, RunAs, DEFAULT_PATH};
use crate::seccomp::{Filter, Seccomp};

mod relay;
use relay::wait_relaying;

/// The namespaces joined, in order: the user namespace comes last because
/// the others belong to the initial user namespace, whose privileges
/// joining them needs.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// What the agent asks of the helper (its one argument, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperRequest {
    /// Host pid of the task whose namespaces and cgroup are joined.
    pub pid: i32,
    /// Who the command runs as, in the task's user namespace (on the host
    /// without one).
    pub run_as: RunAs,
    /// The task's `cgroup.procs` file in every hierarchy.
    pub cgroup_procs: Vec<PathBuf>,
    /// argv; `command[0]` is a path or a name looked up in `PATH`.
    pub command: Vec<String>,
    /// The whole environment of the command.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// `(rows, cols)` of a pseudo-terminal to run the command on; `None`
    /// runs it on the helper's own stdin, stdout and stderr.
    pub tty: Option<(u16, u16)>,
    /// Descriptor the agent writes resize messages to (read end).
    pub control_fd: RawFd,
    /// Descriptor the helper writes its [`HelperReport`] to.
    pub report_fd: RawFd,
    /// The task's seccomp setting: the command runs under the same filter.
    #[serde(default)]
    pub seccomp: Seccomp,
}

/// How the session ended, one JSON line on the report descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HelperReport {
    /// The command exited with `code`.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// A signal killed the command.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The command could not be started; `code` is the exit code to give
    /// (127 not found, 126 not executable, 125 anything else, as Docker).
    Failed {
        /// What went wrong.
        message: String,
        /// Exit code for the CLI.
        code: i32,
    },
}

/// Why the helper gave up.
struct Failure {
    message: String,
    code: i32,
}

fn fail(message: String) -> Failure {
    Failure { message, code: 125 }
}

/// Entry point of `drover __exec <json>`: returns the process exit code (0
/// once a report was written, 2 when there is nowhere to write it). Must
/// be called before any other thread is started.
pub fn exec_main(arg: &OsStr) -> i32 {
    let request: HelperRequest = match serde_json::from_slice(arg.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(io::stderr(), "drover __exec: bad request: {e}");
            return 2;
        }
    };
    let Some(report_fd) = take_fd(request.report_fd) else {
        let _ = writeln!(
            io::stderr(),
            "drover __exec: report descriptor {} is not open",
            request.report_fd
        );
        return 2;
    };
    let report = match run(&request) {
        Ok(report) => report,
        Err(f) => HelperReport::Failed {
            message: f.message,
            code: f.code,
        },
    };
    let mut out = File::from(report_fd);
    let mut line = serde_json::to_vec(&report).unwrap_or_default();
    line.push(b'\n');
    // The agent may be gone (EPIPE; SIGPIPE is ignored): nothing to do then.
    let _ = out.write_all(&line);
    0
}

/// Takes ownership of an inherited descriptor, if it is open.
fn take_fd(fd: RawFd) -> Option<OwnedFd> {
    if fd < 0 {
        return None;
    }
    // SAFETY: F_GETFD/F_SETFD only inspect and flag the descriptor table.
    // Close-on-exec: the command must not inherit the helper's pipes.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0
        || unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0
    {
        return None;
    }
    // SAFETY: the agent passed this descriptor to us for our exclusive use
    // and nothing else in this process refers to it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The namespace files of the task, opened before any is joined; `None`
/// for a namespace the helper already shares.
struct Namespaces {
    files: Vec<(&'static str, CloneFlags, File)>,
}

impl Namespaces {
    fn open(pid: i32) -> Result<Self, Failure> {
        let mut files = Vec::new();
        for (name, flag) in NAMESPACES {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(fail(format!(
                        "the task (pid {pid}) has exited: {} is gone",
                        path.display()
                    )))
                }
                Err(e) => return Err(fail(format!("open {}: {e}", path.display()))),
            };
            let theirs = file
                .metadata()
                .map_err(|e| fail(format!("stat {}: {e}", path.display())))?;
            let own = format!("/proc/self/ns/{name}");
            let ours = std::fs::metadata(&own).map_err(|e| fail(format!("stat {own}: {e}")))?;
            if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
                files.push((name, flag, file));
            }
        }
        Ok(Self { files })
    }

    /// Joins every namespace except the user namespace, in order.
    fn join_all_but_user(
        &mut self,
        after_mnt: &mut dyn FnMut() -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut joined_mnt = false;
        for (name, flag, file) in &self.files {
            if *flag == CloneFlags::CLONE_NEWUSER {
                continue;
            }
            setns(file.as_fd(), *flag)
                .map_err(|e| fail(format!("setns({name} namespace of the task): {e}")))?;
            if *flag == CloneFlags::CLONE_NEWNS {
                joined_mnt = true;
                after_mnt()?;
            }
        }
        if !joined_mnt {
            after_mnt()?;
        }
        Ok(())
    }

    /// Joins the user namespace, if the task has its own; returns whether.
    fn join_user(&self) -> Result<bool, Failure> {
        for (_, flag, file) in &self.files {
            if *flag == CloneFlags::CLONE_NEWUSER {
                setns(file.as_fd(), *flag)
                    .map_err(|e| fail(format!("setns(user namespace of the task): {e}")))?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Everything the forked child needs, prepared before the fork: the child
/// only makes async-signal-safe calls on it.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Installed right before exec; `None`: unconfined.
    seccomp: Option<Filter>,
}

impl Prepared {
    fn new(program: &Path, request: &HelperRequest) -> Result<Self, Failure> {
        let c = |what: &str, b: &[u8]| {
            CString::new(b).map_err(|_| fail(format!("{what} contains a NUL byte")))
        };
        let program = c("command", program.as_os_str().as_bytes())?;
        let argv = request
            .command
            .iter()
            .map(|a| c("an argument", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = request
            .env
            .iter()
            .map(|(k, v)| c("the environment", format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let seccomp = request
            .seccomp
            .filter()
            .map_err(|e| fail(format!("the task's seccomp filter: {e}")))?;
        Ok(Self {
            program,
            argv,
            envp,
            seccomp,
        })
    }
}

fn run(request: &HelperRequest) -> Result<HelperReport, Failure> {
    let control = take_fd(request.control_fd).ok_or_else(|| {
        fail(format!(
            "control descriptor {} is not open",
            request.control_fd
        ))
    })?;
    if request.command.first().is_none_or(String::is_empty) {
        return Err(fail("empty command".to_owned()));
    }
    // The host's /proc, before the mount namespace changes.
    let hardening = Hardening::new(Path::new("/proc")).map_err(fail)?;
    let namespaces = open_task(request.pid)?;
    join_task_cgroup(request)?;
    let (program, pty) = enter_task(namespaces, request)?;
    let prepared = Prepared::new(&program, request)?;
    let (child, master) = spawn(&prepared, &hardening, request, pty)?;
    let exited = PidFd::open(child.as_raw())
        .map_err(|e| fail(format!("pidfd_open({child}): {e}")))?
        .ok_or_else(|| fail(format!("exec'd process {child} vanished")))?;
    let status = wait_relaying(child, &exited, &control, master.as_ref());
    // What the command left running in its process group (`cmd &` in a
    // shell) ends with the session. The group's id stays reserved while it
    // has members, so this can hit no other process.
    let _ = nix::sys::signal::killpg(child, nix::sys::signal::Signal::SIGKILL);
    let status = status?;
    Ok(match status {
        WaitStatus::Exited(_, code) => HelperReport::Exited { code },
        WaitStatus::Signaled(_, sig, _) => HelperReport::Signaled { signal: sig as i32 },
        other => HelperReport::Failed {
            message: format!("unexpected wait status {other:?}"),
            code: 125,
        },
    })
}

/// The namespaces of the task with host pid `pid`, once it is sure that
/// the pid is still the task's.
fn open_task(pid: i32) -> Result<Namespaces, Failure> {
    let task = PidFd::open(pid)
        .map_err(|e| fail(format!("pidfd_open({pid}): {e}")))?
        .ok_or_else(|| fail(format!("the task (pid {pid}) has exited")))?;
    let namespaces = Namespaces::open(pid)?;
    // Opened after the pidfd: if the task is still alive now, the files
    // above are its own and not a later process's that reused the pid.
    if task.exited() {
        return Err(fail(format!("the task (pid {pid}) has exited")));
    }
    // Every task has a PID and a mount namespace of its own. A pid whose
    // process shares ours is not the task (it ended and a host process
    // reused the pid before its exit was recorded): never run the command
    // there, as host root.
    for own in ["pid", "mnt"] {
        if !namespaces.files.iter().any(|(name, _, _)| *name == own) {
            return Err(fail(format!(
                "pid {pid} is not the task any more (it shares the host's {own} namespace): \
                 the task has exited"
            )));
        }
    }
    Ok(namespaces)
}

/// Moves this helper into the task's cgroup.
fn join_task_cgroup(request: &HelperRequest) -> Result<(), Failure> {
    for path in &request.cgroup_procs {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(b"0"))
            .map_err(|e| {
                fail(format!(
                    "joining the task's cgroup: write {}: {e}",
                    path.display()
                ))
            })?;
    }
    Ok(())
}

/// Joins the task's namespaces (the user namespace last), enters the
/// working directory, resolves the program and opens the terminal.
fn enter_task(
    mut namespaces: Namespaces,
    request: &HelperRequest,
) -> Result<(PathBuf, Option<OpenptyResult>), Failure> {
    let mut program = None;
    let mut pty = None;
    namespaces.join_all_but_user(&mut || {
        std::env::set_current_dir(&request.cwd).map_err(|e| {
            fail(format!(
                "working directory {} in the container: {e}",
                request.cwd.display()
            ))
        })?;
        program = Some(resolve(&request.command[0], &request.env)?);
        if let Some((rows, cols)) = request.tty {
            // In the container's mount namespace: /dev/ptmx is its devpts,
            // so the command sees its terminal as /dev/pts/N. Opened while
            // still privileged on the host (the devpts belongs to it).
            let size = Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let p =
                openpty(&size, None).map_err(|e| fail(format!("openpty in the container: {e}")))?;
            pty = Some(p);
        }
        Ok(())
    })?;
    let program = program.ok_or_else(|| fail("command not resolved".to_owned()))?;
    if namespaces.join_user()? {
        // Root of the user namespace: the task's uid 0, an unprivileged
        // uid on the host.
        nix::unistd::setgid(nix::unistd::Gid::from_raw(0))
            .map_err(|e| fail(format!("setgid(0) in the task's user namespace: {e}")))?;
        let _ = nix::unistd::setgroups(&[]);
        nix::unistd::setuid(nix::unistd::Uid::from_raw(0))
            .map_err(|e| fail(format!("setuid(0) in the task's user namespace: {e}")))?;
    }
    Ok((program, pty))
}

/// Forks the command's process and waits until it has exec'd (or says why
/// it could not); returns it and the terminal's master side.
fn spawn(
    prepared: &Prepared,
    hardening: &Hardening,
    request: &HelperRequest,
    pty: Option<OpenptyResult>,
) -> Result<(Pid, Option<OwnedFd>), Failure> {
    let (exec_err_r, exec_err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe2: {e}")))?;
    if let Some(p) = &pty {
        set_cloexec(p.master.as_fd())?;
        set_cloexec(p.slave.as_fd())?;
    }
    let slave_raw = pty.as_ref().map(|p| p.slave.as_raw_fd());
    // Lets the child see whether the helper died before its parent-death
    // signal was armed.
    let own_pid = i32::try_from(std::process::id()).map_err(|e| fail(e.to_string()))?;
    let helper = PidFd::open(own_pid)
        .map_err(|e| fail(format!("pidfd_open(self): {e}")))?
        .ok_or_else(|| fail("pidfd_open(self): no such process".to_owned()))?;

    // SAFETY: this process is single-threaded (the helper is dispatched
    // before any thread starts and never spawns one), so the child may do
    // anything the parent could; `child` still sticks to async-signal-safe
    // calls on memory prepared above.
    let forked = unsafe { nix::unistd::fork() }.map_err(|e| fail(format!("fork: {e}")))?;
    let child = match forked {
        ForkResult::Child => {
            let errno = child(prepared, hardening, request.run_as, slave_raw, &helper);
            let bytes = errno.to_ne_bytes();
            // SAFETY: write(2) and _exit(2) are async-signal-safe; `bytes`
            // lives on our stack.
            unsafe {
                libc::write(exec_err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127);
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(exec_err_w);
    let master = pty.map(|p| {
        drop(p.slave);
        p.master
    });
    let mut errno = [0u8; 4];
    let mut err_pipe = File::from(exec_err_r);
    let n = read_full(&mut err_pipe, &mut errno);
    if n == errno.len() {
        let _ = waitpid(child, None);
        let e = Errno::from_raw(i32::from_ne_bytes(errno));
        let code = if e == Errno::ENOENT { 127 } else { 126 };
        return Err(Failure {
            message: format!("cannot run {:?} in the container: {e}", request.command[0]),
            code,
        });
    }
    Ok((child, master))
}

fn set_cloexec(fd: BorrowedFd<'_>) -> Result<(), Failure> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(drop)
        .map_err(|e| fail(format!("fcntl(F_SETFD, FD_CLOEXEC): {e}")))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    got
}

/// The forked child: returns the errno to report only when exec failed.
/// Async-signal-safe calls only.
fn child(
    prepared: &Prepared,
    hardening: &Hardening,
    run_as: RunAs,
    slave: Option<RawFd>,
    helper: &PidFd,
) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: plain syscalls on integers and on pointers into `prepared`,
    // which stays alive until execve replaces the process or we return.
    unsafe {
        if libc::setsid() < 0 {
            return errno();
        }
        if let Some(slave) = slave {
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return errno();
            }
            for target in 0..3 {
                if libc::dup2(slave, target) < 0 {
                    return errno();
                }
            }
        }
        // The task's usual umask, not the agent's 0077.
        libc::umask(crate::private_fs::TASK_UMASK);
        // Rust ignores SIGPIPE; exec keeps ignored signals ignored.
        for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                return errno();
            }
        }
    }
    // As the task was: rlimits and the bounding set (which needs the
    // capabilities a non-zero uid loses), then its user, then
    // no_new_privs below.
    let hardened = hardening
        .apply_rlimits_in_child()
        .and_then(|()| hardening.drop_bounding_set_in_child());
    if let Err(e) = hardened {
        return e.raw_os_error().unwrap_or(libc::EPERM);
    }
    let (uid, gid) = (run_as.uid, run_as.gid);
    // SAFETY: raw syscalls with integer arguments (a null list of length 0).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
        {
            return errno();
        }
        // After the uid change (which clears it): die with the helper,
        // so that a killed session leaves nothing behind.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return errno();
        }
    }
    // The helper may have died before the signal was armed (poll(2) only).
    if helper.exited() {
        return libc::ESRCH;
    }
    if let Err(e) = hardening.set_no_new_privs_in_child() {
        return e.raw_os_error().unwrap_or(libc::EPERM);
    }
    exec_prepared(prepared)
}

/// The last steps of [`child`]: descriptors closed on exec, the seccomp
/// filter, exec. Returns the errno when exec failed.
fn exec_prepared(prepared: &Prepared) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let mut argv: [*const libc::c_char; 256] = [std::ptr::null(); 256];
    let mut envp: [*const libc::c_char; 512] = [std::ptr::null(); 512];
    if prepared.argv.len() >= argv.len() || prepared.envp.len() >= envp.len() {
        return libc::E2BIG;
    }
    for (slot, a) in argv.iter_mut().zip(&prepared.argv) {
        *slot = a.as_ptr();
    }
    for (slot, e) in envp.iter_mut().zip(&prepared.envp) {
        *slot = e.as_ptr();
    }
    // Whatever descriptors the agent inherited from its own parent (and
    // passed on without close-on-exec) must not reach the container.
    // SAFETY: close_range(2) with integer arguments only.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        return errno();
    }
    // Last, as for the task: the command may do only what the task may.
    if let Some(filter) = &prepared.seccomp {
        if let Err(e) = filter.install_in_child() {
            return e.raw_os_error().unwrap_or(libc::EPERM);
        }
    }
    // SAFETY: NUL-terminated strings and NULL-terminated pointer arrays,
    // all alive for the call.
    unsafe { libc::execve(prepared.program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}

/// Finds `name` as the container sees it (we are in its mount namespace):
/// a path as is, a bare name through `PATH`.
fn resolve(name: &str, env: &BTreeMap<String, String>) -> Result<PathBuf, Failure> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if executable(&path) {
            Ok(path)
        } else if path.exists() {
            Err(Failure {
                message: format!("{name:?} is not an executable file in the container"),
                code: 126,
            })
        } else {
            Err(Failure {
                message: format!("command {name:?} not found in the container"),
                code: 127,
            })
        };
    }
    let search = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    search
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| Failure {
            message: format!("command {name:?} not found in the container (PATH={search})"),
            code: 127,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(path: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("PATH".to_owned(), path.to_owned())])
    }

    #[test]
    fn resolve_searches_path_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = dir.path().join("data");
        std::fs::write(&plain, "x").expect("write");
        let path = format!("/nonexistent:{}", dir.path().display());

        assert_eq!(resolve("tool", &env(&path)).ok(), Some(exe.clone()));
        let absolute = exe.to_str().expect("utf8");
        assert_eq!(resolve(absolute, &env("")).ok(), Some(exe.clone()));

        let missing = resolve("no-such-tool", &env(&path)).expect_err("refused");
        assert_eq!(missing.code, 127);
        assert!(missing.message.contains("no-such-tool") && missing.message.contains(&path));
        let not_exec = resolve(plain.to_str().expect("utf8"), &env(&path)).expect_err("refused");
        assert_eq!(not_exec.code, 126);
        // A relative PATH entry is never searched.
        assert!(resolve("tool", &env("relative/dir")).is_err());
    }

    #[test]
    fn report_lines_round_trip() {
        for report in [
            HelperReport::Exited { code: 3 },
            HelperReport::Signaled { signal: 9 },
            HelperReport::Failed {
                message: "command \"x\" not found".into(),
                code: 127,
            },
        ] {
            let line = serde_json::to_string(&report).expect("json");
            assert!(!line.contains('\n'));
            let back: HelperReport = serde_json::from_str(&line).expect("parse");
            assert_eq!(back, report);
        }
    }
}
