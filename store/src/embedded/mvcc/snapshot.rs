//! The live state of the core as one byte string (the body of a snapshot
//! file) and back: keys with their revisions and versions, leases, the
//! current and compacted revisions, and the most recent revisions of
//! events, so that a watch resuming shortly before a restart still finds
//! them.
//!
//! Body layout (little-endian; `bytes` is a `u32` length then the bytes,
//! `KeyValue` and `Event` are etcd's own protobuf encodings):
//!
//! ```text
//! version: u8 = 1
//! rev: i64, compact_rev: i64, next_lease: i64
//! leases: u32 count, then (id: i64, ttl: i64)
//! kvs: u64 count, then bytes(KeyValue)       -- key order
//! history: u32 count, then (rev: i64, events: u32 count, then bytes(Event))
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use drover_proto::etcd::mvccpb::{Event, KeyValue};
use prost::Message;
use tokio::time::Instant;

use super::{Lease, Store, MAX_LEASE_TTL};
use crate::embedded::record::{put_bytes, DecodeError, Reader, Revision};

const VERSION: u8 = 1;
/// Most revisions of events a snapshot carries.
pub(crate) const SNAPSHOT_HISTORY: usize = 1_000;
/// Most key and value bytes of events a snapshot carries.
pub(crate) const SNAPSHOT_HISTORY_BYTES: usize = 16 << 20;

/// Why a snapshot body does not make a store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A field is malformed.
    #[error("undecodable snapshot: {0}")]
    Undecodable(#[from] DecodeError),
    /// A protobuf message inside does not decode.
    #[error("undecodable {what} in snapshot: {source}")]
    Proto {
        /// Which message.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// A version this build does not know.
    #[error("snapshot format version {0} is not supported")]
    Version(u8),
    /// The contents contradict each other.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
}

impl Store {
    /// The live state as a snapshot body.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.kvs.len() * 64);
        b.push(VERSION);
        for v in [self.rev, self.compact_rev, self.next_lease] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut leases: Vec<(&i64, &Lease)> = self.leases.iter().collect();
        leases.sort_unstable_by_key(|(id, _)| **id);
        b.extend_from_slice(&(leases.len() as u32).to_le_bytes());
        for (id, l) in leases {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&l.ttl.to_le_bytes());
        }
        b.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        let mut buf = Vec::new();
        for kv in self.kvs.values() {
            buf.clear();
            kv.encode(&mut buf).unwrap_or_default();
            put_bytes(&mut b, &buf);
        }
        let hist = self.snapshot_history();
        b.extend_from_slice(&(hist.len() as u32).to_le_bytes());
        for r in hist {
            b.extend_from_slice(&r.rev.to_le_bytes());
            b.extend_from_slice(&(r.events.len() as u32).to_le_bytes());
            for ev in &r.events {
                buf.clear();
                ev.encode(&mut buf).unwrap_or_default();
                put_bytes(&mut b, &buf);
            }
        }
        b
    }

    /// The newest revisions of history within the snapshot's budget, oldest
    /// first; the last revision is always among them when it is held.
    fn snapshot_history(&self) -> Vec<&Arc<Revision>> {
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for r in self.history.iter().rev() {
            if out.len() >= SNAPSHOT_HISTORY
                || (!out.is_empty() && bytes + r.bytes() > SNAPSHOT_HISTORY_BYTES)
            {
                break;
            }
            bytes += r.bytes();
            out.push(r);
        }
        out.reverse();
        out
    }

    /// The store a snapshot body describes. Leases restart with a full TTL
    /// from `now`; reads and watches below the oldest revision of history
    /// it carries are refused as compacted.
    pub fn from_snapshot(body: &[u8], now: Instant) -> Result<Self, SnapshotError> {
        let mut r = Reader::new(body);
        let version = r.u8()?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let (rev, compact_rev, next_lease) = (r.i64()?, r.i64()?, r.i64()?);
        let mut s = Store::new(next_lease);
        s.rev = rev;
        for _ in 0..r.u32()? {
            let (id, ttl) = (r.i64()?, r.i64()?);
            if !(1..=MAX_LEASE_TTL).contains(&ttl) || s.leases.contains_key(&id) {
                return Err(inconsistent(format!("lease {id} with TTL {ttl}")));
            }
            s.insert_lease(id, ttl, now);
        }
        let n = r.u64()?;
        let mut kvs = BTreeMap::new();
        for _ in 0..n {
            let kv = KeyValue::decode(r.slice()?).map_err(proto("KeyValue"))?;
            if kv.mod_revision > rev || kv.create_revision > kv.mod_revision {
                return Err(inconsistent(format!(
                    "key revisions {}..{} past revision {rev}",
                    kv.create_revision, kv.mod_revision
                )));
            }
            if kv.lease != 0 {
                let lease = s.leases.get_mut(&kv.lease);
                let lease = lease.ok_or_else(|| {
                    inconsistent(format!("key attached to unknown lease {}", kv.lease))
                })?;
                lease.keys.insert(kv.key.clone());
            }
            kvs.insert(kv.key.clone(), kv);
        }
        s.kvs = kvs;
        s.history = read_history(&mut r, rev)?;
        s.history_bytes = s.history.iter().map(|h| h.bytes()).sum();
        let oldest = s.history.front().map_or(rev, |h| h.rev);
        s.compact_rev = compact_rev.max(oldest);
        if r.pos != body.len() {
            return Err(DecodeError::TrailingBytes(body.len() - r.pos).into());
        }
        Ok(s)
    }
}

fn read_history(r: &mut Reader<'_>, rev: i64) -> Result<VecDeque<Arc<Revision>>, SnapshotError> {
    let mut out: VecDeque<Arc<Revision>> = VecDeque::new();
    for _ in 0..r.u32()? {
        let at = r.i64()?;
        if at > rev || out.back().is_some_and(|p| p.rev >= at) {
            return Err(inconsistent(format!("history revision {at} out of order")));
        }
        let mut events = Vec::new();
        for _ in 0..r.u32()? {
            events.push(Event::decode(r.slice()?).map_err(proto("Event"))?);
        }
        out.push_back(Arc::new(Revision { rev: at, events }));
    }
    Ok(out)
}

fn inconsistent(what: String) -> SnapshotError {
    SnapshotError::Inconsistent(what)
}

fn proto(what: &'static str) -> impl FnOnce(prost::DecodeError) -> SnapshotError {
    move |source| SnapshotError::Proto { what, source }
}

/// Keys attached to each lease, for tests comparing restored state.
#[cfg(test)]
pub(crate) fn lease_keys(s: &Store) -> std::collections::HashMap<i64, Vec<Vec<u8>>> {
    s.leases
        .iter()
        .map(|(id, l)| (*id, l.keys.iter().cloned().collect()))
        .collect()
}
