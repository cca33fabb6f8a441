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
//! - The watch loop never waits on an agent, and keeps no queue per agent:
//!   it appends each batch to one bounded log ([`log::ChangeLog`], at most
//!   [`LOG_BYTES`] in [`LOG_BATCHES`] batches), shared by every feed, and
//!   bumps a counter the feeds watch. Each feed remembers only the last
//!   batch it sent. When it may send (its agent's stream took its previous
//!   DNS messages, [`pace`], and it has not sent in the last
//!   [`FEED_INTERVAL`]), it sends every batch since then coalesced
//!   (one record per key, at most [`CHUNK_BYTES`] per message), or, when
//!   the log no longer goes back that far, a snapshot. A snapshot is built
//!   once and shared by every feed that needs one while the log still
//!   covers it (the feed then catches up from where it was taken), so a
//!   thousand agents joining make a few snapshots, not a thousand. Nothing
//!   is lost or applied twice: a snapshot holds every batch up to its
//!   place in the log, and the feed goes on from there.
//! - What a slow agent costs the scheduler is thus bounded: its place in
//!   the log, and at most [`pace::IN_FLIGHT`] messages on its stream, not a
//!   queue that grows with how long it has been slow; and what each agent
//!   is sent grows with the records (a snapshot, then each change once, or
//!   fewer when coalesced), not with the number of batches.
//! - Before the first load (etcd unreachable since this scheduler started)
//!   no snapshot is sent: an empty one would wipe the agent's last known
//!   records. A re-list after a compaction is sent as the difference with
//!   the previous copy, one plain batch, not as a reset to every agent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_store::mirror::{KeyChange, Sink};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::registry::Outbound;
use crate::sync::lock;

mod log;
pub mod pace;

use log::{CatchUp, ChangeLog};
use pace::Slot;
pub use pace::{Pace, Paced};

/// Where the SkyDNS layout lives in the store.
pub const PREFIX: &str = "/skydns/";

/// Most bytes of records the shared change log keeps (see [`log`]).
pub const LOG_BYTES: usize = 1 << 20;

/// Most batches the shared change log keeps.
pub const LOG_BATCHES: usize = 4096;

/// How long a feed that has just caught up waits before it reads the log
/// again: whatever changed meanwhile goes in one message.
///
/// Why: every node's registration adds its `node/<id>` record, and every
/// connected agent holds the whole zone, so with N agents connected each
/// join would otherwise wake N feeds and encode N one-record messages:
/// N joins cost N x N wakeups, which kept 10,000 nodes from registering in
/// 15 minutes. With the interval a feed sends at most one message (or one
/// batch's chunks) per interval however fast nodes join, each carrying
/// every change since. A feed that was idle sends the first change at
/// once, so a lone change is not delayed; a record may reach an agent up
/// to this much later during a burst, well under a DNS client's retry.
pub const FEED_INTERVAL: Duration = Duration::from_millis(250);

/// Largest sum of key and value bytes in one `DnsUpdate` message (a record
/// larger than this goes alone): well under tonic's 4 MiB message limit,
/// and small enough that [`pace::IN_FLIGHT`] of them per agent stream
/// stays cheap with thousands of agents.
pub const CHUNK_BYTES: usize = 64 * 1024;

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

/// A snapshot as sent: every record, chunked, and the log position it
/// reflects. Shared by the feeds that need one while the log covers it.
#[derive(Debug)]
struct Snapshot {
    seq: u64,
    chunks: Vec<pb::DnsUpdate>,
}

struct State {
    /// Every record under [`PREFIX`], by key.
    records: BTreeMap<String, Vec<u8>>,
    /// The store revision `records` reflects.
    revision: i64,
    /// Whether the prefix has been read once.
    loaded: bool,
    /// The recent batches, shared by every feed.
    log: ChangeLog,
    /// The last snapshot built, reused while the log covers it.
    snapshot: Option<Arc<Snapshot>>,
    /// How many snapshots were built.
    snapshots_built: u64,
}

