//! A copy of one etcd key prefix kept current in memory: the loop the DNS
//! server's index (`drover_dns::watch`) and the scheduler's relay of the
//! service-discovery records to agents both run, written once here.
//!
//! [`Mirror`] loads the prefix with one (paged) range read at one revision
//! and hands it whole to
//! its [`Sink`] ([`Sink::load`]), then watches from the revision after
//! that read and hands over each watch response's events as one batch
//! ([`Sink::apply`]), so a sink can apply a response under one lock or
//! forward it as one message. When the watch breaks (etcd restarted, the
//! connection dropped) it watches again from the revision after the last
//! event it handed over: nothing is missed and nothing is handed twice,
//! and the sink is not reloaded. Only when etcd answers that this revision
//! has been compacted away does it load the prefix again. While etcd
//! cannot be reached the sink keeps what it has; the loop says so once in
//! the log (and again when etcd is back), retries with an exponential
//! backoff, and [`MirrorStatus`] tells whoever asks.
//!
//! A watch response carries a store revision in its header; a response
//! without events that is neither the watch's creation nor its
//! cancellation is a progress notification (asked for with
//! `progress_notify`), handed over as an empty batch: its revision is then
//! known complete, so a resume after a long quiet period does not replay
//! from far back.
//!
//! The prefix is absolute: it is not under the [`crate::Store`]'s own
//! prefix (`/skydns/` is shared with CoreDNS's etcd plugin, not Drover's).
//!
//! Known limit: `etcd-client` panics on an event type other than put or
//! delete, which etcd never sends.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchResponse};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// One change of a key under the prefix, in store order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// `key` was written with `value`.
    Put {
        /// The full key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// `key` was deleted.
    Delete {
        /// The full key.
        key: Vec<u8>,
    },
}

/// What a [`Mirror`] keeps current.
pub trait Sink: Send {
    /// The whole prefix as read at `revision`, as `(key, value)` pairs in
    /// key order: replaces everything the sink had.
    fn load(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64);

    /// One watch response's changes, in store order, which bring the copy
    /// to `revision`. Empty for a progress notification.
    fn apply(&mut self, changes: Vec<KeyChange>, revision: i64);
}

/// Why one round of the loop ended; the loop retries them all.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// An etcd call failed (unreachable, or an error status).
    #[error("etcd {op} of {prefix}: {source}")]
    Etcd {
        /// `range` or `watch`.
        op: &'static str,
        /// The mirrored prefix.
        prefix: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The revision to resume from has been compacted: load again.
    #[error(
        "etcd compacted the history up to revision {compacted}, past {wanted}: reloading {prefix}"
    )]
    Compacted {
        /// The mirrored prefix.
        prefix: String,
        /// The revision the watch wanted to start from.
        wanted: i64,
        /// The compaction point.
        compacted: i64,
    },
    /// etcd cancelled the watch for another reason.
    #[error("etcd cancelled the watch of {prefix}: {reason}")]
    Canceled {
        /// The mirrored prefix.
        prefix: String,
        /// etcd's reason.
        reason: String,
    },
    /// The watch stream ended.
    #[error("the etcd watch stream of {prefix} ended")]
    Closed {
        /// The mirrored prefix.
        prefix: String,
    },
}

/// What the loop knows of etcd, for status reports. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct MirrorStatus(Arc<StatusInner>);

#[derive(Debug, Default)]
struct StatusInner {
    connected: AtomicBool,
    loads: AtomicU64,
    revision: AtomicI64,
}

impl MirrorStatus {
    /// Whether a watch is established now.
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }

    /// How many times the prefix was loaded whole (1 after the start;
    /// more after compactions).
    pub fn loads(&self) -> u64 {
        self.0.loads.load(Ordering::Relaxed)
    }

    /// The store revision the sink reflects.
    pub fn revision(&self) -> i64 {
        self.0.revision.load(Ordering::Relaxed)
    }
}

/// The loop keeping a [`Sink`] equal to an etcd prefix.
pub struct Mirror<S> {
    client: Client,
    prefix: String,
    /// Names the copy in log lines ("the DNS index").
    what: &'static str,
    sink: S,
    status: MirrorStatus,
    min_backoff: Duration,
    max_backoff: Duration,
    backoff: Duration,
    /// Whether the log says etcd is unreachable (said once per outage).
    down_reported: bool,
}

