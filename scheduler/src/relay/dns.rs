//! The service-discovery records (`/skydns/`), relayed from the store to
//! every connected agent, whose DNS server answers from them.
//!
//! Why a relay rather than a read-only watch of etcd from every node: the
//! agents then need no etcd credentials or network path to etcd at all (a
//! node holds only its scheduler certificate, and a compromised node
//! cannot read the rest of the cluster's state), and etcd carries one watch
//! of the prefix, this scheduler's, instead of one per node: with a
//! thousand nodes that is a thousand fewer watchers and event fan-outs in
//! etcd's process, which is the one piece the cluster cannot scale out.
//! The cost is one more hop (etcd → scheduler → agent, on a stream the
//! agent holds anyway) and the fan-out done here, where each agent has its
//! own bounded queue.
//!
//! The flow:
//!
//! - One [`drover_store::mirror::Mirror`] of [`PREFIX`] (absolute, outside
//!   the store's `/drover/`) feeds the relay's copy of the records: a full
//!   load at the start, then one batch per watch response, resumed after a
//!   broken watch from the next revision, re-listed after a compaction.
//! - Each agent stream gets a feed task right after `Registered`. Its first
//!   message is a snapshot of every record (`DnsUpdate.reset`), then every
//!   batch as it arrives, in store order. A batch larger than
//!   [`CHUNK_BYTES`] goes as consecutive chunks marked `more` but the last
//!   ([`chunks`]); the agent applies a batch only once whole.
//! - The watch loop never waits on an agent: it hands each batch (shared,
//!   not copied) to every feed's queue of [`QUEUE`] batches with
//!   `try_send`. A feed whose queue is full is marked for a resync and
//!   gets no more batches; its task then drops what it had queued and
//!   sends a fresh snapshot, taken under the same lock the batches are
//!   made under, so nothing is lost or applied twice: everything queued
//!   before the snapshot is in it, everything after is newer.
//! - Before the first load (etcd unreachable since this scheduler started)
//!   no snapshot is sent: an empty one would wipe the agent's last known
//!   records. A re-list after a compaction is sent as the difference with
//!   the previous copy, one plain batch, not as a reset to every agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use drover_proto::v1 as pb;
use drover_store::mirror::{KeyChange, Sink};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::registry::Outbound;
use crate::sync::lock;

/// Where the SkyDNS layout lives in the store.
pub const PREFIX: &str = "/skydns/";

/// Batches queued per agent before it is resynchronised with a snapshot.
pub const QUEUE: usize = 128;

/// Largest sum of key and value bytes in one `DnsUpdate` message (a record
/// larger than this goes alone): well under tonic's 4 MiB message limit.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Bytes a record adds to a message, roughly (key, value, framing).
fn record_size(r: &pb::DnsRecord) -> usize {
    r.key.len() + r.value.len() + 8
}

/// `records` as the messages of one batch: chunks of at most
/// [`CHUNK_BYTES`] (one record over it alone), each with `reset` and
/// `revision`, all but the last with `more`. A reset always yields a
/// message, even with no record (it empties the agent's copy); other
/// batches yield none when empty.
pub fn chunks(reset: bool, revision: i64, records: Vec<pb::DnsRecord>) -> Vec<pb::DnsUpdate> {
    let mut out: Vec<pb::DnsUpdate> = Vec::new();
    let mut current: Vec<pb::DnsRecord> = Vec::new();
    let mut size = 0;
    for r in records {
        let n = record_size(&r);
        if !current.is_empty() && size + n > CHUNK_BYTES {
            out.push(update(reset, revision, std::mem::take(&mut current)));
            size = 0;
        }
        size += n;
        current.push(r);
    }
    if !current.is_empty() || (reset && out.is_empty()) {
        out.push(update(reset, revision, current));
    }
    let last = out.len().saturating_sub(1);
    for (i, u) in out.iter_mut().enumerate() {
        u.more = i < last;
    }
    out
}

