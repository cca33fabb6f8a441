//! The task's command: program, arguments, environment, stdio, and the
//! steps its forked child takes before exec (cgroup, namespaces, root,
//! `/proc`, hostname, rlimits, identity, capabilities, seccomp).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::init::InitSteps;
use super::{fail, Failure};
use crate::runtime::identity::Identity;
use crate::runtime::limits::Hardening;
use crate::runtime::mask::ProcMasks;
use crate::runtime::rootfs::PreparedRoot;
use crate::runtime::{TaskSpec, DEFAULT_PATH};
use crate::seccomp::Filter;

pub(super) fn cstring(what: &str, bytes: &[u8]) -> Result<CString, Failure> {
    CString::new(bytes).map_err(|_| fail(format!("{what} contains a NUL byte")))
}

/// Builds the task command; everything the child side needs is allocated
/// here, because the `pre_exec` closure may only make async-signal-safe calls.
pub(super) fn build_command(
    spec: &TaskSpec,
    cgroup_procs: &[OwnedFd],
    hardening: Hardening,
    identity: Identity,
    root: Option<&(PreparedRoot, PathBuf)>,
    init: Option<InitSteps>,
) -> Result<Command, Failure> {
    let mut command = base_command(spec, root)?;
    // Formatted first: stderr is unbuffered, and `writeln!` on it makes a
    // write(2) per formatted piece (about 30 here).
    let starting = format!(
        "drover supervisor: starting {:?} as {:?}, uid {} gid {}, user namespace {:?}\n",
        spec.command, spec.hostname, identity.run_as.uid, identity.run_as.gid, spec.user_namespace
    );
    let _ = io::stderr().write_all(starting.as_bytes());
    let child = ChildSteps {
        proc_src: cstring("source", b"proc")?,
        proc_dir: cstring("path", b"/proc")?,
        hostname: spec.hostname.clone().into_bytes(),
        procs: cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect(),
        masks: ProcMasks::new(),
        root: root.map(|(prepared, _)| prepared.clone()),
        hardening,
        identity,
        seccomp: spec
            .seccomp
            .filter()
            .map_err(|e| fail(format!("seccomp: {e}")))?,
        init,
    };
    child.install(&mut command);
    Ok(command)
}

/// Program, arguments, working directory, environment and stdio.
fn base_command(
    spec: &TaskSpec,
    root: Option<&(PreparedRoot, PathBuf)>,
) -> Result<Command, Failure> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| fail("empty command".to_owned()))?;
    // With a root filesystem: the path resolved inside it, argv[0] as given.
    let mut command = match root {
        Some((_, resolved)) => {
            let mut command = Command::new(resolved);
            command.arg0(program);
            command
        }
        None => Command::new(program),
    };
    // Without a rootfs, the working directory is entered (on the host's
    // mount tree) before the child's steps; with one, after the pivot.
    let cwd = match (root, &spec.workdir) {
        (None, Some(workdir)) => workdir.clone(),
        _ => PathBuf::from("/"),
    };
    // Pipes that the supervisor copies into rotating log files.
    command
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !spec.env.contains_key("PATH") {
        command.env("PATH", DEFAULT_PATH);
    }
    Ok(command)
}

/// What the forked child does before exec, all of it prepared before the
/// fork.
struct ChildSteps {
    proc_src: CString,
    proc_dir: CString,
    hostname: Vec<u8>,
    procs: Vec<RawFd>,
    masks: ProcMasks,
    root: Option<PreparedRoot>,
    hardening: Hardening,
    identity: Identity,
    /// `None`: unconfined.
    seccomp: Option<Filter>,
    /// `None`: the task itself is PID 1 (`init = false`).
    init: Option<InitSteps>,
}

impl ChildSteps {
    fn install(self, command: &mut Command) {
        let ChildSteps {
            proc_src,
            proc_dir,
            hostname,
            procs,
            masks,
            root,
            hardening,
            identity,
            seccomp,
            init,
        } = self;
        // SAFETY: the closure runs in the forked child before exec. It only calls
        // async-signal-safe syscalls (write, sigaction, umask, unshare, chdir,
        // pivot_root, umount2, mount, stat, sethostname, setsid, setrlimit, prctl,
        // close_range, seccomp, and raw setgroups, setns, setresgid, setresuid) on
        // memory prepared before the fork (the closure owns its copy of the
        // prepared root's strings), and allocates nothing: errors are reported
        // through `io::Error::last_os_error`, which does not allocate. The
        // cgroup descriptors stay open in the supervisor until after the spawn.
        // With an init, the child forks once more as its last step (the
        // supervisor is single-threaded, the contract of `fork_in_child`).
        unsafe {
            command.pre_exec(move || {
                // First, so that everything below is already charged to, and
                // limited by, the task's cgroups. "0" means the writer itself:
                // this forked child, whose only thread it is (see
                // `Cgroups::join_files`).
                for &fd in &procs {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // Now that it is in its cgroups: they become the root of its
                // cgroup namespace (`/proc/self/cgroup` shows `/`).
                if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                    return Err(io::Error::last_os_error());
                }
                for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE] {
                    if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                        return Err(io::Error::last_os_error());
                    }
                }
                // The task gets the usual umask, not the supervisor's 0077.
                libc::umask(crate::private_fs::TASK_UMASK);
                // The supervisor made `/` private and prepared the root.
                if let Some(root) = &root {
                    root.enter_in_child()?;
                }
                // We are PID 1 of the new PID namespace: a fresh procfs shows it.
                if libc::mount(
                    proc_src.as_ptr(),
                    proc_dir.as_ptr(),
                    proc_src.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // Kernel internals hidden, kernel knobs read-only.
                masks.apply_in_child()?;
                if libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                hardening.apply_rlimits_in_child()?;
                // After the mounts and sethostname, which need CAP_SYS_ADMIN
                // in the host's user namespace: groups cleared, then into the
                // task's user namespace (full capabilities there, none over
                // the namespaces made above), the gid, the bounding set
                // (reset to full by the namespace change; dropping it needs
                // CAP_SETPCAP, which a non-zero uid loses), the uid, and
                // no_new_privs last.
                identity.enter_in_child()?;
                identity.set_gid_in_child()?;
                hardening.drop_bounding_set_in_child()?;
                identity.set_uid_in_child()?;
                // Whatever descriptors the supervisor inherited without
                // close-on-exec (from the agent, or from whoever started the
                // agent) must not reach the task: only 0, 1 and 2 survive exec.
                if libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                hardening.set_no_new_privs_in_child()?;
                confine_and_fork_in_child(seccomp.as_ref(), init.as_ref())
            });
        }
    }
}

/// The forked child's last steps: the seccomp filter (from here on only
/// what the task may do, and the exec, which the filter allows), then,
/// with an init, the fork that leaves the init as PID 1 (confined like the
/// task); only the task returns, to exec.
///
/// # Safety
///
/// In the supervisor's forked child before exec (see
/// [`InitSteps::fork_in_child`]).
unsafe fn confine_and_fork_in_child(
    seccomp: Option<&Filter>,
    init: Option<&InitSteps>,
) -> io::Result<()> {
    if let Some(filter) = seccomp {
        filter.install_in_child()?;
    }
    match init {
        // SAFETY: the contract above is `fork_in_child`'s.
        Some(init) => unsafe { init.fork_in_child() },
        None => Ok(()),
    }
}
