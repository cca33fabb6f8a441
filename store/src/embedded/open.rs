//! Opening a data directory: lock it, load the snapshot, replay the log
//! written after it, start the writer; and restoring a backup into an
//! empty directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use super::mvcc::{ReplayError, Store};
use super::record::Record;
use super::wal::{self, LogFile, LOG_FILE, SNAPSHOT_FILE};
use super::writer::{self, Durable, StoreOptions};
use super::{dir, snapshot, EmbeddedError, EmbeddedEtcd, Shared};

impl EmbeddedEtcd {
    /// Opens (creating if absent) the store in `data_dir` with the default
    /// snapshot thresholds. Errors name the file and byte offset of
    /// corruption, or the pid of another server using the directory.
    pub fn open(data_dir: &Path) -> Result<Self, EmbeddedError> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// [`Self::open`] with explicit options.
    pub fn open_with(data_dir: &Path, opts: StoreOptions) -> Result<Self, EmbeddedError> {
        dir::prepare(data_dir)?;
        let lock = dir::lock(data_dir)?;
        let file = wal::open(data_dir)?;
        let etcd = Self::with_log(data_dir.join(LOG_FILE), file, opts)?;
        if let Ok(mut slot) = etcd.shared.dir_lock.lock() {
            *slot = Some(lock);
        }
        Ok(etcd)
    }

    /// Loads the snapshot and replays the log of `file`, then starts its
    /// writer thread; `path` names the log in errors and logs. Unit tests
    /// pass a fake disk here.
    pub(crate) fn with_log(
        path: PathBuf,
        mut file: impl LogFile,
        opts: StoreOptions,
    ) -> Result<Self, EmbeddedError> {
        let started = std::time::Instant::now();
        let snap_path = path.with_file_name(SNAPSHOT_FILE);
        let now = tokio::time::Instant::now();
        let image = file.read_snapshot().map_err(|source| EmbeddedError::Io {
            path: snap_path.clone(),
            op: "read",
            source,
        })?;
        let snap_size = image.as_ref().map_or(0, |i| i.len() as u64);
        let (mut store, gen) = match &image {
            Some(image) => load_snapshot(&snap_path, image, now)?,
            None => (Store::new(lease_seed()), 0),
        };
        drop(image);
        let (mut first, mut stale) = (true, false);
        let mut size = wal::replay(&mut file, &path, |rec| {
            let is_start = matches!(rec, Record::LogStart { .. });
            if std::mem::take(&mut first) {
                // A log without a LogStart record predates snapshots.
                let log_gen = match rec {
                    Record::LogStart { gen } => gen,
                    _ => 0,
                };
                if log_gen > gen {
                    return Err(ReplayError::LogAhead {
                        log: log_gen,
                        snapshot: gen,
                    });
                }
                // The snapshot covers the whole older log (a crash came
                // between installing the snapshot and starting its log).
                stale = log_gen < gen;
            } else if is_start {
                return Err(ReplayError::MisplacedLogStart);
            }
            if stale {
                return Ok(());
            }
            store.replay(rec, now)
        })?;
        if stale || (first && gen > 0) {
            tracing::warn!(path = %path.display(), generation = gen, "store log predates the snapshot; starting a new one");
            let start = wal::frame(&Record::LogStart { gen }.encode());
            file.rotate(&start).map_err(|source| EmbeddedError::Io {
                path: path.clone(),
                op: "replace",
                source,
            })?;
            size = start.len() as u64;
        }
        tracing::info!(
            path = %path.display(),
            revision = store.revision(),
            log_bytes = size,
            snapshot_bytes = snap_size,
            generation = gen,
            millis = started.elapsed().as_millis() as u64,
            "opened embedded store"
        );
        let durable = Arc::new(Durable::new(store.revision(), size, snap_size));
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = writer::spawn_writer(path, file, Arc::clone(&durable), opts, gen, rx)?;
        Ok(Self {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                wal: tx,
                durable,
                watchers: Arc::default(),
                client_url: OnceLock::new(),
                shutdown: super::CancellationToken::new(),
                writer: Mutex::new(Some(thread)),
                dir_lock: Mutex::new(None),
            }),
        })
    }
}

fn lease_seed() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| (d.as_micros() as i64) & 0x3fff_ffff_ffff_ffff)
}

fn load_snapshot(
    path: &Path,
    image: &[u8],
    now: tokio::time::Instant,
) -> Result<(Store, u64), EmbeddedError> {
    let (gen, body) = snapshot::decode(image).map_err(|reason| EmbeddedError::SnapshotFile {
        path: path.to_path_buf(),
        reason,
    })?;
    let store = Store::from_snapshot(body, now).map_err(|reason| EmbeddedError::Snapshot {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok((store, gen))
}

/// What [`restore`] installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The revision the store resumes from.
    pub revision: i64,
    /// Live keys.
    pub keys: usize,
}

/// Installs the backup `image` (a snapshot as Maintenance.Snapshot /
/// `etcdctl snapshot save` wrote it) as the store of `data_dir`, which must
/// hold no store yet. The backup is checked whole before anything is
/// written.
pub fn restore(image: &[u8], from: &Path, data_dir: &Path) -> Result<Restored, EmbeddedError> {
    let (_, body) = snapshot::decode(image).map_err(|reason| EmbeddedError::SnapshotFile {
        path: from.to_path_buf(),
        reason,
    })?;
    let s = Store::from_snapshot(body, tokio::time::Instant::now()).map_err(|reason| {
        EmbeddedError::Snapshot {
            path: from.to_path_buf(),
            reason,
        }
    })?;
    dir::prepare(data_dir)?;
    let _lock = dir::lock(data_dir)?;
    for name in [LOG_FILE, SNAPSHOT_FILE] {
        let p = data_dir.join(name);
        if std::fs::metadata(&p).is_ok_and(|m| m.len() > 0) {
            return Err(EmbeddedError::NotEmpty { path: p });
        }
    }
    let io = |path: PathBuf, op| move |source| EmbeddedError::Io { path, op, source };
    let snap = data_dir.join(SNAPSHOT_FILE);
    snapshot::write_atomic(&snap, &snapshot::encode(1, body)).map_err(io(snap.clone(), "write"))?;
    let log = data_dir.join(LOG_FILE);
    let start = wal::frame(&Record::LogStart { gen: 1 }.encode());
    snapshot::write_atomic(&log, &start).map_err(io(log.clone(), "write"))?;
    Ok(Restored {
        revision: s.revision(),
        keys: s.key_count(),
    })
}
