//! The MVCC core: current key space, a bounded event history, and leases.
//!
//! No I/O and no clock of its own: callers pass `now`, and every write
//! returns the [`Record`] that must be made durable before it is
//! acknowledged. The core speaks etcd's own wire types (`mvccpb`,
//! `etcdserverpb`) because the embedded server *is* the etcd API: there is
//! no separate domain model to convert into.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use drover_proto::etcd::etcdserverpb::{
    range_request, CompactionRequest, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse,
};
use drover_proto::etcd::mvccpb::{event::EventType, Event, KeyValue};
use tokio::time::{Duration, Instant};

use super::record::{Mutation, Record, Revision};

pub(crate) mod snapshot;
mod txn;

/// How many revisions of events are kept for historical reads and watches.
pub(crate) const HISTORY_LIMIT: usize = 10_000;
/// Key and value bytes the history may hold; older revisions are dropped
/// (compacted) first, so large values cannot pin gigabytes of memory.
pub(crate) const HISTORY_BYTES: usize = 256 << 20;
/// etcd's largest accepted lease TTL, in seconds.
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's smallest lease TTL with its default timing: 1.5 × the 1 s
/// election timeout, rounded up. Shorter requests are raised to it.
pub(crate) const MIN_LEASE_TTL: i64 = 2;
/// etcd's `--max-txn-ops` default.
pub(crate) const MAX_TXN_OPS: usize = 128;
/// etcd's `--max-request-bytes` default (1.5 MiB).
pub(crate) const MAX_REQUEST_BYTES: usize = 1_572_864;

/// A request the core refuses; mapped to etcd's gRPC status at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The revision asked for is older than the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for has not been written yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A lease id that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A TTL above [`MAX_LEASE_TTL`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// Grant with an id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// An empty key.
    #[error("etcdserver: key is not provided")]
    KeyNotProvided,
    /// More than [`MAX_TXN_OPS`] operations in one branch.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
}

/// Why a durable record does not apply to the state replayed so far: the
/// log is damaged or was not written by this store. Kept apart from
/// [`StoreError`], which holds refusals of requests and maps one to one to
/// etcd's gRPC statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A lease id granted a second time.
    #[error("lease {id} granted twice")]
    LeaseGrantedTwice {
        /// The lease.
        id: i64,
    },
    /// A lease granted with a TTL outside `1..=MAX_LEASE_TTL`.
    #[error("lease {id} has TTL {ttl}")]
    LeaseTtl {
        /// The lease.
        id: i64,
        /// The TTL in seconds.
        ttl: i64,
    },
    /// A revoke of a lease that was never granted.
    #[error("revoke of unknown lease {id}")]
    UnknownLease {
        /// The lease.
        id: i64,
    },
    /// A compaction beyond the current revision.
    #[error("compaction to future revision {rev}")]
    FutureCompaction {
        /// The compaction revision.
        rev: i64,
    },
    /// A revision that does not follow the previous one.
    #[error("revision {rev} follows revision {current}")]
    RevisionGap {
        /// The record's revision.
        rev: i64,
        /// The revision replayed last.
        current: i64,
    },
    /// A revision without any write.
    #[error("revision {rev} has no writes")]
    EmptyRevision {
        /// The record's revision.
        rev: i64,
    },
    /// A log that follows a newer snapshot than the one present.
    #[error("log follows snapshot generation {log} but the snapshot is generation {snapshot}")]
    LogAhead {
        /// The log's generation.
        log: u64,
        /// The snapshot's generation (0: none).
        snapshot: u64,
    },
    /// A log-start record after the first record.
    #[error("log-start record inside the log")]
    MisplacedLogStart,
    /// A revision that deletes a key that does not exist.
    #[error("revision {rev} deletes absent key")]
    DeleteOfAbsentKey {
        /// The record's revision.
        rev: i64,
    },
}

/// A live lease.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Granted TTL in seconds.
    pub ttl: i64,
    pub deadline: Instant,
    pub keys: BTreeSet<Vec<u8>>,
}

/// The outcome of a write: the response, the record to persist (none when
/// nothing changed) and the events to publish (none when no revision was
/// written).
#[derive(Debug)]
pub(crate) struct Applied<T> {
    pub out: T,
    pub record: Option<Record>,
    pub published: Option<Arc<Revision>>,
}

/// Writes accumulated for the revision being built.
struct Pending {
    rev: i64,
    events: Vec<Event>,
    muts: Vec<Mutation>,
}

