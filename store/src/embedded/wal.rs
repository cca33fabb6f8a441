//! The write-ahead log: record encoding, replay, and the group-commit
//! writer thread. The on-disk format is described in the parent module.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::mvcc::ReplayError;
use super::record::{DecodeError, Record, Revision};
use super::EmbeddedError;

/// Most records one fsync covers; bounds the latency of the first writer.
const MAX_BATCH: usize = 1024;
const HEADER: usize = 8;

/// Why replay refused a record before the end of the log: the reason of
/// [`EmbeddedError::Corrupt`].
///
/// The log has two error types, as its two halves fail in unrelated ways:
/// this one for a damaged file found at startup, [`WriteError`] for a
/// write that did not become durable while serving.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// The payload does not match its CRC and is not the final record.
    #[error("CRC mismatch on {len}-byte record")]
    CrcMismatch {
        /// Payload length from the record header.
        len: usize,
    },
    /// The payload is not a record.
    #[error("undecodable record: {0}")]
    Undecodable(#[source] DecodeError),
    /// The record does not follow from the ones before it.
    #[error("record does not apply: {0}")]
    DoesNotApply(#[source] ReplayError),
}

/// Why the writer did not make a write durable; every write of the batch
/// gets a copy.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WriteError {
    /// An earlier append or fsync failed: the log no longer matches memory.
    #[error("store log failed earlier; restart the server")]
    FailedEarlier,
    /// This batch's append or fsync failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The log file.
        path: PathBuf,
        /// The OS error, shared by the batch's writes.
        #[source]
        source: Arc<io::Error>,
    },
}

/// Frames a payload as `[len u32 LE][crc32 u32 LE][payload]`.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + payload.len());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> EmbeddedError + 'a {
    move |source| EmbeddedError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The log file as replay and the writer use it. The real one is a
/// [`File`]; unit tests pass a fake disk that keeps synced bytes apart
/// from unsynced ones, so they can check what a power cut would leave.
pub(crate) trait LogFile: Send + 'static {
    /// Reads the whole file from its start.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Appends `buf` at the end of the file (not yet durable).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (`fdatasync`): only what a
    /// completed call covered survives a power cut.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes and makes that durable.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.seek(SeekFrom::Start(0))?;
        self.read_to_end(&mut data)?;
        Ok(data)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        // Opened with O_APPEND: every write lands at the end.
        self.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// Opens (creating) the log file at `path` for reading and appending; a
/// new file's directory entry is made durable too.
pub(crate) fn open(path: &Path) -> Result<File, EmbeddedError> {
    let created = !path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err(path, "open"))?;
    if created {
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir, "fsync directory"))?;
        }
    }
    Ok(file)
}

/// Feeds every intact record of `file` to `apply` and truncates a torn
/// final record. `path` names the file in errors. Returns the length of
/// the intact log, where appends continue.
pub(crate) fn replay(
    file: &mut impl LogFile,
    path: &Path,
    mut apply: impl FnMut(Record) -> Result<(), ReplayError>,
) -> Result<u64, EmbeddedError> {
    let data = file.read_all().map_err(io_err(path, "read"))?;
    let corrupt = |offset: usize, reason: Corruption| EmbeddedError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut off = 0usize;
    let mut torn = None;
    while off < data.len() {
        // A power cut can persist a file's new size but not its data: the
        // tail reads as zeros. No record starts with a zero header (every
        // payload has a tag byte), and the scan stops at the first nonzero
        // byte, within a record's header.
        if data[off..].iter().all(|&b| b == 0) {
            torn = Some("zero-filled tail");
            break;
        }
        if data.len() - off < HEADER {
            torn = Some("record header runs past end of file");
            break;
        }
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        let end = off + HEADER + len;
        if end > data.len() {
            torn = Some("record length runs past end of file");
            break;
        }
        let payload = &data[off + HEADER..end];
        if crc32fast::hash(payload) != crc {
            if end == data.len() {
                // A crash can leave the final record's space allocated but
                // not its bytes written: treat as torn, like a short record.
                torn = Some("final record fails its CRC");
                break;
            }
            return Err(corrupt(off, Corruption::CrcMismatch { len }));
        }
        let rec = Record::decode(payload).map_err(|e| corrupt(off, Corruption::Undecodable(e)))?;
        apply(rec).map_err(|e| corrupt(off, Corruption::DoesNotApply(e)))?;
        off = end;
    }
    if let Some(why) = torn {
        tracing::warn!(path = %path.display(), offset = off, reason = why, "truncating torn tail of store log");
        file.truncate(off as u64)
            .map_err(io_err(path, "truncate"))?;
    }
    Ok(off as u64)
}

/// One write waiting for durability.
pub(crate) struct WalJob {
    pub payload: Vec<u8>,
    pub published: Option<Arc<Revision>>,
    pub done: oneshot::Sender<Result<(), WriteError>>,
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
    /// Set once a write or fsync failed: the log no longer matches memory.
    pub failed: AtomicBool,
}

/// Runs the group-commit loop on a dedicated thread until every sender is
/// dropped: take all queued jobs, append them, `fdatasync` once, publish
/// their revisions, then acknowledge them.
pub(crate) fn spawn_writer(
    path: PathBuf,
    mut file: impl LogFile,
    durable: Arc<Durable>,
    mut rx: mpsc::UnboundedReceiver<WalJob>,
) -> Result<std::thread::JoinHandle<()>, EmbeddedError> {
    std::thread::Builder::new()
        .name("drover-store-wal".into())
        .spawn(move || {
            let mut batch = Vec::new();
            let mut buf = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                buf.clear();
                for job in &batch {
                    buf.extend_from_slice(&frame(&job.payload));
                }
                let result = if durable.failed.load(Ordering::SeqCst) {
                    Err(WriteError::FailedEarlier)
                } else {
                    file.append(&buf).and_then(|()| file.sync_data()).map_err(|e| {
                        durable.failed.store(true, Ordering::SeqCst);
                        tracing::error!(path = %path.display(), error = %e, "store log write failed");
                        WriteError::Write {
                            path: path.clone(),
                            source: Arc::new(e),
                        }
                    })
                };
                if result.is_ok() {
                    durable.size.fetch_add(buf.len() as u64, Ordering::SeqCst);
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
        })
        .map_err(|source| EmbeddedError::Io {
            path: PathBuf::from("drover-store-wal thread"),
            op: "spawn",
            source,
        })
}