/// The relay's copy of the records and its feeds. See the module docs.
pub struct DnsRelay {
    state: Mutex<State>,
    /// Bumped (under the state's lock) whenever a feed may have something
    /// new to send; every feed that is not pausing watches it.
    changed: watch::Sender<u64>,
    /// How long a feed pauses after it caught up ([`FEED_INTERVAL`]).
    interval: Duration,
}

impl Default for DnsRelay {
    fn default() -> Self {
        DnsRelay::with_interval(FEED_INTERVAL)
    }
}

impl DnsRelay {
    /// A relay whose feeds pause `interval` after each message that brought
    /// them up to date ([`FEED_INTERVAL`] by default; zero sends every
    /// batch as soon as the agent's stream has room).
    pub fn with_interval(interval: Duration) -> Self {
        DnsRelay {
            interval,
            state: Mutex::new(State {
                records: BTreeMap::new(),
                revision: 0,
                loaded: false,
                log: ChangeLog::new(LOG_BYTES, LOG_BATCHES),
                snapshot: None,
                snapshots_built: 0,
            }),
            changed: watch::Sender::new(0),
        }
    }
}

impl std::fmt::Debug for DnsRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("DnsRelay")
            .field("records", &state.records.len())
            .field("revision", &state.revision)
            .field("log_head", &state.log.head())
            .field("snapshots_built", &state.snapshots_built)
            .field("feeds", &self.changed.receiver_count())
            .field("interval", &self.interval)
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

/// What a feed sends next.
#[derive(Debug)]
enum Next {
    /// Nothing yet: wait for a change.
    Wait,
    /// Every record, then catch up from its position; `current` when the
    /// log has nothing after it.
    Snapshot {
        snapshot: Arc<Snapshot>,
        current: bool,
    },
    /// The batches after the feed's position up to `upto`, coalesced;
    /// `current` when `upto` is the log's head.
    Changes {
        upto: u64,
        revision: i64,
        records: Vec<pb::DnsRecord>,
        current: bool,
    },
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
            self.changed.send_modify(|n| *n += 1);
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
        self.fan_out(&mut state, revision, records);
    }

    /// One watch response: applied to the copy and logged for every feed.
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
        self.fan_out(&mut state, revision, records);
    }

    /// Logs a batch (nothing when empty) and wakes the feeds.
    fn fan_out(&self, state: &mut State, revision: i64, records: Vec<pb::DnsRecord>) {
        if records.is_empty() {
            return;
        }
        state.log.push(revision, records);
        self.changed.send_modify(|n| *n += 1);
    }

    /// What a feed that has sent everything up to `at` (`None`: nothing
    /// yet) sends next. Nothing before the store was read once: an empty
    /// snapshot would wipe the agent's last known records.
    fn next(&self, at: Option<u64>) -> Next {
        let mut state = lock(&self.state);
        if !state.loaded {
            return Next::Wait;
        }
        if let Some(seq) = at {
            match state.log.since(seq, CHUNK_BYTES) {
                CatchUp::Current => return Next::Wait,
                CatchUp::Changes {
                    upto,
                    revision,
                    records,
                } => {
                    return Next::Changes {
                        upto,
                        revision,
                        records,
                        current: upto == state.log.head(),
                    }
                }
                CatchUp::Behind => {}
            }
        }
        let floor = state.log.floor();
        let head = state.log.head();
        if let Some(s) = state.snapshot.as_ref().filter(|s| s.seq >= floor) {
            return Next::Snapshot {
                current: s.seq == head,
                snapshot: s.clone(),
            };
        }
        let records = state.records.iter().map(|(k, v)| put(k, v)).collect();
        let snapshot = Arc::new(Snapshot {
            seq: state.log.head(),
            chunks: chunks(true, state.revision, records),
        });
        state.snapshot = Some(snapshot.clone());
        state.snapshots_built += 1;
        tracing::debug!(
            seq = snapshot.seq,
            revision = state.revision,
            records = state.records.len(),
            "built a DNS snapshot"
        );
        Next::Snapshot {
            snapshot,
            current: true,
        }
    }
}

