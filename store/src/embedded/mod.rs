//! An in-process server for the subset of etcd's v3 gRPC API that Drover,
//! `etcd-client` and `etcdctl` 3.4 use, in the manner of k3s's kine: KV
//! (Range, Put, DeleteRange, Txn, Compact), Watch, Lease, Maintenance.Status
//! and Snapshot, and Cluster.MemberList, over a durable local log and
//! snapshot.
//!
//! # Layout
//!
//! - `mvcc` core: current keys in a `BTreeMap`, the last
//!   10,000 revisions of events for historical reads and watch replay, and
//!   leases. Pure: no I/O, the clock is passed in.
//! - `record`: what the core hands the WAL (a durable record and its
//!   payload encoding) and what the WAL publishes back to watchers once it
//!   is durable (a revision's events). Both import it, not each other.
//! - WAL: every state change becomes one log record; a dedicated writer
//!   thread appends queued records and `fdatasync`s once per batch (group
//!   commit). A write is acknowledged, and its events reach watchers, only
//!   after its record is durable. Reads may observe a write that is still
//!   being synced (a crash at that moment loses it, as it was never
//!   acknowledged).
//! - gRPC services (`kv`, `watch`, `lease`) translate requests and map core
//!   errors to the status codes and messages etcd uses.
//!
//! # The log file, `<data_dir>/store.wal`
//!
//! A sequence of records, each `[len: u32 LE][crc32: u32 LE][payload: len
//! bytes]`, where the CRC (IEEE, `crc32fast`) covers the payload. A payload
//! is a tag byte and little-endian fields; `bytes` is a `u32` length then
//! the bytes, `muts` is a `u32` count then mutations, each either
//! `1, key: bytes, value: bytes, lease: i64` (put) or `2, key: bytes`
//! (delete):
//!
//! | tag | record | fields |
//! |---|---|---|
//! | 1 | write (one revision) | `rev: i64, muts` |
//! | 2 | lease grant | `id: i64, ttl_secs: i64` |
//! | 3 | lease revoke/expiry | `id: i64, rev: i64 (0 = no keys), muts` |
//! | 4 | compaction | `rev: i64` |
//! | 5 | log start | `gen: u64` (first record of a log after snapshot `gen`) |
//!
//! On open the log is replayed in order (after the snapshot, below). A final record whose header or
//! payload runs past the end of the file, or whose CRC fails while it ends
//! exactly at the end of the file, is a torn write, and so is a tail of
//! zero bytes (a power cut kept the file's new size but not its data): it
//! is truncated with a warning naming the offset. Any other bad CRC, an undecodable record or
//! one that does not apply (revision gap, unknown lease) is an error naming
//! the file and offset, and the file is left untouched.
//!
//! Leases persist with their granted TTL; after a restart each one starts
//! a fresh full TTL. The event history is rebuilt by the replay.
//!
//! # Snapshots, `<data_dir>/store.snap`
//!
//! When the log has grown past [`StoreOptions`]' thresholds the writer
//! installs a snapshot of the live state (format in `snapshot` and
//! `mvcc::snapshot`) and replaces the log by one starting with
//! `LogStart { gen }` (see `writer`). On open: the snapshot is loaded,
//! then the log is replayed if it carries the snapshot's generation; a log
//! of an older generation (or none: written before snapshots existed) is
//! wholly covered by the snapshot and replaced; a newer one is refused.
//! After a restart, history older than the snapshot's carried revisions
//! is compacted.
//!
//! # The directory
//!
//! Mode 0700, files 0600; `store.lock` is `flock`ed by the one server
//! using it and holds its pid (see `dir`).
//!
//! Not done yet: auth, and the Maintenance methods other than Status and
//! Snapshot (they answer UNIMPLEMENTED). Snapshot streams Drover's
//! snapshot format: `etcdctl snapshot save` stores it, [`restore`]
//! installs it.

