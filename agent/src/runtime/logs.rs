//! Task log files with size-based rotation, and the reader that follows
//! them across rotations.
//!
//! The supervisor copies the task's stdout and stderr from pipes into a
//! [`RotatingLog`] each: `stdout.log` grows up to
//! [`LogLimits::max_size_bytes`], then is renamed to `stdout.log.1` (which
//! moves to `.2`, and so on) and a new `stdout.log` is started; at most
//! [`LogLimits::max_files`] files exist, the current one included, and the
//! oldest is deleted. A file never exceeds the limit. Where the chunk of
//! output being written has a line end that fits, the file is cut there;
//! otherwise (a line longer than a file, or output that reached the pipe
//! mid-line) the line goes on in the next file: concatenating the files
//! oldest first always gives the stream back, byte for byte.
//!
//! [`LogReader`] is the other side (`drover logs`): it returns the rotated
//! files oldest first, then the current one, and, following, notices a
//! rotation by the path's inode changing, reads the old file to its end and
//! goes on with the files that came after it.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

/// [`LogLimits::max_size_bytes`] when a spec does not say: 10 MiB.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// [`LogLimits::max_files`] when a spec does not say.
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;
/// Smallest file size accepted: rotating more often than this only costs.
pub const MIN_LOG_MAX_SIZE: u64 = 4096;
/// How many rotated files a reader looks for at most.
const MAX_SCAN: u32 = 1000;

/// How large each of a task's log files may grow and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Size at which the current file is rotated, in bytes.
    #[serde(default = "default_max_size")]
    pub max_size_bytes: u64,
    /// Files kept per stream, the current one included (at least 1).
    #[serde(default = "default_max_files")]
    pub max_files: u32,
}

fn default_max_size() -> u64 {
    DEFAULT_LOG_MAX_SIZE
}

fn default_max_files() -> u32 {
    DEFAULT_LOG_MAX_FILES
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_size_bytes: DEFAULT_LOG_MAX_SIZE,
            max_files: DEFAULT_LOG_MAX_FILES,
        }
    }
}

impl LogLimits {
    /// Checks the limits; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_size_bytes < MIN_LOG_MAX_SIZE {
            return Err(format!(
                "logs.max_size_bytes {} must be at least {MIN_LOG_MAX_SIZE}",
                self.max_size_bytes
            ));
        }
        if self.max_files == 0 || self.max_files > MAX_SCAN {
            return Err(format!(
                "logs.max_files {} must be between 1 and {MAX_SCAN}",
                self.max_files
            ));
        }
        Ok(())
    }
}

/// `<path>.<n>`: the n-th most recent rotated file of `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// An append-only log file that rotates itself by size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
}