impl<S> std::fmt::Debug for Mirror<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("prefix", &self.prefix)
            .field("what", &self.what)
            .field("status", &self.status)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl<S: Sink> Mirror<S> {
    /// Keeps `sink` (called `what` in the log) equal to `client`'s keys
    /// under the absolute `prefix`, retrying after 100 ms, doubling up to
    /// 5 s.
    pub fn new(client: Client, prefix: &str, what: &'static str, sink: S) -> Self {
        let min_backoff = Duration::from_millis(100);
        Self {
            client,
            prefix: prefix.to_owned(),
            what,
            sink,
            status: MirrorStatus::default(),
            min_backoff,
            max_backoff: Duration::from_secs(5),
            backoff: min_backoff,
            down_reported: false,
        }
    }

    /// Sets the retry backoff's first and largest waits.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self.backoff = min;
        self
    }

    /// The loop's status, shared.
    pub fn status(&self) -> MirrorStatus {
        self.status.clone()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut next: Option<i64> = None;
        loop {
            let ended = tokio::select! {
                ended = self.follow(&mut next) => ended,
                () = shutdown.cancelled() => return,
            };
            if let MirrorError::Compacted { .. } = ended {
                warn!(error = %ended, what = self.what, "reloading");
                next = None;
                continue;
            }
            self.lost(&ended);
            tokio::select! {
                () = tokio::time::sleep(self.backoff) => {}
                () = shutdown.cancelled() => return,
            }
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
    }

    /// Loads (when `next` is unknown), then follows the watch from `next`
    /// until it ends; `next` tracks the first revision not yet applied.
    async fn follow(&mut self, next: &mut Option<i64>) -> MirrorError {
        let from = match *next {
            Some(from) => from,
            None => match self.load().await {
                Ok(revision) => *next.insert(revision + 1),
                Err(e) => return e,
            },
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let mut stream = match self.client.watch(self.prefix.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(source) => return self.etcd_error("watch", source),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return MirrorError::Closed {
                        prefix: self.prefix.clone(),
                    }
                }
                Err(source) => return self.etcd_error("watch", source),
            };
            if response.compact_revision() > 0 {
                return MirrorError::Compacted {
                    prefix: self.prefix.clone(),
                    wanted: next.unwrap_or(from),
                    compacted: response.compact_revision(),
                };
            }
            if response.canceled() {
                return MirrorError::Canceled {
                    prefix: self.prefix.clone(),
                    reason: response.cancel_reason().to_owned(),
                };
            }
            if response.created() {
                self.found(from);
            }
            self.apply(&response, next);
        }
    }

    fn etcd_error(&self, op: &'static str, source: etcd_client::Error) -> MirrorError {
        MirrorError::Etcd {
            op,
            prefix: self.prefix.clone(),
            source,
        }
    }

    /// Reads the whole prefix and hands it to the sink; returns the read's
    /// revision.
    async fn load(&mut self) -> Result<i64, MirrorError> {
        let mut kv = self.client.kv_client();
        let (kvs, revision) =
            crate::range::range_prefix(&mut kv, self.prefix.as_bytes(), crate::range::LIST_PAGE)
                .await
                .map_err(|source| self.etcd_error("range", source))?;
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = kvs
            .into_iter()
            .map(|kv| {
                let (key, value) = kv.into_key_value();
                (key, value)
            })
            .collect();
        let keys = kvs.len();
        self.sink.load(kvs, revision);
        self.status.0.loads.fetch_add(1, Ordering::Relaxed);
        self.status.0.revision.store(revision, Ordering::Relaxed);
        info!(prefix = %self.prefix, what = self.what, revision, keys, "loaded from etcd");
        Ok(revision)
    }

    /// Hands a response's events to the sink as one batch; advances
    /// `next`.
    fn apply(&mut self, response: &WatchResponse, next: &mut Option<i64>) {
        let events = response.events();
        let progress = events.is_empty() && !response.created();
        let header = response.header().map(|h| h.revision());
        let mut changes = Vec::with_capacity(events.len());
        let mut last = None;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            changes.push(match event.event_type() {
                EventType::Put => KeyChange::Put {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                },
                EventType::Delete => KeyChange::Delete {
                    key: kv.key().to_vec(),
                },
            });
            last = Some(kv.mod_revision());
        }
        let Some(done) = last.or(header.filter(|_| progress)) else {
            return;
        };
        let count = changes.len();
        self.sink.apply(changes, done);
        *next = Some(next.unwrap_or(0).max(done + 1));
        self.status.0.revision.fetch_max(done, Ordering::Relaxed);
        debug!(
            what = self.what,
            revision = done,
            events = count,
            "applied etcd events"
        );
    }

    /// The watch is established (again).
    fn found(&mut self, from: i64) {
        self.backoff = self.min_backoff;
        self.status.0.connected.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.down_reported) {
            info!(prefix = %self.prefix, what = self.what, from, "etcd reachable again: watching");
        }
    }

    /// The watch broke: the sink keeps its last state.
    fn lost(&mut self, error: &MirrorError) {
        self.status.0.connected.store(false, Ordering::Relaxed);
        let revision = self.status.revision();
        if std::mem::replace(&mut self.down_reported, true) {
            debug!(%error, what = self.what, revision, retry_in = ?self.backoff, "etcd still unreachable");
        } else {
            warn!(%error, what = self.what, revision, retry_in = ?self.backoff,
                "etcd unreachable: keeping the last known state");
        }
    }
}
