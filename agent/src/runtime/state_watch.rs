//! Learning of task state changes as they happen: an inotify watch on each
//! task directory wakes the agent when a supervisor replaces `state.json`
//! (it only ever does so by a rename into the directory, see `files`).
//!
//! The watch only says *when* to read: the states themselves are still read
//! from `state.json` by the agent's poll, which stays as a fallback (an
//! inotify instance that cannot be created, a watch limit reached, a change
//! between a directory's creation and its watch). The directories watched
//! are those on disk at each [`StateWatch::sync`], so tasks adopted after an
//! agent restart are watched like the ones it started, and a restarted
//! supervisor writes into the same directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::files::STATE_FILE;

/// The inotify instance, as tokio's reactor wants it.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches task directories for a new `state.json`.
pub struct StateWatch {
    /// `None` when inotify is unavailable: [`StateWatch::changed`] never
    /// returns and the agent relies on its poll.
    fd: Option<AsyncFd<InotifyFd>>,
    /// The directories watched, by path.
    watched: HashMap<PathBuf, WatchDescriptor>,
}

impl Default for StateWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl StateWatch {
    /// A watch on no directory yet. Must be created inside a tokio runtime;
    /// when inotify cannot be set up the reason is logged and the watch
    /// never fires.
    pub fn new() -> StateWatch {
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| e.to_string())
            .and_then(|i| {
                // SAFETY: the descriptor is owned by the `Inotify` that the
                // `AsyncFd` takes ownership of, so it stays open (and is not
                // reused) for as long as it is registered.
                unsafe { AsyncFd::register_with_interest(InotifyFd(i), Interest::READABLE) }
                    .map_err(|e| e.to_string())
            });
        let fd = match fd {
            Ok(fd) => Some(fd),
            Err(error) => {
                tracing::warn!(%error, "inotify unavailable: task states are only polled");
                None
            }
        };
        StateWatch {
            fd,
            watched: HashMap::new(),
        }
    }

    /// Whether changes are watched at all (inotify was set up).
    pub fn is_active(&self) -> bool {
        self.fd.is_some()
    }

    /// Watches exactly `dirs` (task directories): adds the new ones, drops
    /// those no longer listed. A directory that cannot be watched is logged
    /// and left to the poll.
    pub fn sync(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let Some(fd) = &self.fd else { return };
        let inotify = &fd.get_ref().0;
        let mut keep: HashMap<PathBuf, WatchDescriptor> = HashMap::new();
        for dir in dirs {
            if let Some(wd) = self.watched.remove(&dir) {
                keep.insert(dir, wd);
                continue;
            }
            // IN_MOVED_TO: the supervisor's rename of its temp file;
            // IN_CLOSE_WRITE: a state written in place (by older writers).
            let flags = AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_ONLYDIR;
            match inotify.add_watch(&dir, flags) {
                Ok(wd) => {
                    keep.insert(dir, wd);
                }
                // Removed meanwhile: nothing to watch.
                Err(Errno::ENOENT) => {}
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch task directory; its state is polled");
                }
            }
        }
        for (dir, wd) in self.watched.drain() {
            // EINVAL: the kernel dropped the watch with the directory.
            if let Err(error) = inotify.rm_watch(wd) {
                if error != Errno::EINVAL {
                    tracing::debug!(dir = %dir.display(), %error, "inotify rm_watch");
                }
            }
        }
        self.watched = keep;
    }

    /// The number of directories watched.
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    /// Whether no directory is watched.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Waits until some watched task's `state.json` was replaced since the
    /// last call (all such events pending are consumed at once). Never
    /// returns when inotify is unavailable. Cancel-safe.
    pub async fn changed(&self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return std::future::pending().await;
            };
            let mut state_changed = false;
            loop {
                match guard.get_inner().0.read_events() {
                    Ok(events) => {
                        state_changed |= events.iter().any(|e| {
                            e.name.as_deref() == Some(OsStr::new(STATE_FILE))
                                || e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                        });
                    }
                    Err(Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(Errno::EINTR) => {}
                    Err(error) => {
                        // Not expected on an inotify descriptor; waking is
                        // harmless (the poll reads the states).
                        tracing::warn!(%error, "reading inotify events");
                        guard.clear_ready();
                        return;
                    }
                }
            }
            if state_changed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Generous: only a watch that never fires waits this long.
    const DEADLINE: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn a_renamed_state_file_wakes_and_dropped_dirs_are_unwatched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).expect("mkdir a");
        std::fs::create_dir(&b).expect("mkdir b");
        let mut watch = StateWatch::new();
        assert!(watch.is_active(), "inotify is available on the test host");
        watch.sync([a.clone(), b.clone(), tmp.path().join("gone")]);
        assert_eq!(watch.len(), 2, "a directory that does not exist is skipped");

        // As the supervisor writes it: a temp file renamed over state.json.
        std::fs::write(b.join("state.json.tmp"), b"{}").expect("write");
        std::fs::rename(b.join("state.json.tmp"), b.join(STATE_FILE)).expect("rename");
        tokio::time::timeout(DEADLINE, watch.changed())
            .await
            .expect("the rename of state.json woke the watch");

        watch.sync([a.clone()]);
        assert_eq!(watch.len(), 1);
        std::fs::remove_dir_all(&b).expect("rm b");
        // b is no longer watched; a still is.
        std::fs::write(a.join(STATE_FILE), b"{}").expect("write a");
        tokio::time::timeout(DEADLINE, watch.changed())
            .await
            .expect("a write of a's state.json woke the watch");
    }
}