impl RotatingLog {
    /// Opens (or creates) `path` for appending; an existing file (a restart
    /// of the task) is continued.
    pub fn open(path: PathBuf, limits: LogLimits) -> io::Result<Self> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            limits,
            file,
            size,
        })
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data`, rotating first whenever it would not fit. Each
    /// chunk goes to the file in one `write`; nothing is buffered here, so
    /// a supervisor killed after this returns loses nothing.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let max = self.limits.max_size_bytes.max(MIN_LOG_MAX_SIZE);
        while !data.is_empty() {
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if data.len() <= room {
                self.append(data)?;
                return Ok(());
            }
            // Fill the file up to the last line end that fits; split a line
            // only when the file holds nothing else (a line longer than a
            // file) or has no room at all.
            let cut = match data[..room].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if self.size == 0 => room,
                None => 0,
            };
            if cut > 0 {
                self.append(&data[..cut])?;
                data = &data[cut..];
            }
            if !data.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// `path.(n-1)` is deleted, `path.k` becomes `path.(k+1)`, `path`
    /// becomes `path.1`, and a new empty `path` is opened.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_files.max(1);
        if keep == 1 {
            // No history kept: start the one file over.
            remove_if_exists(&self.path)?;
        } else {
            remove_if_exists(&rotated_path(&self.path, keep - 1))?;
            for n in (1..keep - 1).rev() {
                rename_if_exists(
                    &rotated_path(&self.path, n),
                    &rotated_path(&self.path, n + 1),
                )?;
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Task logs are the node's: mode 0600, whatever the umask.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::private_fs::PRIVATE_FILE_MODE)
        .open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How long the supervisor keeps copying after the task exited. When PID 1
/// of the task's PID namespace exits the kernel kills and reaps every other
/// process in it first, so the pipes normally reach end of file at once;
/// the bound covers a writer outside the namespace that inherited them.
pub const DRAIN_BOUND: Duration = Duration::from_secs(2);
/// Bytes copied per `read(2)`; also the supervisor's only buffer.
const PUMP_CHUNK: usize = 64 * 1024;

/// Copies the task's stdout and stderr pipes into their log files until
/// the task has exited and the pipes are drained. Single-threaded
/// `poll(2)`; no allocation per chunk.
pub struct LogPump {
    streams: Vec<(OwnedFd, RotatingLog)>,
    /// Called once, this long after [`LogPump::run`] starts, if the task
    /// still runs.
    idle: Option<(Duration, Box<dyn FnOnce()>)>,
}

impl std::fmt::Debug for LogPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPump")
            .field("streams", &self.streams)
            .field("idle_after", &self.idle.as_ref().map(|(after, _)| after))
            .finish()
    }
}

impl LogPump {
    /// Pumps each pipe read end into its log.
    pub fn new(streams: Vec<(OwnedFd, RotatingLog)>) -> Self {
        Self {
            streams,
            idle: None,
        }
    }

    /// Calls `hook` once, `after` the pump started, if the task still runs
    /// then (the supervisor gives back its setup memory: not worth it for
    /// a task that ends at once). An exit seen when the hook is due wins:
    /// the hook never runs once the pump knows the task has ended.
    pub fn on_idle(mut self, after: Duration, hook: impl FnOnce() + 'static) -> Self {
        self.idle = Some((after, Box::new(hook)));
        self
    }

    /// Runs until `exited` (a pidfd of the task) is readable and every pipe
    /// is at end of file, or [`DRAIN_BOUND`] after the exit. A failing log
    /// write is reported on `errors` once per file and the data dropped: the
    /// task must never block on a full pipe because its log cannot be
    /// written. Fails only when `poll` or `read` does.
    pub fn run(mut self, exited: &impl AsFd, errors: &mut dyn Write) -> Result<(), String> {
        let mut buf = vec![0u8; PUMP_CHUNK];
        let mut open: Vec<bool> = vec![true; self.streams.len()];
        let mut reported: Vec<bool> = vec![false; self.streams.len()];
        let mut drain_until: Option<Instant> = None;
        let mut idle = self
            .idle
            .take()
            .map(|(after, hook)| (Instant::now() + after, hook));
        loop {
            if !open.iter().any(|o| *o) && drain_until.is_some() {
                return Ok(());
            }
            let timeout = match (drain_until, &idle) {
                (None, Some((at, _))) => {
                    let left = at.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
                (None, None) => PollTimeout::NONE,
                (Some(until), _) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(());
                    }
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.streams.len() + 1);
            let mut which: Vec<usize> = Vec::with_capacity(self.streams.len());
            for (i, (fd, _)) in self.streams.iter().enumerate() {
                if open[i] {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    which.push(i);
                }
            }
            if drain_until.is_none() {
                fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll(task log pipes, pidfd): {e}")),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if drain_until.is_none() && ready.last().copied().unwrap_or(false) {
                drain_until = Some(Instant::now() + DRAIN_BOUND);
            }
            // After the poll, so that an exit it reported is known here.
            if drain_until.is_none() && idle.as_ref().is_some_and(|(at, _)| Instant::now() >= *at) {
                if let Some((_, hook)) = idle.take() {
                    hook();
                }
            }
            for (slot, &i) in which.iter().enumerate() {
                if !ready[slot] {
                    continue;
                }
                let (fd, log) = &mut self.streams[i];
                let n = match nix::unistd::read(&*fd, &mut buf) {
                    Ok(n) => n,
                    Err(Errno::EINTR | Errno::EAGAIN) => continue,
                    Err(e) => return Err(format!("read({}): {e}", log.path().display())),
                };
                if n == 0 {
                    open[i] = false;
                    continue;
                }
                if let Err(e) = log.write(&buf[..n]) {
                    if !reported[i] {
                        reported[i] = true;
                        let _ = writeln!(
                            errors,
                            "drover supervisor: writing {}: {e}; output dropped",
                            log.path().display()
                        );
                    }
                }
            }
        }
    }
}

/// Reads a task's log stream: rotated files oldest first, then the current
/// file, and (called again after returning 0) what is appended later,
/// across rotations.
///
/// Files are held open by descriptor, never re-opened by name later: a
/// rotation renames every file, so a name taken earlier may meanwhile
/// point at a newer file (and reading it would skip the one in between).
/// Each set of files is opened as a consistent snapshot: after opening,
/// every name must still hold the file opened from it, else the set is
/// opened again.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    /// The open file and its inode.
    file: Option<(File, u64)>,
    /// Files opened to read after `file`, oldest first.
    queue: VecDeque<(File, u64)>,
    /// Bytes read from the open file.
    pos: u64,
}

/// How often a snapshot is retried while rotations keep moving the files.
const SNAPSHOT_ATTEMPTS: u32 = 200;

impl LogReader {
    /// A reader of `path` starting with its oldest rotated file, or (with
    /// `rotated` false) with the current file only.
    pub fn open(path: &Path, rotated: bool) -> io::Result<Self> {
        let mut reader = Self {
            path: path.to_owned(),
            file: None,
            queue: VecDeque::new(),
            pos: 0,
        };
        reader.queue = reader.snapshot(|slots| {
            let mut paths: Vec<PathBuf> = if rotated {
                slots.iter().rev().map(|(_, p, _)| p.clone()).collect()
            } else {
                Vec::new()
            };
            paths.push(path.to_owned());
            Some((paths, None))
        })?;
        reader.open_next();
        Ok(reader)
    }

    /// Moves to the next queued file; false when there is none.
    fn open_next(&mut self) -> bool {
        match self.queue.pop_front() {
            Some(next) => {
                self.file = Some(next);
                self.pos = 0;
                true
            }
            None => false,
        }
    }

    /// The rotated files that exist now, `(n, path, inode)` by `n`
    /// ascending (newest first). A rotation renames `.k` to `.k+1` from the
    /// top down, so at most one slot is missing at a time: the scan stops
    /// at the second missing slot in a row.
    fn slots(&self) -> io::Result<Vec<(u32, PathBuf, u64)>> {
        let mut out = Vec::new();
        let mut missing = 0;
        for n in 1..=MAX_SCAN {
            let p = rotated_path(&self.path, n);
            match fs::metadata(&p) {
                Ok(m) => {
                    missing = 0;
                    out.push((n, p, m.ino()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing += 1;
                    if missing == 2 {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Opens the files `pick` names from the current slots (oldest first;
    /// `None` means "look again"), optionally with an anchor (a name that
    /// must still hold a given inode), as one consistent snapshot.
    #[allow(clippy::type_complexity)]
    fn snapshot(
        &self,
        pick: impl Fn(&[(u32, PathBuf, u64)]) -> Option<(Vec<PathBuf>, Option<(PathBuf, u64)>)>,
    ) -> io::Result<VecDeque<(File, u64)>> {
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let slots = self.slots()?;
            let Some((paths, anchor)) = pick(&slots) else {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            };
            if let Some(files) = open_unchanged(&paths, anchor.as_ref())? {
                return Ok(files);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(io::Error::other(format!(
            "{}: the log files kept rotating while being opened",
            self.path.display()
        )))
    }

    /// Reads into `buf`; 0 means everything written so far has been read
    /// (call again later to follow).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some((file, ino)) = self.file.as_mut() else {
                if self.open_next() {
                    continue;
                }
                // Nothing open (the current file was missing mid-rotation
                // when we last looked): start again from the current one.
                self.queue = self.snapshot(|_| Some((vec![self.path.clone()], None)))?;
                self.open_next();
                continue;
            };
            let ino = *ino;
            let n = file.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            if !self.queue.is_empty() {
                self.open_next();
                continue;
            }
            // At the end of what was the current file: has it been rotated?
            let current = match fs::metadata(&self.path) {
                Ok(m) => m,
                // Mid-rotation (renamed, new one not created yet).
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            if current.ino() == ino {
                if current.len() < self.pos {
                    // Truncated in place: start over.
                    file.seek(SeekFrom::Start(0))?;
                    self.pos = 0;
                    continue;
                }
                return Ok(0);
            }
            // Rotated: the writer no longer appends to our file, so one more
            // read to its end is complete; then go on with the files written
            // after it (normally just the new current one).
            let n = file.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.queue = self.successors(ino)?;
            self.file = None;
        }
    }

    /// The files newer than the one with inode `ino`, oldest first, the
    /// current one last, opened. When `ino` is gone (deleted beyond
    /// `max_files`), every rotated file is newer.
    fn successors(&self, ino: u64) -> io::Result<VecDeque<(File, u64)>> {
        self.snapshot(|slots| {
            let at = slots.iter().position(|(_, _, i)| *i == ino);
            let newer = &slots[..at.unwrap_or(slots.len())];
            let mut paths: Vec<PathBuf> = newer.iter().rev().map(|(_, p, _)| p.clone()).collect();
            paths.push(self.path.clone());
            // Our file must still sit where we found it, or the names in
            // between moved on.
            let anchor = at.map(|k| (slots[k].1.clone(), ino));
            Some((paths, anchor))
        })
    }
}

/// Opens `paths` in order and checks that each name (and `anchor`'s) still
/// holds the file opened from it; `None` when a rotation moved anything.
fn open_unchanged(
    paths: &[PathBuf],
    anchor: Option<&(PathBuf, u64)>,
) -> io::Result<Option<VecDeque<(File, u64)>>> {
    let mut files = VecDeque::new();
    for p in paths {
        match File::open(p) {
            Ok(f) => {
                let ino = f.metadata()?.ino();
                files.push_back((f, ino));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let still = |p: &Path, ino: u64| -> io::Result<bool> {
        match fs::metadata(p) {
            Ok(m) => Ok(m.ino() == ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    };
    for (p, (_, ino)) in paths.iter().zip(&files) {
        if !still(p, *ino)? {
            return Ok(None);
        }
    }
    if let Some((p, ino)) = anchor {
        if !still(p, *ino)? {
            return Ok(None);
        }
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: u64, files: u32) -> LogLimits {
        LogLimits {
            max_size_bytes: size,
            max_files: files,
        }
    }

    fn read_all(r: &mut LogReader) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn line(i: usize) -> String {
        format!("line {i:06} {}\n", "x".repeat(i % 37))
    }

    /// Runs a pump, with an idle hook due `after`, over one pipe that holds
    /// `hello\n` and is closed. With `exited_first` the task's exit (its
    /// exit descriptor readable) precedes the pump; otherwise the task
    /// runs until the hook ends it, so the hook runs before the exit by
    /// construction, not by a race of two sleeps. Returns how often the
    /// hook ran, how long after the pump started it first did, and what
    /// was logged.
    fn pump_with_idle_hook(after: Duration, exited_first: bool) -> (u32, Option<Duration>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let log = RotatingLog::open(path.clone(), limits(1 << 20, 2)).expect("open");
        let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
        nix::unistd::write(&out_w, b"hello\n").expect("write");
        drop(out_w);
        let (exit_r, exit_w) = nix::unistd::pipe().expect("pipe");
        if exited_first {
            nix::unistd::write(&exit_w, b"x").expect("write");
        }
        // Only when the hook never runs: ends the task so that the test
        // fails on its assertions instead of hanging.
        let (stop_watchdog, stopped) = std::sync::mpsc::channel::<()>();
        let watchdog_exit = exit_w.try_clone().expect("dup");
        let watchdog = std::thread::spawn(move || {
            let waited = stopped.recv_timeout(Duration::from_secs(60));
            if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                let _ = nix::unistd::write(&watchdog_exit, b"x");
            }
        });
        let calls = std::rc::Rc::new(std::cell::Cell::new((0u32, None)));
        let seen = calls.clone();
        let started = Instant::now();
        LogPump::new(vec![(out_r, log)])
            .on_idle(after, move || {
                seen.set((seen.get().0 + 1, Some(started.elapsed())));
                // The task exits once the hook has run.
                nix::unistd::write(&exit_w, b"x").expect("write");
            })
            .run(&exit_r, &mut io::sink())
            .expect("pump");
        drop(stop_watchdog);
        watchdog.join().expect("watchdog");
        let (count, at) = calls.get();
        (count, at, fs::read_to_string(&path).expect("read"))
    }

    #[test]
    fn the_idle_hook_runs_once_when_due_while_the_task_runs() {
        let after = Duration::from_millis(50);
        let (count, at, logged) = pump_with_idle_hook(after, false);
        assert_eq!((count, logged.as_str()), (1, "hello\n"));
        let at = at.expect("the hook ran");
        assert!(
            at >= after,
            "the hook ran {at:?} after the start, before {after:?}"
        );
    }

    #[test]
    fn the_idle_hook_does_not_run_for_a_task_that_ended_before_it_was_due() {
        // Due at once, but the exit is there when the pump first looks.
        let (count, _, logged) = pump_with_idle_hook(Duration::ZERO, true);
        assert_eq!((count, logged.as_str()), (0, "hello\n"));
    }

    #[test]
    fn rotates_at_line_ends_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let mut log = RotatingLog::open(path.clone(), limits(4096, 3)).expect("open");
        let mut all = String::new();
        for i in 0..2000 {
            let l = line(i);
            log.write(l.as_bytes()).expect("write");
            all.push_str(&l);
        }
        assert!(rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        let mut kept = String::new();
        for p in [rotated_path(&path, 2), rotated_path(&path, 1), path.clone()] {
            let text = fs::read_to_string(&p).expect("read");
            assert!(text.len() as u64 <= 4096, "{} too large", p.display());
            assert!(
                text.ends_with('\n') || p == path,
                "{} split a line",
                p.display()
            );
            kept.push_str(&text);
        }
        assert!(
            all.ends_with(&kept),
            "kept files are not the tail of what was written"
        );
        let mut reader = LogReader::open(&path, true).expect("reader");
        assert_eq!(read_all(&mut reader), kept.as_bytes());
    }

    #[test]
    fn long_line_is_split_to_bound_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let mut log = RotatingLog::open(path.clone(), limits(4096, 2)).expect("open");
        log.write(b"short\n").expect("write");
        log.write(&[b'y'; 5000]).expect("write");
        assert_eq!(fs::read(rotated_path(&path, 1)).expect("read").len(), 4096);
        // "short\n" went to a file of its own, deleted with max_files 2.
        assert_eq!(fs::read(&path).expect("read").len(), 5000 - 4096);
    }

    #[test]
    fn follower_crosses_rotations_without_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let mut log = RotatingLog::open(path.clone(), limits(4096, 5)).expect("open");
        let mut reader = LogReader::open(&path, false).expect("reader");
        let mut written = String::new();
        let mut got = Vec::new();
        for round in 0..30 {
            // Up to two rotations between two reads.
            for i in 0..(round * 13 % 150) {
                let l = line(round * 1000 + i);
                log.write(l.as_bytes()).expect("write");
                written.push_str(&l);
            }
            got.extend(read_all(&mut reader));
        }
        assert_eq!(String::from_utf8(got).expect("utf8"), written);
    }

    #[test]
    fn a_rotation_while_reading_old_files_skips_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let mut log = RotatingLog::open(path.clone(), limits(4096, 4)).expect("open");
        let mut written = String::new();
        let mut i = 0;
        let mut write_bytes = |log: &mut RotatingLog, n: usize, written: &mut String| {
            let mut done = 0;
            while done < n {
                let l = line(i);
                i += 1;
                log.write(l.as_bytes()).expect("write");
                done += l.len();
                written.push_str(&l);
            }
        };
        // Three rotated files and a current one.
        write_bytes(&mut log, 3 * 4096 + 100, &mut written);
        let mut reader = LogReader::open(&path, true).expect("reader");
        let mut got = Vec::new();
        let mut buf = [0u8; 100];
        let n = reader.read(&mut buf).expect("read");
        got.extend_from_slice(&buf[..n]);
        // One rotation while the reader is in the oldest file: every name
        // moves up by one and the oldest file is deleted (max 4 files).
        write_bytes(&mut log, 4096, &mut written);
        got.extend(read_all(&mut reader));
        let got = String::from_utf8(got).expect("utf8");
        assert!(
            written.ends_with(&got),
            "the reader skipped or repeated lines"
        );
        assert!(got.len() >= 3 * 4096, "only {} bytes read", got.len());
    }
}
