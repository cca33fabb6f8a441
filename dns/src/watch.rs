//! The watch loop: it keeps the [`SharedIndex`] equal to etcd's `/skydns/`
//! prefix, so that no query ever reads etcd.
//!
//! It loads the prefix with one range read, replaces the index with what
//! it read, then watches from that read's revision + 1, applying each
//! watch response's events under one write lock. When the watch breaks
//! (etcd restarted, the connection dropped) it watches again from the
//! revision after the last event it applied: nothing is missed and
//! nothing is read twice, and the index is not rebuilt. Only when etcd
//! answers that this revision has been compacted away does it load the
//! prefix again. While etcd cannot be reached the index keeps its last
//! state, so the server keeps answering with it; the loop says so once
//! in the log (and again when etcd is back), retries with an exponential
//! backoff, and [`WatchStatus`] tells whoever asks.
//!
//! A watch response carries a store revision in its header; a response
//! without events that is neither the watch's creation nor its
//! cancellation is a progress notification (asked for with
//! `progress_notify`), and its revision is then known complete, so a
//! resume after a long quiet period does not replay from far back.
//!
//! Known limit: `etcd-client` panics on an event type other than put or
//! delete, which etcd never sends.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::index::{Event, Index, SharedIndex, PREFIX};

/// Why one round of the loop ended; the loop retries them all.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// An etcd call failed (unreachable, or an error status).
    #[error("etcd {op} of {prefix}: {source}")]
    Etcd {
        /// `range` or `watch`.
        op: &'static str,
        /// The watched prefix.
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
        /// The watched prefix.
        prefix: String,
        /// The revision the watch wanted to start from.
        wanted: i64,
        /// The compaction point.
        compacted: i64,
    },
    /// etcd cancelled the watch for another reason.
    #[error("etcd cancelled the watch of {prefix}: {reason}")]
    Canceled {
        /// The watched prefix.
        prefix: String,
        /// etcd's reason.
        reason: String,
    },
    /// The watch stream ended.
    #[error("the etcd watch stream of {prefix} ended")]
    Closed {
        /// The watched prefix.
        prefix: String,
    },
}

/// What the loop knows of etcd, for status reports. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct WatchStatus(Arc<StatusInner>);

#[derive(Debug, Default)]
struct StatusInner {
    connected: AtomicBool,
    loads: AtomicU64,
    revision: AtomicI64,
}

impl WatchStatus {
    /// Whether a watch is established now.
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }

    /// How many times the prefix was loaded whole (1 after the start;
    /// more after compactions).
    pub fn loads(&self) -> u64 {
        self.0.loads.load(Ordering::Relaxed)
    }

    /// The store revision the index reflects.
    pub fn revision(&self) -> i64 {
        self.0.revision.load(Ordering::Relaxed)
    }
}

/// The loop feeding an index from etcd.
pub struct Watch {
    client: Client,
    prefix: String,
    index: SharedIndex,
    status: WatchStatus,
    min_backoff: Duration,
    max_backoff: Duration,
    backoff: Duration,
    /// Whether the log says etcd is unreachable (said once per outage).
    down_reported: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("status", &self.status)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Feeds `index` from `client`'s [`PREFIX`], retrying after 100 ms,
    /// doubling up to 5 s.
    pub fn new(client: Client, index: SharedIndex) -> Self {
        let min_backoff = Duration::from_millis(100);
        Self {
            client,
            prefix: PREFIX.to_owned(),
            index,
            status: WatchStatus::default(),
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
    pub fn status(&self) -> WatchStatus {
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
            if let WatchError::Compacted { .. } = ended {
                warn!(error = %ended, "reloading the DNS index");
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
    async fn follow(&mut self, next: &mut Option<i64>) -> WatchError {
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
                    return WatchError::Closed {
                        prefix: self.prefix.clone(),
                    }
                }
                Err(source) => return self.etcd_error("watch", source),
            };
            if response.compact_revision() > 0 {
                return WatchError::Compacted {
                    prefix: self.prefix.clone(),
                    wanted: next.unwrap_or(from),
                    compacted: response.compact_revision(),
                };
            }
            if response.canceled() {
                return WatchError::Canceled {
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

    fn etcd_error(&self, op: &'static str, source: etcd_client::Error) -> WatchError {
        WatchError::Etcd {
            op,
            prefix: self.prefix.clone(),
            source,
        }
    }

    /// Reads the whole prefix into a new index and swaps it in; returns
    /// the read's revision.
    async fn load(&mut self) -> Result<i64, WatchError> {
        let options = GetOptions::new().with_prefix();
        let response = self
            .client
            .get(self.prefix.as_str(), Some(options))
            .await
            .map_err(|source| self.etcd_error("range", source))?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut index = Index::new();
        for kv in response.kvs() {
            let event = Event::Put {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
            };
            if let Err(error) = index.apply(&event) {
                warn!(%error, "ignoring a DNS record");
            }
        }
        index.set_revision(revision);
        let endpoints = index.len();
        self.index.replace(index);
        self.status.0.loads.fetch_add(1, Ordering::Relaxed);
        self.status.0.revision.store(revision, Ordering::Relaxed);
        info!(prefix = %self.prefix, revision, endpoints, "loaded the DNS index from etcd");
        Ok(revision)
    }

    /// Applies a response's events in one write; advances `next`.
    fn apply(&self, response: &WatchResponse, next: &mut Option<i64>) {
        let events = response.events();
        let progress = events.is_empty() && !response.created();
        let header = response.header().map(|h| h.revision());
        let applied = self.index.write(|index| {
            let mut last = None;
            for event in events {
                let Some(kv) = event.kv() else { continue };
                let change = match event.event_type() {
                    EventType::Put => Event::Put {
                        key: kv.key().to_vec(),
                        value: kv.value().to_vec(),
                    },
                    EventType::Delete => Event::Delete {
                        key: kv.key().to_vec(),
                    },
                };
                if let Err(error) = index.apply(&change) {
                    warn!(%error, "ignoring a DNS record");
                }
                last = Some(kv.mod_revision());
            }
            let done = last.or(header.filter(|_| progress))?;
            index.set_revision(index.revision().max(done));
            Some(done)
        });
        if let Some(done) = applied {
            *next = Some(next.unwrap_or(0).max(done + 1));
            self.status.0.revision.fetch_max(done, Ordering::Relaxed);
            debug!(
                revision = done,
                events = events.len(),
                "applied etcd events to the DNS index"
            );
        }
    }

    /// The watch is established (again).
    fn found(&mut self, from: i64) {
        self.backoff = self.min_backoff;
        self.status.0.connected.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.down_reported) {
            info!(prefix = %self.prefix, from, "etcd reachable again: watching for DNS records");
        }
    }

    /// The watch broke: the index keeps its last state.
    fn lost(&mut self, error: &WatchError) {
        self.status.0.connected.store(false, Ordering::Relaxed);
        let revision = self.status.revision();
        if std::mem::replace(&mut self.down_reported, true) {
            debug!(%error, revision, retry_in = ?self.backoff, "etcd still unreachable");
        } else {
            warn!(%error, revision, retry_in = ?self.backoff,
                "etcd unreachable: DNS answers from the last known state");
        }
    }
}
