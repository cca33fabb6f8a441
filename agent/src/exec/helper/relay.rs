//! The helper's wait for the command: with a terminal, the copy between
//! the helper's stdin/stdout (pipes from the agent) and the terminal's
//! master side, and the resize messages from the control pipe.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{fail, Failure};
use crate::runtime::PidFd;

/// How long the terminal is still read after the command exited, for
/// output the kernel has not handed to the master side yet.
const TTY_DRAIN: Duration = Duration::from_millis(200);
/// Bytes relayed per read.
const CHUNK: usize = 32 * 1024;

/// Waits for the command to exit. With a terminal, copies stdin to it and
/// its output to stdout meanwhile, and applies resize messages from
/// `control`. End of file on `control` kills the command.
pub(super) fn wait_relaying(
    child: Pid,
    exited: &PidFd,
    control: &OwnedFd,
    master: Option<&OwnedFd>,
) -> Result<WaitStatus, Failure> {
    if let Some(m) = master {
        fcntl(m.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| fail(format!("fcntl(pty, O_NONBLOCK): {e}")))?;
    }
    let stdin = io::stdin();
    let stdin_fd = stdin.as_fd();
    let mut stdout = io::stdout();
    let mut buf = vec![0u8; CHUNK];
    // Input read from stdin not yet taken by the terminal.
    let mut pending: Vec<u8> = Vec::new();
    let mut stdin_open = master.is_some();
    let mut control_open = true;
    let mut control_buf: Vec<u8> = Vec::new();
    let mut master_open = master.is_some();
    let mut exit_status: Option<WaitStatus> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        if let Some(status) = exit_status {
            let done = !master_open || drain_until.is_some_and(|t| Instant::now() >= t);
            if done {
                return Ok(status);
            }
        }
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(4);
        let mut roles: Vec<u8> = Vec::with_capacity(4);
        if exit_status.is_none() {
            fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
            roles.push(b'x');
        }
        if control_open {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            roles.push(b'c');
        }
        if let Some(m) = master.filter(|_| master_open) {
            let mut ev = PollFlags::POLLIN;
            if !pending.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(m.as_fd(), ev));
            roles.push(b'm');
        }
        if stdin_open && pending.is_empty() && exit_status.is_none() {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
            roles.push(b'i');
        }
        let timeout = match drain_until {
            Some(t) => PollTimeout::try_from(t.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail(format!("poll: {e}"))),
        }
        let ready: Vec<(u8, PollFlags)> = fds
            .iter()
            .zip(&roles)
            .filter_map(|(f, r)| f.revents().filter(|e| !e.is_empty()).map(|e| (*r, e)))
            .collect();
        drop(fds);
        for (role, events) in ready {
            match role {
                b'x' => {
                    let status = loop {
                        match waitpid(child, None) {
                            Err(Errno::EINTR) => continue,
                            other => break other,
                        }
                    }
                    .map_err(|e| fail(format!("waitpid({child}): {e}")))?;
                    exit_status = Some(status);
                    drain_until = Some(Instant::now() + TTY_DRAIN);
                }
                b'c' => match nix::unistd::read(control, &mut buf) {
                    Ok(0) | Err(Errno::EBADF) => {
                        // The agent is gone or ended the session.
                        control_open = false;
                        let _ = exited.signal(Signal::SIGKILL);
                    }
                    Ok(n) => {
                        control_buf.extend_from_slice(&buf[..n]);
                        while let Some(end) = control_buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = control_buf.drain(..=end).collect();
                            if let Some(m) = master {
                                resize(m, &line);
                            }
                        }
                    }
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(e) => return Err(fail(format!("read(control): {e}"))),
                },
                b'i' => match nix::unistd::read(stdin_fd, &mut buf) {
                    Ok(0) => {
                        stdin_open = false;
                        // End of input on a terminal is its EOF character.
                        pending.push(4);
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => stdin_open = false,
                },
                b'm' => {
                    let Some(m) = master else { continue };
                    if events.contains(PollFlags::POLLOUT) && !pending.is_empty() {
                        match nix::unistd::write(m, &pending) {
                            Ok(n) => {
                                pending.drain(..n);
                            }
                            Err(Errno::EINTR | Errno::EAGAIN) => {}
                            Err(_) => pending.clear(),
                        }
                    }
                    if events
                        .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    {
                        match nix::unistd::read(m, &mut buf) {
                            Ok(0) => master_open = false,
                            Ok(n) => {
                                if stdout
                                    .write_all(&buf[..n])
                                    .and_then(|()| stdout.flush())
                                    .is_err()
                                {
                                    // Nobody reads the output any more.
                                    let _ = exited.signal(Signal::SIGKILL);
                                    master_open = false;
                                }
                                if exit_status.is_some() {
                                    drain_until = Some(Instant::now() + TTY_DRAIN);
                                }
                            }
                            Err(Errno::EINTR | Errno::EAGAIN) => {}
                            // EIO: every slave descriptor is closed.
                            Err(_) => master_open = false,
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Applies a `"<rows> <cols>"` resize message to the terminal.
fn resize(master: &OwnedFd, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(rows)), Some(Ok(cols))) = (words.next(), words.next()) else {
        return;
    };
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid here.
    unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSWINSZ,
            &size as *const libc::winsize,
        )
    };
}