/// The key space, its history and the leases.
#[derive(Debug)]
pub(crate) struct Store {
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    rev: i64,
    compact_rev: i64,
    history: VecDeque<Arc<Revision>>,
    history_bytes: usize,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
}

/// Whether `key` lies in etcd's range `[start, end)`: empty `end` is the
/// single key `start`, `"\0"` means every key `>= start`.
pub(crate) fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl Store {
    /// An empty store at revision 1, like a fresh etcd.
    pub fn new(lease_seed: i64) -> Self {
        Self {
            kvs: BTreeMap::new(),
            rev: 1,
            compact_rev: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            leases: HashMap::new(),
            next_lease: lease_seed.max(1),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The compacted revision: reads and watches below it are refused.
    #[cfg(test)]
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    /// Number of live keys.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    /// Number of live keys.
    pub fn key_count(&self) -> usize {
        self.kvs.len()
    }

    fn keys_in<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a KeyValue)> + 'a> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        match end {
            [] => Box::new(self.kvs.get_key_value(start).into_iter()),
            [0] => Box::new(self.kvs.range::<[u8], _>((Included(start), Unbounded))),
            _ if end <= start => Box::new(std::iter::empty()),
            _ => Box::new(self.kvs.range::<[u8], _>((Included(start), Excluded(end)))),
        }
    }

    /// Serves a Range, from history when `revision` is in the past.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        let at = self.check_read_revision(req.revision)?;
        let mut kvs: Vec<KeyValue> = if at == self.rev {
            self.keys_in(&req.key, &req.range_end)
                .map(|(_, kv)| kv.clone())
                .collect()
        } else {
            let mut view: BTreeMap<Vec<u8>, KeyValue> = self
                .keys_in(&req.key, &req.range_end)
                .map(|(k, kv)| (k.clone(), kv.clone()))
                .collect();
            for r in self.history.iter().rev().take_while(|r| r.rev > at) {
                for ev in r.events.iter().rev() {
                    let Some(kv) = &ev.kv else { continue };
                    if !in_range(&kv.key, &req.key, &req.range_end) {
                        continue;
                    }
                    match &ev.prev_kv {
                        Some(prev) => view.insert(kv.key.clone(), prev.clone()),
                        None => view.remove(&kv.key),
                    };
                }
            }
            view.into_values().collect()
        };
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        sort_kvs(&mut kvs, req.sort_order, req.sort_target);
        let count = kvs.len() as i64;
        let mut more = false;
        if req.limit > 0 && count > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.count_only {
            kvs.clear();
        } else if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    fn check_read_revision(&self, revision: i64) -> Result<i64, StoreError> {
        if revision <= 0 {
            Ok(self.rev)
        } else if revision > self.rev {
            Err(StoreError::FutureRevision)
        } else if revision < self.compact_rev {
            Err(StoreError::Compacted)
        } else {
            Ok(revision)
        }
    }

    fn pending(&self) -> Pending {
        Pending {
            rev: self.rev + 1,
            events: Vec::new(),
            muts: Vec::new(),
        }
    }

    fn commit<T>(&mut self, p: Pending, out: T) -> Applied<T> {
        if p.muts.is_empty() {
            return Applied {
                out,
                record: None,
                published: None,
            };
        }
        let published = self.push_revision(p.rev, p.events);
        Applied {
            out,
            record: Some(Record::Write {
                rev: p.rev,
                muts: p.muts,
            }),
            published: Some(published),
        }
    }

    fn push_revision(&mut self, rev: i64, events: Vec<Event>) -> Arc<Revision> {
        self.rev = rev;
        let r = Arc::new(Revision { rev, events });
        self.history_bytes += r.bytes();
        self.history.push_back(Arc::clone(&r));
        while self.history.len() > HISTORY_LIMIT
            || (self.history_bytes > HISTORY_BYTES && self.history.len() > 1)
        {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= old.bytes();
                self.compact_rev = self.compact_rev.max(old.rev + 1);
            }
        }
        r
    }

    fn apply_put(
        &mut self,
        p: &mut Pending,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    ) -> Option<KeyValue> {
        let prev = self.kvs.get(&key).cloned();
        if let Some(old) = &prev {
            if old.lease != 0 && old.lease != lease {
                if let Some(l) = self.leases.get_mut(&old.lease) {
                    l.keys.remove(&key);
                }
            }
        }
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(key.clone());
            }
        }
        let kv = KeyValue {
            key: key.clone(),
            create_revision: prev.as_ref().map_or(p.rev, |o| o.create_revision),
            mod_revision: p.rev,
            version: prev.as_ref().map_or(0, |o| o.version) + 1,
            value: value.clone(),
            lease,
        };
        self.kvs.insert(key.clone(), kv.clone());
        p.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        p.muts.push(Mutation::Put { key, value, lease });
        prev
    }

    fn apply_delete(&mut self, p: &mut Pending, key: &[u8]) -> Option<KeyValue> {
        let prev = self.kvs.remove(key)?;
        if prev.lease != 0 {
            if let Some(l) = self.leases.get_mut(&prev.lease) {
                l.keys.remove(key);
            }
        }
        p.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                mod_revision: p.rev,
                ..KeyValue::default()
            }),
            prev_kv: Some(prev.clone()),
        });
        p.muts.push(Mutation::Delete { key: key.to_vec() });
        Some(prev)
    }

    fn check_put(&self, req: &PutRequest) -> Result<(), StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::KeyNotProvided);
        }
        if (req.ignore_value || req.ignore_lease) && !self.kvs.contains_key(&req.key) {
            return Err(StoreError::KeyNotFound);
        }
        if !req.ignore_lease && req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        Ok(())
    }

    fn exec_put(&mut self, p: &mut Pending, req: &PutRequest) -> PutResponse {
        let old = self.kvs.get(&req.key);
        let value = match (req.ignore_value, old) {
            (true, Some(o)) => o.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (req.ignore_lease, old) {
            (true, Some(o)) => o.lease,
            _ => req.lease,
        };
        let prev = self.apply_put(p, req.key.clone(), value, lease);
        PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        }
    }

    fn exec_delete(&mut self, p: &mut Pending, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys: Vec<Vec<u8>> = self
            .keys_in(&req.key, &req.range_end)
            .map(|(k, _)| k.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for k in &keys {
            if let Some(prev) = self.apply_delete(p, k) {
                if req.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        DeleteRangeResponse {
            header: None,
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    /// Applies a Put.
    pub fn put(&mut self, req: &PutRequest) -> Result<Applied<PutResponse>, StoreError> {
        self.check_put(req)?;
        let mut p = self.pending();
        let out = self.exec_put(&mut p, req);
        Ok(self.commit(p, out))
    }

    /// Applies a DeleteRange; deleting nothing writes no revision.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::KeyNotProvided);
        }
        let mut p = self.pending();
        let out = self.exec_delete(&mut p, req);
        Ok(self.commit(p, out))
    }

    /// Drops history below `req.revision`; later reads and watches below it
    /// fail as compacted.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<Record, StoreError> {
        if req.revision > self.rev {
            return Err(StoreError::FutureRevision);
        }
        if req.revision <= self.compact_rev {
            return Err(StoreError::Compacted);
        }
        self.apply_compact(req.revision);
        Ok(Record::Compact { rev: req.revision })
    }

    fn apply_compact(&mut self, rev: i64) {
        while self.history.front().is_some_and(|r| r.rev < rev) {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= old.bytes();
            }
        }
        self.compact_rev = self.compact_rev.max(rev);
    }

    /// The history from `start` to the current revision, or the compacted
    /// revision when `start` is below it.
    pub fn history_since(&self, start: i64) -> Result<Vec<Arc<Revision>>, i64> {
        if start < self.compact_rev {
            return Err(self.compact_rev);
        }
        let first = self.history.partition_point(|r| r.rev < start);
        Ok(self.history.range(first..).cloned().collect())
    }

    /// Grants a lease; `id == 0` picks a fresh positive id.
    pub fn lease_grant(
        &mut self,
        id: i64,
        ttl: i64,
        now: Instant,
    ) -> Result<(i64, i64, Record), StoreError> {
        let id = if id == 0 {
            while self.leases.contains_key(&self.next_lease) {
                self.next_lease = self.next_lease.checked_add(1).unwrap_or(1);
            }
            self.next_lease
        } else if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        } else {
            id
        };
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        self.insert_lease(id, ttl, now);
        Ok((id, ttl, Record::LeaseGrant { id, ttl }))
    }

    fn insert_lease(&mut self, id: i64, ttl: i64, now: Instant) {
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: now + Duration::from_secs(ttl.unsigned_abs()),
                keys: BTreeSet::new(),
            },
        );
    }

    /// Revokes a lease and deletes its keys in one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Applied<()>, StoreError> {
        let lease = self.leases.remove(&id).ok_or(StoreError::LeaseNotFound)?;
        let mut p = self.pending();
        for k in &lease.keys {
            self.apply_delete(&mut p, k);
        }
        let rev = if p.muts.is_empty() { 0 } else { p.rev };
        let muts = std::mem::take(&mut p.muts);
        let published = (rev != 0).then(|| self.push_revision(rev, std::mem::take(&mut p.events)));
        Ok(Applied {
            out: (),
            record: Some(Record::LeaseRevoke { id, rev, muts }),
            published,
        })
    }

    /// Renews a lease; `None` when it does not exist.
    pub fn lease_keep_alive(&mut self, id: i64, now: Instant) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        l.deadline = now + Duration::from_secs(l.ttl.unsigned_abs());
        Some(l.ttl)
    }

    /// Remaining TTL (seconds, rounded up), granted TTL and attached keys.
    pub fn lease_info(&self, id: i64, now: Instant) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let l = self.leases.get(&id)?;
        let left = l.deadline.saturating_duration_since(now);
        let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Some((secs, l.ttl, l.keys.iter().cloned().collect()))
    }

    /// Ids of all live leases, sorted.
    pub fn lease_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases whose deadline has passed at `now`.
    pub fn expired_leases(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Re-applies a durable record during replay. Leases restart with a
    /// full TTL from `now`.
    pub fn replay(&mut self, rec: Record, now: Instant) -> Result<(), ReplayError> {
        match rec {
            Record::Write { rev, muts } => self.replay_muts(rev, muts),
            Record::LeaseGrant { id, ttl } => {
                if self.leases.contains_key(&id) {
                    return Err(ReplayError::LeaseGrantedTwice { id });
                }
                if !(1..=MAX_LEASE_TTL).contains(&ttl) {
                    return Err(ReplayError::LeaseTtl { id, ttl });
                }
                self.insert_lease(id, ttl, now);
                self.next_lease = self.next_lease.max(id.saturating_add(1));
                Ok(())
            }
            Record::LeaseRevoke { id, rev, muts } => {
                if self.leases.remove(&id).is_none() {
                    return Err(ReplayError::UnknownLease { id });
                }
                if rev == 0 {
                    return Ok(());
                }
                self.replay_muts(rev, muts)
            }
            // Placed and checked by the opener, which reads it first.
            Record::LogStart { .. } => Ok(()),
            Record::Compact { rev } => {
                if rev > self.rev {
                    return Err(ReplayError::FutureCompaction { rev });
                }
                self.apply_compact(rev);
                Ok(())
            }
        }
    }

    fn replay_muts(&mut self, rev: i64, muts: Vec<Mutation>) -> Result<(), ReplayError> {
        if rev != self.rev + 1 {
            return Err(ReplayError::RevisionGap {
                rev,
                current: self.rev,
            });
        }
        if muts.is_empty() {
            return Err(ReplayError::EmptyRevision { rev });
        }
        let mut p = self.pending();
        for m in muts {
            match m {
                Mutation::Put { key, value, lease } => {
                    self.apply_put(&mut p, key, value, lease);
                }
                Mutation::Delete { key } => {
                    if self.apply_delete(&mut p, &key).is_none() {
                        return Err(ReplayError::DeleteOfAbsentKey { rev });
                    }
                }
            }
        }
        self.push_revision(p.rev, p.events);
        Ok(())
    }
}

fn sort_kvs(kvs: &mut [KeyValue], order: i32, target: i32) {
    use range_request::{SortOrder as O, SortTarget as T};
    let target = T::try_from(target).unwrap_or(T::Key);
    let order = match O::try_from(order).unwrap_or(O::None) {
        // Results are already key-ascending; any other target defaults to ascending.
        O::None if target == T::Key => return,
        O::None => O::Ascend,
        o => o,
    };
    kvs.sort_by(|a, b| {
        let ord = match target {
            T::Key => a.key.cmp(&b.key),
            T::Version => a.version.cmp(&b.version),
            T::Create => a.create_revision.cmp(&b.create_revision),
            T::Mod => a.mod_revision.cmp(&b.mod_revision),
            T::Value => a.value.cmp(&b.value),
        };
        if order == O::Descend {
            ord.reverse()
        } else {
            ord
        }
    });
}