/// Queues one DNS message on the agent's stream in `slot`; false once the
/// stream is closed.
async fn send(tx: &Outbound, slot: Slot<'_>, update: pb::DnsUpdate) -> bool {
    let msg = pb::SchedulerMessage {
        msg: Some(pb::scheduler_message::Msg::DnsUpdate(update)),
    };
    if tx.send(Ok(msg)).await.is_err() {
        return false;
    }
    slot.used();
    true
}

/// Waits for a pace slot; `None` once the stream or session ended.
async fn slot<'a>(pace: &'a Pace, tx: &Outbound, ended: &CancellationToken) -> Option<Slot<'a>> {
    tokio::select! {
        s = pace.slot() => Some(s),
        () = tx.closed() => None,
        () = ended.cancelled() => None,
    }
}

/// Sends `updates` (one batch), the first in `first`, the others each in
/// a slot of its own; false once the stream or session ended.
async fn send_all(
    tx: &Outbound,
    pace: &Pace,
    ended: &CancellationToken,
    first: Slot<'_>,
    updates: impl IntoIterator<Item = pb::DnsUpdate>,
) -> bool {
    let mut first = Some(first);
    for u in updates {
        let s = match first.take() {
            Some(s) => s,
            None => match slot(pace, tx, ended).await {
                Some(s) => s,
                None => return false,
            },
        };
        if !send(tx, s, u).await {
            return false;
        }
    }
    true
}

/// Waits `interval` (after a message that brought the feed up to date);
/// false once the stream or session ended.
async fn pause(interval: Duration, tx: &Outbound, ended: &CancellationToken) -> bool {
    if interval.is_zero() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(interval) => true,
        () = tx.closed() => false,
        () = ended.cancelled() => false,
    }
}

/// One agent's feed, from right after its `Registered` until its stream
/// or session ends: a snapshot, then what changed each time its stream
/// has room ([`Pace`]), at most once per the relay's interval
/// ([`FEED_INTERVAL`]); a snapshot again whenever the log no longer goes
/// back to where it stands.
///
/// While it pauses a feed does not watch the relay, so a change wakes
/// only the feeds that were idle, not every feed once per change.
pub(crate) async fn feed(
    relay: Arc<DnsRelay>,
    node_id: String,
    tx: Outbound,
    pace: Arc<Pace>,
    ended: CancellationToken,
) {
    let mut changed = relay.changed.subscribe();
    let mut at: Option<u64> = None;
    loop {
        // Room on the stream first: what changes meanwhile goes in the
        // same message.
        let Some(first) = slot(&pace, &tx, &ended).await else {
            return;
        };
        changed.borrow_and_update();
        let current = match relay.next(at) {
            Next::Wait => {
                drop(first);
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                    () = ended.cancelled() => return,
                }
                continue;
            }
            Next::Snapshot { snapshot, current } => {
                let records: usize = snapshot.chunks.iter().map(|c| c.records.len()).sum();
                tracing::debug!(node_id = %node_id, seq = snapshot.seq, records, "sending the DNS records");
                let chunks = snapshot.chunks.iter().cloned();
                if !send_all(&tx, &pace, &ended, first, chunks).await {
                    return;
                }
                at = Some(snapshot.seq);
                current
            }
            Next::Changes {
                upto,
                revision,
                records,
                current,
            } => {
                if !send_all(&tx, &pace, &ended, first, chunks(false, revision, records)).await {
                    return;
                }
                at = Some(upto);
                current
            }
        };
        // Caught up: let the next changes gather. A feed still behind
        // (a chunk's worth at a time, or from an older snapshot) goes on.
        if current && !pause(relay.interval, &tx, &ended).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