mod dir;
mod kv;
mod lease;
mod local_only;
pub mod metrics;
mod mvcc;
mod open;
mod record;
mod snapshot;
mod wal;
mod watch;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use drover_proto::etcd::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// The shutdown token [`EmbeddedEtcd::serve`] takes, re-exported for callers.
pub use tokio_util::sync::CancellationToken;

use crate::local_peer::PeerLookup;

pub use dir::{DIR_MODE, FILE_MODE, LOCK_FILE};
pub use mvcc::snapshot::SnapshotError;
pub use mvcc::ReplayError;
pub use open::{restore, Restored};
pub use record::DecodeError;
pub use snapshot::SnapshotFileError;
pub use wal::{Corruption, LOG_FILE, SNAPSHOT_FILE};
pub use writer::{CrashPoint, StoreOptions};

use mvcc::{Applied, Store, StoreError};
use writer::{Durable, WalJob, WriteJob};

/// Cluster id reported in every response header.
const CLUSTER_ID: u64 = 0x6472_6f76_6572_0001;
/// Member id of the single member, also reported as leader.
const MEMBER_ID: u64 = 0x6472_6f76_6572_0002;
/// etcd's gRPC receive limit: the 1.5 MiB request limit plus 512 KiB
/// overhead. grpc-go refuses larger messages with `RESOURCE_EXHAUSTED`.
const MAX_GRPC_MESSAGE: usize = mvcc::MAX_REQUEST_BYTES + 512 * 1024;
/// tonic's own decode limit for KV. tonic refuses with `OUT_OF_RANGE`
/// where grpc-go says `RESOURCE_EXHAUSTED`, so tonic's limit sits above
/// etcd's and [`check_size`] gives etcd's answer for everything between.
const TRANSPORT_LIMIT: usize = 64 << 20;
/// How often the expiry task looks for lapsed leases.
const LEASE_TICK: Duration = Duration::from_millis(250);
/// How many durable revisions may queue for a slow watch stream before it
/// falls back to reading history.
const EVENT_BUFFER: usize = 4096;

/// Errors opening or serving the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The log holds a damaged record before its end; the file was left
    /// untouched. Restore it from a backup or move it aside.
    #[error("store log {} is corrupt at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the damaged record's header.
        offset: u64,
        /// What is wrong with it.
        #[source]
        reason: Corruption,
    },
    /// Another server holds the directory's lock.
    #[error("store directory {} is in use by another server ({}); stop it or use another data directory", dir.display(), dir::holder(pid))]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The pid written in its lock file, when readable.
        pid: Option<u32>,
    },
    /// The snapshot file is damaged; the files were left untouched.
    #[error("store snapshot {} is unreadable: {reason}", path.display())]
    SnapshotFile {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: SnapshotFileError,
    },
    /// The snapshot's contents do not make a store.
    #[error("store snapshot {} is invalid: {reason}", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: SnapshotError,
    },
    /// A restore found a store already in place.
    #[error("{} already holds a store; restore only into an empty data directory", path.display())]
    NotEmpty {
        /// The file found.
        path: PathBuf,
    },
    /// The listener's local address could not be read.
    #[error("reading the listener address: {0}")]
    Listener(#[source] std::io::Error),
    /// gRPC server reflection could not be built from the descriptors.
    #[error("building gRPC reflection for the embedded store: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("serving the embedded etcd API: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// State shared by the gRPC services and background tasks.
pub(crate) struct Shared {
    store: Mutex<Store>,
    wal: mpsc::UnboundedSender<WalJob>,
    durable: Arc<Durable>,
    watchers: Arc<AtomicUsize>,
    client_url: OnceLock<String>,
    shutdown: CancellationToken,
    /// The writer thread, joined by [`Shared::stop_writer`].
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The data directory's lock, released after the writer stopped.
    dir_lock: Mutex<Option<dir::DirLock>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // The core never panics half-way through a write, so a poisoned lock
        // still guards consistent state.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a write under the lock, queues its record in revision order,
    /// and waits until it is durable. Returns the output and the header
    /// revision.
    async fn commit<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<Applied<T>, StoreError>,
    ) -> Result<(T, i64), Status> {
        if self.durable.failed.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "etcdserver: store log failed; restart the server",
            ));
        }
        let (out, rev, done) = {
            let mut store = self.lock();
            let applied = f(&mut store).map_err(to_status)?;
            let done = match applied.record {
                Some(rec) => {
                    let (tx, rx) = oneshot::channel();
                    let job = WalJob::Write(WriteJob {
                        payload: rec.encode(),
                        published: applied.published,
                        done: tx,
                    });
                    let stopped = |_| Status::unavailable("etcdserver: store log writer stopped");
                    self.wal.send(job).map_err(stopped)?;
                    // Right behind the record that made this state.
                    if self.durable.snapshot_due.swap(false, Ordering::SeqCst) {
                        let body = store.encode_snapshot();
                        self.wal.send(WalJob::Snapshot(body)).map_err(stopped)?;
                    }
                    Some(rx)
                }
                None => None,
            };
            (applied.out, store.revision(), done)
        };
        if let Some(done) = done {
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Status::unavailable(e.to_string())),
                Err(_) => return Err(Status::unavailable("etcdserver: store log writer stopped")),
            }
        }
        Ok((out, rev))
    }

    /// Lets the writer finish the jobs queued so far, waits for it to close
    /// the log, then releases the directory's lock. Later writes fail as
    /// the writer is gone.
    fn stop_writer(&self) {
        let thread = self.writer.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = self.wal.send(WalJob::Stop);
            if thread.join().is_err() {
                tracing::error!("the store log writer panicked");
            }
        }
        if let Ok(mut lock) = self.dir_lock.lock() {
            lock.take();
        }
    }

    fn durable_rev(&self) -> i64 {
        self.durable.rev.load(Ordering::SeqCst)
    }
}

