//! A minimal init as PID 1 of the task's PID namespace (as `tini` or
//! `docker run --init`), unless the task says `init = false`.
//!
//! The supervisor's forked child, once it has taken every step before the
//! task's `exec` (namespaces, root, identity, seccomp), forks once more:
//! the grandchild execs the task; the child stays as PID 1 and
//!
//! - forwards every signal it gets (SIGTERM from `drover job stop`,
//!   SIGINT, SIGHUP, SIGUSR1, ...) to the task, which, unlike a PID 1,
//!   gets the default action of signals it does not handle (a
//!   `/bin/sh -c` task ends on SIGTERM at once instead of at the kill
//!   timeout);
//! - reaps every process re-parented to it (orphans of the task's
//!   children), so that no zombie accumulates;
//! - when the task ends, writes the task's raw wait status to the status
//!   pipe (the supervisor records the task's own exit code or signal) and
//!   exits with the task's code, or 128 + the signal that killed it.
//!   The kernel then kills whatever is left in the namespace.
//!
//! Everything it runs is system calls on memory prepared before the fork:
//! it allocates nothing.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// The name the init shows in `ps` (its `comm` and its command line).
const INIT_NAME: &[u8] = b"drover-init\0";

/// What the init needs, prepared by the supervisor before the fork.
pub(super) struct InitSteps {
    /// Write end of the status pipe (the supervisor keeps the read end).
    status_fd: RawFd,
    /// The supervisor's argument area (`/proc/self/stat` fields 48 and
    /// 49), overwritten in the init so that `/proc/1/cmdline` shows
    /// `drover-init` and not the supervisor's host paths.
    args: Option<(usize, usize)>,
}

/// The supervisor's side: the read end of the status pipe.
pub(super) struct StatusPipe {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl StatusPipe {
    /// A pipe for the init to report the task's wait status on; both ends
    /// close on exec (the task never holds it).
    pub(super) fn new() -> io::Result<StatusPipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(StatusPipe {
            read,
            write: Some(write),
        })
    }

    /// The steps the forked child takes, with the pipe's write end.
    pub(super) fn steps(&self) -> InitSteps {
        InitSteps {
            status_fd: self.write.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            args: own_arg_area(),
        }
    }

    /// Closes the supervisor's copy of the write end, once the child is
    /// spawned: the read end then sees EOF when the init exits.
    pub(super) fn close_write(&mut self) {
        self.write = None;
    }

    /// The task's wait status that the init reported, read once the init
    /// has exited; `None` when it reported none (it was SIGKILLed, or the
    /// task never started).
    pub(super) fn task_status(&self, pid: i32) -> Option<WaitStatus> {
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&self.read, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        (got == buf.len()).then(|| decode_status(Pid::from_raw(pid), i32::from_ne_bytes(buf)))?
    }
}

/// A raw wait status as a [`WaitStatus`] of `pid`.
fn decode_status(pid: Pid, status: i32) -> Option<WaitStatus> {
    if libc::WIFEXITED(status) {
        Some(WaitStatus::Exited(pid, libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        let sig = Signal::try_from(libc::WTERMSIG(status)).ok()?;
        Some(WaitStatus::Signaled(pid, sig, libc::WCOREDUMP(status)))
    } else {
        None
    }
}

/// The exit code of an init whose task ended with raw wait `status`: its
/// code, or 128 + the signal that killed it (as a shell reports it).
fn exit_code_of(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// `[arg_start, arg_end)` of this process, from `/proc/self/stat`.
fn own_arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is rest[0]: field N is rest[N - 3].
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (end > start).then_some((start, end))
}

/// The signals the init waits for: every one but those it cannot catch
/// (SIGKILL, SIGSTOP) and those the kernel raises for a fault of its own.
fn waited_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset and sigdelset only write
    // into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
        ] {
            libc::sigdelset(&mut set, sig);
        }
        set
    }
}

