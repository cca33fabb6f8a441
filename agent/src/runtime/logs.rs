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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
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

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
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
#[derive(Debug)]
pub struct LogPump {
    streams: Vec<(OwnedFd, RotatingLog)>,
}

impl LogPump {
    /// Pumps each pipe read end into its log.
    pub fn new(streams: Vec<(OwnedFd, RotatingLog)>) -> Self {
        Self { streams }
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
        loop {
            if !open.iter().any(|o| *o) && drain_until.is_some() {
                return Ok(());
            }
            let timeout = match drain_until {
                None => PollTimeout::NONE,
                Some(until) => {
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
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    /// The open file and its inode.
    file: Option<(File, u64)>,
    /// Files still to read before `path`, oldest first.
    queue: Vec<PathBuf>,
    /// Bytes read from the open file.
    pos: u64,
}

impl LogReader {
    /// A reader of `path` starting with its oldest rotated file, or (with
    /// `rotated` false) with the current file only.
    pub fn open(path: &Path, rotated: bool) -> io::Result<Self> {
        let mut queue = Vec::new();
        if rotated {
            let mut n = 1;
            while n <= MAX_SCAN && rotated_path(path, n).exists() {
                n += 1;
            }
            queue.extend((1..n).rev().map(|k| rotated_path(path, k)));
        }
        let mut reader = Self {
            path: path.to_owned(),
            file: None,
            queue,
            pos: 0,
        };
        reader.open_next()?;
        Ok(reader)
    }

    /// Opens the next queued file, or the current one; a queued file that
    /// rotated away meanwhile is skipped.
    fn open_next(&mut self) -> io::Result<()> {
        while !self.queue.is_empty() {
            let next = self.queue.remove(0);
            match File::open(&next) {
                Ok(f) => {
                    let ino = f.metadata()?.ino();
                    self.file = Some((f, ino));
                    self.pos = 0;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        let f = File::open(&self.path)?;
        let ino = f.metadata()?.ino();
        self.file = Some((f, ino));
        self.pos = 0;
        Ok(())
    }

    /// Reads into `buf`; 0 means everything written so far has been read
    /// (call again later to follow).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some((file, ino)) = self.file.as_mut() else {
                self.open_next()?;
                continue;
            };
            let ino = *ino;
            let n = file.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            if !self.queue.is_empty() {
                self.open_next()?;
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
            self.queue = self.successors(ino);
            self.file = None;
        }
    }

    /// The rotated files newer than the one with inode `ino`, oldest
    /// first. When `ino` is gone (deleted beyond `max_files`), every
    /// rotated file is newer.
    fn successors(&self, ino: u64) -> Vec<PathBuf> {
        let mut newer = Vec::new();
        for n in 1..=MAX_SCAN {
            let p = rotated_path(&self.path, n);
            match fs::metadata(&p) {
                Ok(m) if m.ino() == ino => break,
                Ok(_) => newer.push(p),
                Err(_) => break,
            }
        }
        newer.reverse();
        newer
    }
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
}