/// A response header at `revision`.
pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision,
        raft_term: 1,
    })
}

/// Maps a core refusal to the status etcd answers with.
pub(crate) fn to_status(e: StoreError) -> Status {
    let msg = e.to_string();
    match e {
        StoreError::Compacted | StoreError::FutureRevision | StoreError::LeaseTtlTooLarge => {
            Status::out_of_range(msg)
        }
        StoreError::LeaseNotFound => Status::not_found(msg),
        StoreError::LeaseExists => Status::failed_precondition(msg),
        StoreError::KeyNotProvided | StoreError::TooManyOps | StoreError::KeyNotFound => {
            Status::invalid_argument(msg)
        }
    }
}

/// Refuses messages over etcd's gRPC receive limit as grpc-go does.
pub(crate) fn check_grpc_size(msg: &impl prost::Message) -> Result<(), Status> {
    let len = msg.encoded_len();
    if len > MAX_GRPC_MESSAGE {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {MAX_GRPC_MESSAGE})"
        )));
    }
    Ok(())
}

/// Refuses writes over etcd's 1.5 MiB request limit (and, first, messages
/// over the gRPC limit).
pub(crate) fn check_size(msg: &impl prost::Message) -> Result<(), Status> {
    check_grpc_size(msg)?;
    if msg.encoded_len() > mvcc::MAX_REQUEST_BYTES {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    Ok(())
}

/// The embedded etcd-compatible server.
pub struct EmbeddedEtcd {
    shared: Arc<Shared>,
}

/// A cheap view of a running server for tests and metrics; holding one
/// does not keep the server or its log open.
#[derive(Debug, Clone)]
pub struct EmbeddedHandle {
    watchers: Arc<AtomicUsize>,
    durable: Arc<Durable>,
}

impl EmbeddedHandle {
    /// Number of live watches across all watch streams.
    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }

    /// Highest revision known durable.
    pub fn revision(&self) -> i64 {
        self.durable.rev.load(Ordering::SeqCst)
    }

    /// Snapshots installed since the store was opened.
    pub fn snapshots(&self) -> u64 {
        self.durable.snapshots.load(Ordering::SeqCst)
    }

    /// Bytes in the log and in the snapshot file.
    pub fn disk_bytes(&self) -> (u64, u64) {
        (
            self.durable.size.load(Ordering::SeqCst),
            self.durable.snap_size.load(Ordering::SeqCst),
        )
    }
}

