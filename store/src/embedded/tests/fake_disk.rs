//! A fake disk for the store log that behaves as a real one does when the
//! power fails: bytes appended since the last completed sync live only in
//! the page cache and are lost, perhaps leaving a torn prefix behind.
//! Syncs can be held (to observe what happens while one is in flight) or
//! made to fail.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::super::wal::LogFile;

/// A handle on one shared fake disk; clones see the same bytes. The writer
/// thread gets one clone as its [`LogFile`], the test keeps another.
#[derive(Clone, Default)]
pub(super) struct FakeDisk {
    inner: Arc<(Mutex<State>, Condvar)>,
}

#[derive(Default)]
struct State {
    /// Bytes a completed sync covered: what survives a power cut.
    synced: Vec<u8>,
    /// Bytes appended since the last completed sync: page cache only.
    unsynced: Vec<u8>,
    /// `sync_data` calls begun, including a held one.
    syncs_begun: u64,
    /// `sync_data` calls that completed and made their bytes durable.
    syncs_done: u64,
    /// While set, `sync_data` waits.
    hold: bool,
    /// The next `sync_data` fails (as `fdatasync` does with `EIO`).
    fail_next_sync: bool,
    /// Set by a power cut: every later operation fails.
    dead: bool,
    /// The snapshot file (installed atomically and durably, or not at all).
    snapshot: Option<Vec<u8>>,
    /// Snapshot installs and log rotations done.
    installs: u64,
    rotations: u64,
}

impl FakeDisk {
    /// A disk whose file already holds `bytes`, all durable.
    pub(super) fn with_contents(bytes: Vec<u8>) -> Self {
        let disk = Self::default();
        disk.state().synced = bytes;
        disk
    }

    /// A disk holding a durable log and snapshot, as a power cut left them.
    pub(super) fn with_files(log: Vec<u8>, snapshot: Option<Vec<u8>>) -> Self {
        let disk = Self::with_contents(log);
        disk.state().snapshot = snapshot;
        disk
    }

    /// The snapshot file's bytes.
    pub(super) fn snapshot(&self) -> Option<Vec<u8>> {
        self.state().snapshot.clone()
    }

    /// Snapshot installs and log rotations done so far.
    pub(super) fn snapshot_steps(&self) -> (u64, u64) {
        let s = self.state();
        (s.installs, s.rotations)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.0.lock().unwrap()
    }

    /// Makes every later `sync_data` wait until [`Self::release_syncs`].
    pub(super) fn hold_syncs(&self) {
        self.state().hold = true;
    }

    /// Lets held and later syncs complete.
    pub(super) fn release_syncs(&self) {
        self.state().hold = false;
        self.inner.1.notify_all();
    }

    /// Makes the next `sync_data` fail with an I/O error.
    pub(super) fn fail_next_sync(&self) {
        self.state().fail_next_sync = true;
    }

    /// `sync_data` calls begun so far (a held one counts).
    pub(super) fn syncs_begun(&self) -> u64 {
        self.state().syncs_begun
    }

    /// `sync_data` calls that completed successfully.
    pub(super) fn syncs_done(&self) -> u64 {
        self.state().syncs_done
    }

    /// Waits until `n` syncs have begun; false if that took over `within`
    /// (the writer never synced).
    pub(super) fn wait_for_syncs_begun(&self, n: u64, within: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let state = lock.lock().unwrap();
        let (state, _) = cv
            .wait_timeout_while(state, within, |s| s.syncs_begun < n)
            .unwrap();
        state.syncs_begun >= n
    }

    /// Every byte a read would see now (synced and unsynced).
    pub(super) fn contents(&self) -> Vec<u8> {
        let s = self.state();
        [s.synced.as_slice(), s.unsynced.as_slice()].concat()
    }

    /// Bytes a completed sync covered.
    pub(super) fn synced(&self) -> Vec<u8> {
        self.state().synced.clone()
    }

    /// Cuts the power: returns what the file holds afterwards, the synced
    /// bytes and the first `torn` unsynced ones (a write that reached the
    /// platter only in part). Every later operation, including a held
    /// sync, fails.
    pub(super) fn power_cut(&self, torn: usize) -> Vec<u8> {
        let mut s = self.state();
        s.dead = true;
        let keep = torn.min(s.unsynced.len());
        let image = [s.synced.as_slice(), &s.unsynced[..keep]].concat();
        drop(s);
        self.inner.1.notify_all();
        image
    }

    /// Bytes appended but not yet synced.
    pub(super) fn unsynced_len(&self) -> usize {
        self.state().unsynced.len()
    }
}

fn power_lost() -> io::Error {
    io::Error::other("fake disk: power lost")
}

impl LogFile for FakeDisk {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        if self.state().dead {
            return Err(power_lost());
        }
        Ok(self.contents())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        s.unsynced.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap();
        s.syncs_begun += 1;
        cv.notify_all();
        let mut s = cv.wait_while(s, |s| s.hold && !s.dead).unwrap();
        if s.dead {
            return Err(power_lost());
        }
        if std::mem::take(&mut s.fail_next_sync) {
            return Err(io::Error::other("fake disk: injected EIO"));
        }
        let pending = std::mem::take(&mut s.unsynced);
        s.synced.extend_from_slice(&pending);
        s.syncs_done += 1;
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        let mut all = [s.synced.as_slice(), s.unsynced.as_slice()].concat();
        all.truncate(usize::try_from(len).unwrap());
        s.synced = all;
        s.unsynced.clear();
        Ok(())
    }

    fn read_snapshot(&mut self) -> io::Result<Option<Vec<u8>>> {
        let s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        Ok(s.snapshot.clone())
    }

    fn install_snapshot(&mut self, image: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        s.snapshot = Some(image.to_vec());
        s.installs += 1;
        Ok(())
    }

    fn rotate(&mut self, first: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        s.synced = first.to_vec();
        s.unsynced.clear();
        s.rotations += 1;
        Ok(())
    }
}
