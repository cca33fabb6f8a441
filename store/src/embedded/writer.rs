//! The log's writer thread: group commit of queued writes, and snapshots.
//!
//! Jobs arrive in the order the core applied them (they are queued under
//! the store's lock). Writes are appended in batches and `fdatasync`ed
//! once per batch, then published to watchers and acknowledged. When the
//! log has grown past the [`StoreOptions`] thresholds the writer raises
//! `snapshot_due`; the next write queues, right behind its own record, a
//! snapshot of the state that record produced. The writer then installs
//! it as generation `g + 1` (temp file, fsync, rename, fsync of the
//! directory) and replaces the log by one that starts with
//! `LogStart { g + 1 }`. Nothing is appended between the two steps, so a
//! crash between them leaves a snapshot that covers the whole older log,
//! which the next start discards.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::record::{Record, Revision};
use super::wal::{frame, LogFile, WriteError};
use super::{snapshot, EmbeddedError};

/// Most records one fsync covers; bounds the latency of the first writer.
const MAX_BATCH: usize = 1024;

/// When the embedded store snapshots its state and starts a new log.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Snapshot once the log holds this many records...
    pub snapshot_after_records: u64,
    /// ...or this many bytes, and in either case at least as many bytes as
    /// the last snapshot (so a large store is not rewritten for a few
    /// writes: the log costs at most about twice the live data).
    pub snapshot_after_bytes: u64,
    /// Test hook: abort the process at this step of a snapshot.
    #[doc(hidden)]
    pub crash_at: Option<CrashPoint>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            snapshot_after_records: 100_000,
            snapshot_after_bytes: 64 << 20,
            crash_at: None,
        }
    }
}

/// A step of a snapshot at which a crash test aborts the process.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The new snapshot is in place; the old log is not yet replaced.
    AfterSnapshot,
    /// The new snapshot and the new log are both in place.
    AfterRotate,
}

/// One write waiting for durability.
pub(crate) struct WriteJob {
    pub payload: Vec<u8>,
    pub published: Option<Arc<Revision>>,
    pub done: oneshot::Sender<Result<(), WriteError>>,
}

/// What the writer thread is asked to do, in log order.
pub(crate) enum WalJob {
    /// Append a record.
    Write(WriteJob),
    /// Install a snapshot body of the state after every earlier job.
    Snapshot(Vec<u8>),
    /// Finish the earlier jobs, then close the log and exit.
    Stop,
}

/// State the writer thread publishes after each fsync.
#[derive(Debug)]
pub(crate) struct Durable {
    /// Every durable revision, in order, for watchers.
    pub events: broadcast::Sender<Arc<Revision>>,
    /// Highest revision known durable.
    pub rev: AtomicI64,
    /// Log size in bytes.
    pub size: AtomicU64,
    /// Snapshot file size in bytes.
    pub snap_size: AtomicU64,
    /// Snapshots installed since open.
    pub snapshots: AtomicU64,
    /// Set once a write or fsync failed: the log no longer matches memory.
    pub failed: AtomicBool,
    /// Set by the writer when the next write should queue a snapshot.
    pub snapshot_due: AtomicBool,
}

impl Durable {
    pub(crate) fn new(rev: i64, size: u64, snap_size: u64) -> Self {
        Self {
            events: broadcast::channel(super::EVENT_BUFFER).0,
            rev: AtomicI64::new(rev),
            size: AtomicU64::new(size),
            snap_size: AtomicU64::new(snap_size),
            snapshots: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            snapshot_due: AtomicBool::new(false),
        }
    }
}

struct Writer<F> {
    path: PathBuf,
    file: F,
    durable: Arc<Durable>,
    opts: StoreOptions,
    /// Generation of the current log.
    gen: u64,
    /// Records in the current log.
    records: u64,
    /// A snapshot was asked for and has not arrived yet.
    requested: bool,
}