impl InitSteps {
    /// In the supervisor's forked child, as its last step before `exec`:
    /// forks; returns `Ok` in the grandchild, which goes on to exec the
    /// task; the child becomes the init and never returns.
    ///
    /// # Safety
    ///
    /// Only in a forked child of a single-threaded process (the
    /// supervisor), before `exec`: it forks, and the init overwrites this
    /// process's argument area.
    pub(super) unsafe fn fork_in_child(&self) -> io::Result<()> {
        let set = waited_signals();
        // SAFETY: zeroed sigset_t is valid; sigprocmask writes `old`.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // Blocked before the fork: no signal or child exit is missed
        // between the fork and the first wait.
        // SAFETY: both sets are valid for the call.
        if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: single-threaded (see the contract): the child has all it
        // needs, and both sides only make system calls.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // The task: the signal mask it had, then exec.
            // SAFETY: `old` is the valid mask saved above.
            if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(());
        }
        // SAFETY: the contract: this is the init, a process of its own.
        unsafe { self.become_init(pid, &set) }
    }

    /// The init's life: named, holding no descriptor but the task's
    /// stdio and the status pipe, waiting for signals until the task ends.
    ///
    /// # Safety
    ///
    /// As [`InitSteps::fork_in_child`], in the init only.
    unsafe fn become_init(&self, task: libc::pid_t, set: &libc::sigset_t) -> ! {
        // The standard library's exec-error pipe and anything else: the
        // supervisor's spawn returns once the task has exec'd.
        let keep = self.status_fd;
        // SAFETY: close_range only closes descriptors of this process.
        unsafe {
            if keep > 3 {
                libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
            }
            if keep >= 3 {
                libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
            } else {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            libc::prctl(libc::PR_SET_NAME, INIT_NAME.as_ptr(), 0, 0, 0);
        }
        if let Some((start, end)) = self.args {
            // SAFETY: [start, end) is this process's own argument area
            // (its initial stack, mapped and writable), which nothing of
            // ours reads any more.
            unsafe {
                let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
                area.fill(0);
                let n = INIT_NAME.len().min(area.len());
                area[..n].copy_from_slice(&INIT_NAME[..n]);
                // A last byte that is not NUL tells the kernel the area
                // holds a title: /proc/<pid>/cmdline ends at its first NUL.
                if let Some(last) = area.last_mut().filter(|_| end - start > n) {
                    *last = b' ';
                }
            }
        }
        loop {
            // SAFETY: `set` is valid; the siginfo is not needed.
            let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                // SAFETY: kill only sends a signal; a task that has exited
                // and is not reaped yet is a zombie, which ignores it.
                unsafe { libc::kill(task, sig) };
                continue;
            }
            // SAFETY: as for the other calls: plain system calls.
            unsafe { self.reap(task) };
        }
    }

    /// Reaps every child that has exited; when the task is among them,
    /// reports its status and exits.
    ///
    /// # Safety
    ///
    /// In the init only.
    unsafe fn reap(&self, task: libc::pid_t) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == task {
                let bytes = status.to_ne_bytes();
                // SAFETY: write from a live buffer; _exit ends the init
                // without running anything of the supervisor's.
                unsafe {
                    libc::write(self.status_fd, bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(exit_code_of(status));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_exits_with_the_code_or_128_plus_the_signal() {
        assert_eq!(exit_code_of(3 << 8), 3);
        assert_eq!(exit_code_of(0), 0);
        assert_eq!(exit_code_of(libc::SIGTERM), 143);
        assert_eq!(exit_code_of(libc::SIGKILL), 137);
    }

    #[test]
    fn the_reported_status_decodes_as_the_tasks_own() {
        let pid = Pid::from_raw(7);
        assert_eq!(
            decode_status(pid, libc::SIGTERM),
            Some(WaitStatus::Signaled(pid, Signal::SIGTERM, false))
        );
        assert_eq!(
            decode_status(pid, 42 << 8),
            Some(WaitStatus::Exited(pid, 42))
        );
    }

    #[test]
    fn the_argument_area_is_found() {
        let (start, end) = own_arg_area().unwrap_or((0, 0));
        assert!(end > start, "no argument area in /proc/self/stat");
    }

    #[test]
    fn faults_and_uncatchable_signals_are_not_waited_for() {
        let set = waited_signals();
        // SAFETY: a valid set.
        let member = |s| unsafe { libc::sigismember(&set, s) } == 1;
        assert!(member(libc::SIGTERM) && member(libc::SIGCHLD) && member(libc::SIGHUP));
        assert!(!member(libc::SIGKILL) && !member(libc::SIGSEGV));
    }
}
