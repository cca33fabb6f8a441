//! The write-ahead log: record encoding, replay, and the group-commit
//! writer thread. The on-disk format is described in the parent module.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::mvcc::Revision;
use super::EmbeddedError;

/// Most records one fsync covers; bounds the latency of the first writer.
const MAX_BATCH: usize = 1024;
const HEADER: usize = 8;

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The writes of one revision (Put, DeleteRange, Txn, lease expiry).
    Write { rev: i64, muts: Vec<Mutation> },
    /// A lease was granted with `ttl` seconds.
    LeaseGrant { id: i64, ttl: i64 },
    /// A lease was revoked (or expired); `rev` is 0 when it had no keys.
    LeaseRevoke {
        id: i64,
        rev: i64,
        muts: Vec<Mutation>,
    },
    /// History below `rev` was dropped.
    Compact { rev: i64 },
}

/// One key change inside a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mutation {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Record {
    /// The payload bytes (without the length/CRC frame).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        match self {
            Record::Write { rev, muts } => {
                b.push(1);
                b.extend_from_slice(&rev.to_le_bytes());
                put_muts(&mut b, muts);
            }
            Record::LeaseGrant { id, ttl } => {
                b.push(2);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&ttl.to_le_bytes());
            }
            Record::LeaseRevoke { id, rev, muts } => {
                b.push(3);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&rev.to_le_bytes());
                put_muts(&mut b, muts);
            }
            Record::Compact { rev } => {
                b.push(4);
                b.extend_from_slice(&rev.to_le_bytes());
            }
        }
        b
    }

    /// Parses a payload; the error says what was malformed.
    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        let mut r = Reader { buf, pos: 0 };
        let rec = match r.u8()? {
            1 => Record::Write {
                rev: r.i64()?,
                muts: r.muts()?,
            },
            2 => Record::LeaseGrant {
                id: r.i64()?,
                ttl: r.i64()?,
            },
            3 => Record::LeaseRevoke {
                id: r.i64()?,
                rev: r.i64()?,
                muts: r.muts()?,
            },
            4 => Record::Compact { rev: r.i64()? },
            t => return Err(format!("unknown record tag {t}")),
        };
        if r.pos != buf.len() {
            return Err(format!("{} trailing bytes", buf.len() - r.pos));
        }
        Ok(rec)
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    // Keys and values are bounded by the 1.5 MiB request limit.
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

fn put_muts(b: &mut Vec<u8>, muts: &[Mutation]) {
    b.extend_from_slice(&(muts.len() as u32).to_le_bytes());
    for m in muts {
        match m {
            Mutation::Put { key, value, lease } => {
                b.push(1);
                put_bytes(b, key);
                put_bytes(b, value);
                b.extend_from_slice(&lease.to_le_bytes());
            }
            Mutation::Delete { key } => {
                b.push(2);
                put_bytes(b, key);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| format!("truncated field at payload byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn muts(&mut self) -> Result<Vec<Mutation>, String> {
        let n = self.u32()?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(match self.u8()? {
                1 => Mutation::Put {
                    key: self.bytes()?,
                    value: self.bytes()?,
                    lease: self.i64()?,
                },
                2 => Mutation::Delete { key: self.bytes()? },
                t => return Err(format!("unknown mutation tag {t}")),
            });
        }
        Ok(out)
    }
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
    mut apply: impl FnMut(Record) -> Result<(), String>,
) -> Result<u64, EmbeddedError> {
    let data = file.read_all().map_err(io_err(path, "read"))?;
    let corrupt = |offset: usize, reason: String| EmbeddedError::Corrupt {
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
            return Err(corrupt(off, format!("CRC mismatch on {len}-byte record")));
        }
        let rec = Record::decode(payload)
            .map_err(|e| corrupt(off, format!("undecodable record: {e}")))?;
        apply(rec).map_err(|e| corrupt(off, format!("record does not apply: {e}")))?;
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
    pub done: oneshot::Sender<Result<(), String>>,
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
                    Err("store log failed earlier; restart the server".to_string())
                } else {
                    file.append(&buf).and_then(|()| file.sync_data()).map_err(|e| {
                        durable.failed.store(true, Ordering::SeqCst);
                        tracing::error!(path = %path.display(), error = %e, "store log write failed");
                        format!("writing {}: {e}", path.display())
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