/// Runs the writer on a dedicated thread until a [`WalJob::Stop`] or until
/// every sender is dropped. `gen` is the current log's generation.
pub(crate) fn spawn_writer(
    path: PathBuf,
    file: impl LogFile,
    durable: Arc<Durable>,
    opts: StoreOptions,
    gen: u64,
    mut rx: mpsc::UnboundedReceiver<WalJob>,
) -> Result<std::thread::JoinHandle<()>, EmbeddedError> {
    let mut w = Writer {
        path,
        file,
        durable,
        opts,
        gen,
        records: 0,
        requested: false,
    };
    std::thread::Builder::new()
        .name("drover-store-wal".into())
        .spawn(move || {
            let mut batch = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(WalJob::Write(job)) = next {
                    batch.push(job);
                    next = if batch.len() < MAX_BATCH {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                w.write_batch(&mut batch);
                match next {
                    Some(WalJob::Snapshot(body)) => w.snapshot(&body),
                    Some(WalJob::Stop) => break,
                    Some(WalJob::Write(_)) | None => {}
                }
            }
            tracing::debug!(path = %w.path.display(), "store log closed");
        })
        .map_err(|source| EmbeddedError::Io {
            path: PathBuf::from("drover-store-wal thread"),
            op: "spawn",
            source,
        })
}

impl<F: LogFile> Writer<F> {
    /// Appends the batch, `fdatasync`s once, publishes the revisions, then
    /// acknowledges the writes.
    fn write_batch(&mut self, batch: &mut Vec<WriteJob>) {
        if batch.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        for job in batch.iter() {
            buf.extend_from_slice(&frame(&job.payload));
        }
        let durable = &self.durable;
        let result = if durable.failed.load(Ordering::SeqCst) {
            Err(WriteError::FailedEarlier)
        } else {
            let r = self.file.append(&buf).and_then(|()| self.file.sync_data());
            r.map_err(|e| self.fail("store log write failed", e))
        };
        if result.is_ok() {
            let size =
                durable.size.fetch_add(buf.len() as u64, Ordering::SeqCst) + buf.len() as u64;
            self.records += batch.len() as u64;
            let o = &self.opts;
            let grown = self.records >= o.snapshot_after_records || size >= o.snapshot_after_bytes;
            if !self.requested && grown && size >= durable.snap_size.load(Ordering::SeqCst) {
                self.requested = true;
                durable.snapshot_due.store(true, Ordering::SeqCst);
            }
        }
        for job in batch.drain(..) {
            if let (Ok(()), Some(rev)) = (&result, &job.published) {
                durable.rev.store(rev.rev, Ordering::SeqCst);
                // No receivers is fine: nobody is watching.
                let _ = durable.events.send(Arc::clone(rev));
            }
            let _ = job.done.send(result.clone());
        }
    }

    /// Installs the next generation's snapshot and starts its log. Any
    /// failure fails the log: whether the old log is still the one to
    /// replay is then unknown, so nothing more may be appended to it.
    fn snapshot(&mut self, body: &[u8]) {
        self.requested = false;
        if self.durable.failed.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        let gen = self.gen + 1;
        let image = snapshot::encode(gen, body);
        if let Err(e) = self.file.install_snapshot(&image) {
            self.fail("writing the store snapshot failed", e);
            return;
        }
        self.crash_if(CrashPoint::AfterSnapshot);
        let first = frame(&Record::LogStart { gen }.encode());
        if let Err(e) = self.file.rotate(&first) {
            self.fail("starting a new store log after a snapshot failed", e);
            return;
        }
        self.crash_if(CrashPoint::AfterRotate);
        let old_size = self.durable.size.swap(first.len() as u64, Ordering::SeqCst);
        let old_records = std::mem::replace(&mut self.records, 0);
        self.gen = gen;
        self.durable
            .snap_size
            .store(image.len() as u64, Ordering::SeqCst);
        self.durable.snapshots.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            path = %self.path.display(),
            generation = gen,
            snapshot_bytes = image.len(),
            log_bytes_dropped = old_size,
            log_records_dropped = old_records,
            millis = started.elapsed().as_millis() as u64,
            "store snapshot installed, log restarted"
        );
    }

    fn fail(&self, what: &'static str, e: std::io::Error) -> WriteError {
        self.durable.failed.store(true, Ordering::SeqCst);
        tracing::error!(path = %self.path.display(), error = %e, "{what}");
        WriteError::Write {
            path: self.path.clone(),
            source: Arc::new(e),
        }
    }

    fn crash_if(&self, at: CrashPoint) {
        if self.opts.crash_at == Some(at) {
            tracing::warn!(?at, "aborting at the requested crash point");
            std::process::abort();
        }
    }
}
