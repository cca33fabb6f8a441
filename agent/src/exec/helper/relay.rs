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
    let mut relay = Relay {
        child,
        exited,
        control,
        master,
        stdin: io::stdin(),
        stdout: io::stdout(),
        buf: vec![0u8; CHUNK],
        pending: Vec::new(),
        stdin_open: master.is_some(),
        control_open: true,
        control_buf: Vec::new(),
        master_open: master.is_some(),
        exit_status: None,
        drain_until: None,
    };
    loop {
        if let Some(status) = relay.exit_status {
            let done = !relay.master_open || relay.drain_until.is_some_and(|t| Instant::now() >= t);
            if done {
                return Ok(status);
            }
        }
        for (role, events) in relay.wait()? {
            match role {
                Role::Exited => relay.on_exit()?,
                Role::Control => relay.on_control()?,
                Role::Stdin => relay.on_stdin(),
                Role::Master => relay.on_master(events),
            }
        }
    }
}

/// What a polled descriptor is.
#[derive(Debug, Clone, Copy)]
enum Role {
    Exited,
    Control,
    Master,
    Stdin,
}

/// The relay's descriptors and what is in flight between them.
struct Relay<'a> {
    child: Pid,
    exited: &'a PidFd,
    control: &'a OwnedFd,
    master: Option<&'a OwnedFd>,
    stdin: io::Stdin,
    stdout: io::Stdout,
    buf: Vec<u8>,
    /// Input read from stdin not yet taken by the terminal.
    pending: Vec<u8>,
    stdin_open: bool,
    control_open: bool,
    control_buf: Vec<u8>,
    master_open: bool,
    exit_status: Option<WaitStatus>,
    drain_until: Option<Instant>,
}

impl Relay<'_> {
    /// Polls what is open; the descriptors that are ready (none after an
    /// interruption or the drain timeout).
    fn wait(&self) -> Result<Vec<(Role, PollFlags)>, Failure> {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(4);
        let mut roles = Vec::with_capacity(4);
        if self.exit_status.is_none() {
            fds.push(PollFd::new(self.exited.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Exited);
        }
        if self.control_open {
            fds.push(PollFd::new(self.control.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Control);
        }
        if let Some(m) = self.master.filter(|_| self.master_open) {
            let mut ev = PollFlags::POLLIN;
            if !self.pending.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(m.as_fd(), ev));
            roles.push(Role::Master);
        }
        if self.stdin_open && self.pending.is_empty() && self.exit_status.is_none() {
            fds.push(PollFd::new(self.stdin.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Stdin);
        }
        let timeout = match self.drain_until {
            Some(t) => PollTimeout::try_from(t.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(fail(format!("poll: {e}"))),
        }
        Ok(fds
            .iter()
            .zip(roles)
            .filter_map(|(f, r)| f.revents().filter(|e| !e.is_empty()).map(|e| (r, e)))
            .collect())
    }

    /// The command exited: reap it, then drain the terminal a little.
    fn on_exit(&mut self) -> Result<(), Failure> {
        let child = self.child;
        let status = loop {
            match waitpid(child, None) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        }
        .map_err(|e| fail(format!("waitpid({child}): {e}")))?;
        self.exit_status = Some(status);
        self.drain_until = Some(Instant::now() + TTY_DRAIN);
        Ok(())
    }

    /// Resize messages; end of file kills the command.
    fn on_control(&mut self) -> Result<(), Failure> {
        match nix::unistd::read(self.control, &mut self.buf) {
            Ok(0) | Err(Errno::EBADF) => {
                // The agent is gone or ended the session.
                self.control_open = false;
                let _ = self.exited.signal(Signal::SIGKILL);
            }
            Ok(n) => {
                self.control_buf.extend_from_slice(&self.buf[..n]);
                while let Some(end) = self.control_buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.control_buf.drain(..=end).collect();
                    if let Some(m) = self.master {
                        resize(m, &line);
                    }
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(fail(format!("read(control): {e}"))),
        }
        Ok(())
    }

    /// Input for the terminal.
    fn on_stdin(&mut self) {
        match nix::unistd::read(self.stdin.as_fd(), &mut self.buf) {
            Ok(0) => {
                self.stdin_open = false;
                // End of input on a terminal is its EOF character.
                self.pending.push(4);
            }
            Ok(n) => self.pending.extend_from_slice(&self.buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.stdin_open = false,
        }
    }

    /// The terminal: pending input to it, its output to stdout.
    fn on_master(&mut self, events: PollFlags) {
        let Some(m) = self.master else { return };
        if events.contains(PollFlags::POLLOUT) && !self.pending.is_empty() {
            match nix::unistd::write(m, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => self.pending.clear(),
            }
        }
        if !events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        match nix::unistd::read(m, &mut self.buf) {
            Ok(0) => self.master_open = false,
            Ok(n) => {
                if self
                    .stdout
                    .write_all(&self.buf[..n])
                    .and_then(|()| self.stdout.flush())
                    .is_err()
                {
                    // Nobody reads the output any more.
                    let _ = self.exited.signal(Signal::SIGKILL);
                    self.master_open = false;
                }
                if self.exit_status.is_some() {
                    self.drain_until = Some(Instant::now() + TTY_DRAIN);
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            // EIO: every slave descriptor is closed.
            Err(_) => self.master_open = false,
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