fn update(reset: bool, revision: i64, records: Vec<pb::DnsRecord>) -> pb::DnsUpdate {
    pb::DnsUpdate {
        reset,
        revision,
        records,
        more: false,
    }
}

fn put(key: &str, value: &[u8]) -> pb::DnsRecord {
    pb::DnsRecord {
        key: key.to_owned(),
        value: value.to_vec(),
        deleted: false,
    }
}

fn deleted(key: &str) -> pb::DnsRecord {
    pb::DnsRecord {
        key: key.to_owned(),
        value: Vec::new(),
        deleted: true,
    }
}

/// One batch of changes, shared by every feed's queue.
#[derive(Debug)]
struct Batch {
    revision: i64,
    records: Vec<pb::DnsRecord>,
}

/// A connected agent's place in the fan-out.
struct Feed {
    node_id: String,
    tx: mpsc::Sender<Arc<Batch>>,
    /// The feed must send a snapshot before anything else; no batch is
    /// queued for it meanwhile.
    resync: bool,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Every record under [`PREFIX`], by key.
    records: BTreeMap<String, Vec<u8>>,
    /// The store revision `records` reflects.
    revision: i64,
    /// Whether the prefix has been read once.
    loaded: bool,
    feeds: HashMap<u64, Feed>,
}

/// The relay's copy of the records and its feeds. See the module docs.
#[derive(Default)]
pub struct DnsRelay {
    state: Mutex<State>,
    next_feed: AtomicU64,
}

impl std::fmt::Debug for DnsRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("DnsRelay")
            .field("records", &state.records.len())
            .field("revision", &state.revision)
            .field("feeds", &state.feeds.len())
            .finish()
    }
}

/// The relay as the mirror's [`Sink`].
#[derive(Debug, Clone)]
pub struct RelaySink(pub Arc<DnsRelay>);

impl Sink for RelaySink {
    fn load(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64) {
        self.0.load(kvs, revision);
    }

    fn apply(&mut self, changes: Vec<KeyChange>, revision: i64) {
        self.0.apply(changes, revision);
    }
}

/// A key as the agents get it; `None` (and a warning) when not UTF-8,
/// which no DNS name under the layout can be.
fn key_text(key: Vec<u8>) -> Option<String> {
    String::from_utf8(key)
        .inspect_err(|e| {
            tracing::warn!(key = %String::from_utf8_lossy(e.as_bytes()), "DNS record key is not UTF-8; not relayed");
        })
        .ok()
}

impl DnsRelay {
    /// How many records the relay holds, and the revision they reflect.
    #[cfg(test)]
    fn size(&self) -> (usize, i64) {
        let state = lock(&self.state);
        (state.records.len(), state.revision)
    }

