//! The write-ahead log: framing, the files, and replay (the writer thread
//! is in `writer`). The on-disk format is described in the parent module.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::mvcc::ReplayError;
use super::record::{DecodeError, Record};
use super::{dir, snapshot, EmbeddedError};

/// The log's file name in the data directory.
pub const LOG_FILE: &str = "store.wal";
/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "store.snap";

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

/// The log (and the snapshot beside it) as replay and the writer use
/// them. The real one is a [`DiskLog`]; unit tests pass a fake disk that
/// keeps synced bytes apart from unsynced ones, so they can check what a
/// power cut would leave.
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
    /// The snapshot file's bytes, `None` when there is none.
    fn read_snapshot(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the snapshot file by `image`, atomically and durably.
    fn install_snapshot(&mut self, image: &[u8]) -> io::Result<()>;
    /// Replaces the log by a new one holding `first`, atomically and
    /// durably; later appends go to the new log.
    fn rotate(&mut self, first: &[u8]) -> io::Result<()>;
}

/// The log `store.wal` and snapshot `store.snap` of a data directory.
pub(crate) struct DiskLog {
    file: File,
    path: PathBuf,
    snap: PathBuf,
}

impl LogFile for DiskLog {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut data)?;
        Ok(data)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        // Opened with O_APPEND: every write lands at the end.
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let synced = self.file.sync_data();
        super::metrics::fsync_took(started.elapsed().as_secs_f64());
        synced
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }

    fn read_snapshot(&mut self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.snap) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn install_snapshot(&mut self, image: &[u8]) -> io::Result<()> {
        snapshot::write_atomic(&self.snap, image)
    }

    fn rotate(&mut self, first: &[u8]) -> io::Result<()> {
        snapshot::write_atomic(&self.path, first)?;
        self.file = dir::append_options().open(&self.path)?;
        Ok(())
    }
}

/// Opens (creating, mode 0600) the log `store.wal` in `data_dir`, beside
/// its snapshot `store.snap`; a new file's directory entry is made durable
/// too. Leftover temp files of an interrupted snapshot are removed.
pub(crate) fn open(data_dir: &Path) -> Result<DiskLog, EmbeddedError> {
    let path = data_dir.join(LOG_FILE);
    let snap = data_dir.join(SNAPSHOT_FILE);
    for tmp in [snapshot::tmp_path(&path), snapshot::tmp_path(&snap)] {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(&tmp, "remove")(e));
            }
            _ => {}
        }
    }
    let created = !path.exists();
    let file = dir::append_options()
        .open(&path)
        .map_err(io_err(&path, "open"))?;
    if created {
        snapshot::sync_dir(&path).map_err(io_err(data_dir, "fsync directory"))?;
    }
    Ok(DiskLog { file, path, snap })
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
