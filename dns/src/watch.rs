//! The watch loop: it keeps the [`SharedIndex`] equal to etcd's `/skydns/`
//! prefix, so that no query ever reads etcd.
//!
//! The loop itself (load, watch from the read's revision + 1, resume after
//! a broken watch from the revision after the last applied event, reload
//! only after a compaction, keep the last state while etcd is unreachable
//! and say so once in the log) is [`drover_store::mirror::Mirror`], which
//! the scheduler's relay of these records to agents runs as well. Here is
//! only what it feeds: a full load becomes a new index swapped in whole
//! ([`Index::load`]), and each watch response's events are applied under
//! one write lock, so a reader never sees half a response.

use std::time::Duration;

use drover_store::mirror::{KeyChange, Mirror, Sink};
use etcd_client::Client;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::index::{Event, Index, SharedIndex, PREFIX};

/// What the loop knows of etcd (connected, loads, revision).
pub use drover_store::mirror::MirrorStatus as WatchStatus;

/// Why one round of the loop ended; the loop retries them all.
pub use drover_store::mirror::MirrorError as WatchError;

/// The loop feeding an index from etcd.
#[derive(Debug)]
pub struct Watch {
    mirror: Mirror<IndexSink>,
}

/// The index as a [`Sink`] of the mirror.
struct IndexSink(SharedIndex);

impl Sink for IndexSink {
    fn load(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64) {
        let events = kvs
            .into_iter()
            .map(|(key, value)| Event::Put { key, value });
        self.0.replace(Index::load(events, revision));
    }

    fn apply(&mut self, changes: Vec<KeyChange>, revision: i64) {
        self.0.write(|index| {
            for change in changes {
                let event = match change {
                    KeyChange::Put { key, value } => Event::Put { key, value },
                    KeyChange::Delete { key } => Event::Delete { key },
                };
                if let Err(error) = index.apply(&event) {
                    warn!(%error, "ignoring a DNS record");
                }
            }
            index.set_revision(index.revision().max(revision));
        });
    }
}

impl Watch {
    /// Feeds `index` from `client`'s [`PREFIX`], retrying after 100 ms,
    /// doubling up to 5 s.
    pub fn new(client: Client, index: SharedIndex) -> Self {
        Self {
            mirror: Mirror::new(client, PREFIX, "the DNS index", IndexSink(index)),
        }
    }

    /// Sets the retry backoff's first and largest waits.
    pub fn with_backoff(self, min: Duration, max: Duration) -> Self {
        Self {
            mirror: self.mirror.with_backoff(min, max),
        }
    }

    /// The loop's status, shared.
    pub fn status(&self) -> WatchStatus {
        self.mirror.status()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        self.mirror.run(shutdown).await;
    }
}