impl EmbeddedEtcd {
    /// A handle that reports live watchers and the durable revision.
    pub fn handle(&self) -> EmbeddedHandle {
        EmbeddedHandle {
            watchers: Arc::clone(&self.shared.watchers),
            durable: Arc::clone(&self.shared.durable),
        }
    }

    /// Number of live watches across all watch streams.
    pub fn watcher_count(&self) -> usize {
        self.shared.watchers.load(Ordering::SeqCst)
    }

    /// Serves KV, Watch, Lease, Maintenance, Cluster on an already-bound listener until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), EmbeddedError> {
        let addr = listener.local_addr().map_err(EmbeddedError::Listener)?;
        // Callers are looked up in the listener's network namespace.
        let local_users = local_only::LocalUsersLayer::new(PeerLookup::for_socket(
            std::os::fd::AsFd::as_fd(&listener),
        ));
        let _ = self.shared.client_url.set(format!("http://{addr}"));
        let shared = Arc::clone(&self.shared);
        // However serve ends (even dropped mid-flight), the log is closed
        // and the directory unlocked when it does.
        let _writer = StopWriter(self.shared);
        // Streams and background tasks stop with the server.
        let inner = shared.shutdown.clone();
        let _stop_inner = inner.clone().drop_guard();
        let expiry = tokio::spawn(lease::expire_loop(Arc::clone(&shared), inner.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            inner.cancel();
        });
        // tonic sets TCP_NODELAY only on sockets it accepts itself. Without
        // it, Nagle holds back a watch event written after the stream's
        // headers until the client's delayed ACK, ~40 ms later.
        let incoming = futures::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| {
                if let Ok(c) = &conn {
                    if let Err(error) = c.set_nodelay(true) {
                        tracing::warn!(%error, "cannot set TCP_NODELAY on a client connection");
                    }
                }
                conn
            },
        );
        tracing::info!(%addr, "embedded etcd API serving");
        // Like every Drover gRPC server: the standard health service and
        // server reflection, so generic gRPC tools work against it.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<KvServer<kv::KvService>>().await;
        // Reflection in both forms: v1, and v1alpha that many tools
        // (Python's grpcio-reflection among them) still speak.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(drover_proto::ETCD_FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection = reflection_builder()
            .build_v1()
            .map_err(|e| EmbeddedError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection_builder()
            .build_v1alpha()
            .map_err(|e| EmbeddedError::Reflection(e.to_string()))?;
        let result = tonic::transport::Server::builder()
            .layer(local_users)
            .layer(tower_layer::layer_fn(metrics::CountRequests))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(
                KvServer::new(kv::KvService::new(Arc::clone(&shared)))
                    .max_decoding_message_size(TRANSPORT_LIMIT),
            )
            .add_service(
                WatchServer::new(watch::WatchService::new(Arc::clone(&shared)))
                    .max_decoding_message_size(MAX_GRPC_MESSAGE),
            )
            .add_service(LeaseServer::new(lease::LeaseService::new(Arc::clone(
                &shared,
            ))))
            .add_service(MaintenanceServer::new(kv::MaintenanceService::new(
                Arc::clone(&shared),
            )))
            .add_service(ClusterServer::new(kv::ClusterService::new(Arc::clone(
                &shared,
            ))))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
            .await
            .map_err(EmbeddedError::Serve);
        shared.shutdown.cancel();
        let _ = expiry.await;
        tracing::info!(%addr, "embedded etcd API stopped");
        result
    }
}

/// Stops the writer thread when dropped.
struct StopWriter(Arc<Shared>);

impl Drop for StopWriter {
    fn drop(&mut self) {
        self.0.shutdown.cancel();
        self.0.stop_writer();
    }
}
