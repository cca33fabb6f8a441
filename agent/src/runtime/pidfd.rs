//! A minimal pidfd wrapper: signals that cannot hit a recycled pid.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// An open pidfd (`pidfd_open(2)`), referring to one process for its lifetime.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl AsFd for PidFd {
    /// The pidfd, e.g. for `poll(2)`: readable once the process has exited.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PidFd {
    /// Opens a pidfd for `pid`; `Ok(None)` when no such process exists.
    pub fn open(pid: i32) -> Result<Option<Self>, Errno> {
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new
        // file descriptor or -1; no memory is shared with the kernel.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return match Errno::last() {
                Errno::ESRCH => Ok(None),
                e => Err(e),
            };
        }
        let raw = i32::try_from(ret).map_err(|_| Errno::EBADF)?;
        // SAFETY: `raw` is a freshly returned descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Some(Self { fd, pid }))
    }

    /// The pid this pidfd was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig`; a process that has already exited is not an error.
    pub fn signal(&self, sig: Signal) -> Result<(), Errno> {
        // SAFETY: the fd is a valid pidfd owned by `self`; a null siginfo
        // asks the kernel to fill in the same info kill(2) would.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            match Errno::last() {
                Errno::ESRCH => Ok(()),
                e => Err(e),
            }
        } else {
            Ok(())
        }
    }

    /// Whether the process has exited (a pidfd becomes readable then).
    pub fn exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd on our stack, count 1, no timeout.
        let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
        ret > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }

    /// Waits up to `timeout` for the process to exit (a pidfd becomes
    /// readable then, zombie or reaped); returns whether it has. Falls back
    /// to a single poll when the fd cannot be registered with the reactor.
    pub async fn wait_exited(&self, timeout: Duration) -> bool {
        if self.exited() {
            return true;
        }
        // SAFETY: the raw fd belongs to `self.fd`, which stays open and
        // unchanged for as long as `&self` is borrowed, i.e. longer than the
        // `AsyncFd`, which lives only in this call.
        let registered =
            unsafe { AsyncFd::register_with_interest(self.fd.as_raw_fd(), Interest::READABLE) };
        let Ok(async_fd) = registered else {
            tokio::time::sleep(timeout).await;
            return self.exited();
        };
        match tokio::time::timeout(timeout, async_fd.readable()).await {
            Ok(Ok(_guard)) => true,
            _ => self.exited(),
        }
    }
}