    /// A full read of the prefix: the first one makes the relay ready and
    /// every feed sends its snapshot; a later one (after a compaction) is
    /// sent as the difference with the copy it replaces.
    fn load(&self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64) {
        let new: BTreeMap<String, Vec<u8>> = kvs
            .into_iter()
            .filter_map(|(k, v)| Some((key_text(k)?, v)))
            .collect();
        let mut state = lock(&self.state);
        let old = std::mem::replace(&mut state.records, new);
        state.revision = revision;
        if !std::mem::replace(&mut state.loaded, true) {
            for feed in state.feeds.values() {
                feed.wake.notify_one();
            }
            return;
        }
        let mut records: Vec<pb::DnsRecord> = old
            .keys()
            .filter(|k| !state.records.contains_key(*k))
            .map(|k| deleted(k))
            .collect();
        records.extend(
            state
                .records
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| put(k, v)),
        );
        fan_out(&mut state, Batch { revision, records });
    }

    /// One watch response: applied to the copy and queued for every feed.
    fn apply(&self, changes: Vec<KeyChange>, revision: i64) {
        let mut state = lock(&self.state);
        let mut records = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                KeyChange::Put { key, value } => {
                    let Some(key) = key_text(key) else { continue };
                    records.push(put(&key, &value));
                    state.records.insert(key, value);
                }
                KeyChange::Delete { key } => {
                    let Some(key) = key_text(key) else { continue };
                    state.records.remove(&key);
                    records.push(deleted(&key));
                }
            }
        }
        state.revision = state.revision.max(revision);
        fan_out(&mut state, Batch { revision, records });
    }

    /// Joins the fan-out; the feed starts with a snapshot.
    fn subscribe(&self, node_id: &str) -> Subscription {
        let id = self.next_feed.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        wake.notify_one();
        lock(&self.state).feeds.insert(
            id,
            Feed {
                node_id: node_id.to_owned(),
                tx,
                resync: true,
                wake: wake.clone(),
            },
        );
        Subscription { id, rx, wake }
    }

    /// If the feed needs one and the relay has read the store: the
    /// snapshot (revision, every record), with the feed's queue emptied and
    /// its resync cleared under the same lock.
    fn snapshot(&self, sub: &mut Subscription) -> Option<(i64, Vec<pb::DnsRecord>)> {
        let mut state = lock(&self.state);
        if !state.loaded || !state.feeds.get(&sub.id).is_some_and(|f| f.resync) {
            return None;
        }
        while sub.rx.try_recv().is_ok() {}
        if let Some(feed) = state.feeds.get_mut(&sub.id) {
            feed.resync = false;
        }
        let records = state.records.iter().map(|(k, v)| put(k, v)).collect();
        Some((state.revision, records))
    }

    fn unsubscribe(&self, id: u64) {
        lock(&self.state).feeds.remove(&id);
    }
}

/// Queues `batch` for every feed not waiting for a snapshot; a full queue
/// marks its feed for one.
fn fan_out(state: &mut State, batch: Batch) {
    if batch.records.is_empty() {
        return;
    }
    let batch = Arc::new(batch);
    state.feeds.retain(|_, feed| {
        if feed.resync {
            return true;
        }
        match feed.tx.try_send(batch.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(node_id = %feed.node_id, queued = QUEUE, revision = batch.revision,
                    "agent fell behind the DNS records; it will get a fresh snapshot");
                feed.resync = true;
                feed.wake.notify_one();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

/// A feed's end of the fan-out.
struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Arc<Batch>>,
    wake: Arc<Notify>,
}

/// Leaves the fan-out when the feed task ends, however it ends.
struct Leave<'a>(&'a DnsRelay, u64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.unsubscribe(self.1);
    }
}

/// Sends `updates` down the agent's stream; false once it is closed.
async fn send(tx: &Outbound, updates: Vec<pb::DnsUpdate>) -> bool {
    for u in updates {
        let msg = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::DnsUpdate(u)),
        };
        if tx.send(Ok(msg)).await.is_err() {
            return false;
        }
    }
    true
}

/// One agent's feed, from right after its `Registered` until its stream
/// or session ends: a snapshot, then every batch; a new snapshot whenever
/// it fell behind.
pub(crate) async fn feed(
    relay: Arc<DnsRelay>,
    node_id: String,
    tx: Outbound,
    ended: CancellationToken,
) {
    let mut sub = relay.subscribe(&node_id);
    let _leave = Leave(&relay, sub.id);
    loop {
        if let Some((revision, records)) = relay.snapshot(&mut sub) {
            tracing::debug!(node_id = %node_id, revision, records = records.len(), "sending the DNS records");
            if !send(&tx, chunks(true, revision, records)).await {
                return;
            }
            continue;
        }
        let batch = tokio::select! {
            b = sub.rx.recv() => b,
            () = sub.wake.notified() => continue,
            () = tx.closed() => return,
            () = ended.cancelled() => return,
        };
        let Some(batch) = batch else { return };
        if !send(&tx, chunks(false, batch.revision, batch.records.clone())).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
