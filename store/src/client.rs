//! Typed access to Drover's state in etcd, through `etcd-client` only.
//!
//! Layout under the prefix (default `/drover/`):
//!
//! | key                       | value                        |
//! |---------------------------|------------------------------|
//! | `<prefix>jobs/<name>`     | JSON job record              |
//! | `<prefix>allocs/<id>`     | JSON allocation record       |
//! | `<prefix>nodes/<id>`      | JSON node record             |
//! | `<prefix>periodic/<job>`  | JSON launch state of a periodic job |
//! | `<prefix>audit/<time>-<id>` | JSON audit record (see `trail`) |
//! | `<prefix>events/<time>-<hash>` | JSON allocation event (see `trail`) |
//!
//! Values are JSON (serde), one object per key; the record types belong to
//! the scheduler. Writes that depend on what was read go through
//! [`Store::commit`], a transaction that compares each guarded key's
//! `mod_revision` with the one read, so two writers can never both win.
//!
//! Reading and following a kind: [`Store::list`] returns the records and
//! the revision of the read; [`Store::watch`] from that revision + 1 then
//! delivers every later change exactly once, in order, re-watching by
//! itself after a broken connection. When the history it needs has been
//! compacted it says so ([`WatchEvent::Compacted`], or
//! [`StoreError::Compacted`] at the start) and the caller lists again.
//!
//! Leases: [`Store::grant`], [`Store::keep_alive`] (a guard that renews
//! in the background), [`Store::renew`] (once), [`Store::revoke`], and
//! [`Store::put_with_lease`] for records that must vanish with their
//! owner.
//!
//! Service discovery's SkyDNS records live outside the prefix, at the
//! absolute `/skydns/` their readers expect: [`Store::list_skydns`] and
//! [`Store::apply_skydns`] reach those keys and no others (`skydns`). The leader election
//! built on them is in [`crate::election`].

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, TlsOptions, Txn, TxnOp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod skydns;
mod streams;
mod trail;

pub(crate) use crate::range::range_prefix;
pub use crate::range::LIST_PAGE;

pub use skydns::{RawKv, RawOp, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, MAX_TXN_OPS, SKYDNS_PREFIX};

use crate::retry::unsent;
use streams::{keep_alive_loop, open_watch, watch_loop};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/drover/";

/// The kinds of record Drover stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `jobs/<name>`
    Job,
    /// `allocs/<id>`
    Alloc,
    /// `nodes/<id>`
    Node,
    /// `subnets/<cidr>`: which node holds a task subnet (the scheduler
    /// creates it with the node's record, so no two nodes share one).
    Subnet,
    /// `periodic/<job>`: a periodic job's launch state (its last tick), so
    /// a restarted scheduler neither launches a tick twice nor replays
    /// missed ones.
    Periodic,
    /// `deployments/<job>/<version>`: the roll-out of one job version.
    Deployment,
    /// `versions/<job>/<version>`: every kept version of a job's spec
    /// (history, revert, and which allocations are of the current spec).
    JobVersion,
    /// `audit/<unix ms, 16 digits>-<random>`: the audit trail, in time
    /// order, pruned by age and count (see [`Store::append_trail`]).
    Audit,
    /// `events/<unix ms, 16 digits>-<hash>`: allocation events, in time
    /// order, bounded per allocation and cluster-wide (see the scheduler's
    /// `events` module).
    Event,
    /// `image-pins/<job>/<group>/<instance spec hash>/<task>`: the digest
    /// a registry image's tag was resolved to once for a deployment (see
    /// the scheduler's `image_pins` module).
    ImagePin,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Job => "jobs/",
            Kind::Alloc => "allocs/",
            Kind::Node => "nodes/",
            Kind::Subnet => "subnets/",
            Kind::Periodic => "periodic/",
            Kind::Deployment => "deployments/",
            Kind::JobVersion => "versions/",
            Kind::Audit => "audit/",
            Kind::Event => "events/",
            Kind::ImagePin => "image-pins/",
        }
    }
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Could not reach etcd at all.
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd request failed.
    #[error("etcd {op} on {key:?} failed: {source}")]
    Etcd {
        /// What was attempted (`get`, `put`, `txn`, `watch`...).
        op: &'static str,
        /// The key or prefix involved.
        key: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A stored value is not the JSON Drover expects.
    #[error("value at {key:?} is not valid JSON for this record: {source}")]
    Decode {
        /// The key whose value failed to decode.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A watch asked for history that has been compacted away: re-list the
    /// kind and watch from the listing's revision + 1.
    #[error("watch on {key:?} from revision {from_revision}: compacted up to revision {compact_revision}; re-list")]
    Compacted {
        /// The key or prefix watched.
        key: String,
        /// The revision the watch asked to start from.
        from_revision: i64,
        /// The store's compaction point: history before it is gone.
        compact_revision: i64,
    },
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {lease:#x} not found (revoked or expired){}", key.as_ref().map(|k| format!(" writing {k:?}")).unwrap_or_default())]
    LeaseNotFound {
        /// The lease id.
        lease: i64,
        /// The key being written with it, if any.
        key: Option<String>,
    },
    /// A raw key lies outside the SkyDNS layout, the only place raw keys
    /// may be read or written.
    #[error("key {key:?} is outside {prefix}: Drover writes no raw key elsewhere", prefix = SKYDNS_PREFIX)]
    OutsideSkydns {
        /// The key.
        key: String,
    },
    /// More operations than one transaction may hold; batch them.
    #[error("{ops} operations in one transaction, over the limit of {max}; write them in batches")]
    TooManyOps {
        /// Operations asked for.
        ops: usize,
        /// The limit.
        max: usize,
    },
    /// A write fenced on a leader term was refused: the term is over
    /// (another scheduler leads, or none), so this one must stop writing.
    #[error("this scheduler is no longer the leader (its term, {key:?} created at revision {revision}, is over); its write was refused")]
    Deposed {
        /// The leader key.
        key: String,
        /// The fencing token of the term that ended.
        revision: i64,
    },
    /// A value could not be encoded.
    #[error("cannot encode value for {key:?}: {source}")]
    Encode {
        /// The key being written.
        key: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A decoded value with the revisions etcd holds for it.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record's name (key without prefix and kind directory).
    pub name: String,
    /// The decoded record.
    pub value: T,
    /// Revision of the last write to the key: what [`Guard`]s compare.
    pub mod_revision: i64,
}

/// A consistent listing of one kind and the store revision it was read at.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    /// Records, ordered by name.
    pub items: Vec<Versioned<T>>,
    /// Store revision of the read: a watch from `revision + 1` misses nothing.
    pub revision: i64,
}

/// One write in a [`Store::commit`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Put an encoded record.
    Put {
        /// Kind of record.
        kind: Kind,
        /// Record name.
        name: String,
        /// Encoded value (see [`encode`]).
        value: Vec<u8>,
    },
    /// Delete a record.
    Delete {
        /// Kind of record.
        kind: Kind,
        /// Record name.
        name: String,
    },
}

/// A condition a [`Store::commit`] checks before writing.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Kind of record.
    pub kind: Kind,
    /// Record name.
    pub name: String,
    /// Expected `mod_revision`; 0 means the key must not exist.
    pub mod_revision: i64,
}

/// Outcome of a guarded commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written at this store revision.
    Yes(i64),
    /// A guard failed: someone else wrote first; re-read and retry.
    Conflict,
}

/// What [`Store::watch`] delivers.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A record changed.
    Change(Change),
    /// The history the watch needed is gone: the watch has ended. Re-list
    /// the kind and watch again from the listing's revision + 1.
    Compacted {
        /// The store's compaction point.
        compact_revision: i64,
    },
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease id.
    pub id: i64,
    /// The TTL etcd granted, in seconds (etcd may raise a small request to
    /// its minimum, 2 s by default).
    pub ttl: i64,
}

/// Keeps a lease alive until dropped; see [`Store::keep_alive`].
#[derive(Debug)]
pub struct KeepAlive {
    lease: i64,
    expired: watch::Receiver<bool>,
    _stop: tokio_util::sync::DropGuard,
}

impl KeepAlive {
    /// The lease being kept alive.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Becomes `true` once etcd reports the lease gone (revoked, or expired
    /// because keep-alives did not get through in time).
    pub fn expired(&self) -> watch::Receiver<bool> {
        self.expired.clone()
    }
}

/// A change seen by [`Store::watch`].
#[derive(Debug, Clone)]
pub struct Change {
    /// Record name.
    pub name: String,
    /// New value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Store revision of the change.
    pub revision: i64,
}

/// Encodes a record as the JSON Drover stores.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

/// Decodes a stored record.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

/// An etcd client with Drover's timeouts and keep-alive, over TLS when
/// `tls` is given.
pub async fn connect_client(
    endpoints: &[String],
    tls: Option<TlsOptions>,
) -> Result<Client, StoreError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(tls) = tls {
        opts = opts.with_tls(tls);
    }
    Client::connect(endpoints, Some(opts))
        .await
        .map_err(|source| StoreError::Connect {
            endpoints: endpoints.join(","),
            source,
        })
}

/// Drover's view of etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    /// Keys per request of a prefix read ([`LIST_PAGE`]).
    page: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Store {
    /// Connects to etcd (real or embedded) in plain text. `prefix` should
    /// end in '/'.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Store, StoreError> {
        Store::connect_with(endpoints, prefix, None).await
    }

    /// Connects to etcd, over TLS when `tls` is given (endpoints then
    /// `https://`; with a client identity, etcd's `--client-cert-auth`
    /// takes its common name as the etcd user).
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        tls: Option<TlsOptions>,
    ) -> Result<Store, StoreError> {
        let client = connect_client(endpoints, tls).await?;
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Store {
            client,
            prefix,
            page: LIST_PAGE,
        })
    }

    /// The same store, reading prefixes `page` keys per request (at least
    /// 1) instead of [`LIST_PAGE`]: lets tests list many pages cheaply.
    pub fn with_list_page(mut self, page: i64) -> Store {
        self.page = page.max(1);
        self
    }

    /// The full etcd key of a record.
    pub fn key(&self, kind: Kind, name: &str) -> String {
        format!("{}{}{}", self.prefix, kind.dir(), name)
    }

    fn dir(&self, kind: Kind) -> String {
        format!("{}{}", self.prefix, kind.dir())
    }

    /// Reads one record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let key = self.key(kind, name);
        let kv = self.client.kv_client();
        let resp = unsent("get", || {
            let mut kv = kv.clone();
            let key = key.clone();
            async move { kv.get(key.as_bytes(), None).await }
        })
        .await
        .map_err(|source| StoreError::Etcd {
            op: "get",
            key: key.clone(),
            source,
        })?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                name: name.to_string(),
                value: decode(&key, kv.value())?,
                mod_revision: kv.mod_revision(),
            })),
        }
    }

    /// Lists every record of a kind, as of one revision (read in pages of
    /// at most [`LIST_PAGE`] keys, so no response outgrows the gRPC limit).
    pub async fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Listing<T>, StoreError> {
        self.list_prefix(kind, "").await
    }

    /// Lists the records of a kind whose names start with `name_prefix`
    /// (`web/` for the deployments of job `web`), in one consistent read;
    /// names are given whole, as [`Store::list`] gives them.
    pub async fn list_prefix<T: DeserializeOwned>(
        &self,
        kind: Kind,
        name_prefix: &str,
    ) -> Result<Listing<T>, StoreError> {
        let dir = self.dir(kind);
        let wanted = format!("{dir}{name_prefix}");
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let (kvs, revision) = range_prefix(&mut kv, wanted.as_bytes(), self.page)
            .await
            .map_err(|source| StoreError::Etcd {
                op: "range",
                key: wanted.clone(),
                source,
            })?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let name = key.strip_prefix(&dir).unwrap_or(&key).to_string();
            items.push(Versioned {
                name,
                value: decode(&key, kv.value())?,
                mod_revision: kv.mod_revision(),
            });
        }
        Ok(Listing { items, revision })
    }

    /// Writes one record unconditionally; returns the store revision.
    pub async fn put<T: Serialize>(
        &self,
        kind: Kind,
        name: &str,
        value: &T,
    ) -> Result<i64, StoreError> {
        let key = self.key(kind, name);
        let bytes = encode(&key, value)?;
        let kv = self.client.kv_client();
        let resp = unsent("put", || {
            let (mut kv, key, bytes) = (kv.clone(), key.clone(), bytes.clone());
            async move { kv.put(key.as_bytes(), bytes, None).await }
        })
        .await
        .map_err(|source| StoreError::Etcd {
            op: "put",
            key: key.clone(),
            source,
        })?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Applies `writes` atomically if every guard holds.
    pub async fn commit(
        &self,
        guards: &[Guard],
        writes: &[Write],
    ) -> Result<Committed, StoreError> {
        self.commit_when(Vec::new(), guards, writes).await
    }

    /// [`Store::commit`] with extra raw compares (the election's fence).
    pub(crate) async fn commit_when(
        &self,
        mut compares: Vec<Compare>,
        guards: &[Guard],
        writes: &[Write],
    ) -> Result<Committed, StoreError> {
        compares.extend(guards.iter().map(|g| {
            Compare::mod_revision(
                self.key(g.kind, &g.name).into_bytes(),
                CompareOp::Equal,
                g.mod_revision,
            )
        }));
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put { kind, name, value } => {
                    TxnOp::put(self.key(*kind, name).into_bytes(), value.clone(), None)
                }
                Write::Delete { kind, name } => {
                    TxnOp::delete(self.key(*kind, name).into_bytes(), None)
                }
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let kv = self.client.kv_client();
        let resp = unsent("txn", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|source| StoreError::Etcd {
            op: "txn",
            key: self.prefix.clone(),
            source,
        })?;
        if resp.succeeded() {
            Ok(Committed::Yes(
                resp.header().map(|h| h.revision()).unwrap_or(0),
            ))
        } else {
            Ok(Committed::Conflict)
        }
    }

    /// Writes one record attached to `lease`: it is deleted when the lease
    /// is revoked or expires. Returns the store revision.
    pub async fn put_with_lease<T: Serialize>(
        &self,
        kind: Kind,
        name: &str,
        value: &T,
        lease: i64,
    ) -> Result<i64, StoreError> {
        let key = self.key(kind, name);
        let bytes = encode(&key, value)?;
        let kv = self.client.kv_client();
        let resp = unsent("put", || {
            let (mut kv, key, bytes) = (kv.clone(), key.clone(), bytes.clone());
            async move {
                kv.put(
                    key.as_bytes(),
                    bytes,
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
            }
        })
        .await
        .map_err(|source| lease_error(source, lease, Some(&key), "put"))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Grants a lease of `ttl_secs`.
    pub async fn grant(&self, ttl_secs: i64) -> Result<Lease, StoreError> {
        let lc = self.client.lease_client();
        let resp = unsent("lease grant", || {
            let mut lc = lc.clone();
            async move { lc.grant(ttl_secs, None).await }
        })
        .await
        .map_err(|source| StoreError::Etcd {
            op: "lease grant",
            key: format!("ttl {ttl_secs}s"),
            source,
        })?;
        Ok(Lease {
            id: resp.id(),
            ttl: resp.ttl(),
        })
    }

    /// Revokes a lease, deleting every key attached to it.
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let lc = self.client.lease_client();
        unsent("lease revoke", || {
            let mut lc = lc.clone();
            async move { lc.revoke(lease).await }
        })
        .await
        .map_err(|source| lease_error(source, lease, None, "lease revoke"))?;
        Ok(())
    }

    /// Keeps `lease` alive from a background task, renewing every third of
    /// its TTL, until the returned guard is dropped. A failed stream is
    /// re-opened; etcd reporting the lease gone sets
    /// [`KeepAlive::expired`] and ends the task.
    pub async fn keep_alive(&self, lease: i64) -> Result<KeepAlive, StoreError> {
        let mut lc = self.client.lease_client();
        let ttl = lc
            .time_to_live(lease, None)
            .await
            .map_err(|source| lease_error(source, lease, None, "lease time-to-live"))?;
        if ttl.ttl() <= 0 {
            return Err(StoreError::LeaseNotFound { lease, key: None });
        }
        let period = Duration::from_millis((ttl.granted_ttl().max(1) as u64 * 1000) / 3);
        let stop = CancellationToken::new();
        let (tx, rx) = watch::channel(false);
        let token = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = keep_alive_loop(lc, lease, period, tx) => {}
            }
        });
        Ok(KeepAlive {
            lease,
            expired: rx,
            _stop: stop.drop_guard(),
        })
    }

    /// Streams changes to every record of `kind` from `from_revision` on
    /// (0: from now), each exactly once and in revision order. A broken
    /// connection is re-watched from the revision after the last one
    /// delivered, so a reconnect loses and repeats nothing. If the history
    /// needed is compacted (at the start or on a re-watch), the receiver
    /// gets [`WatchEvent::Compacted`] and then ends: re-list and watch from
    /// the listing's revision + 1. Dropping the receiver cancels the watch.
    pub async fn watch(
        &self,
        kind: Kind,
        from_revision: i64,
    ) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let dir = self.dir(kind);
        let (stream, at) = open_watch(&self.client, &dir, from_revision).await?;
        // Watching "from now" means from the revision after the creation.
        let next = if from_revision > 0 {
            from_revision
        } else {
            at + 1
        };
        let (tx, rx) = mpsc::channel(256);
        let client = self.client.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tx.closed() => {}
                () = watch_loop(client, dir, next, stream, &tx) => {}
            }
        });
        Ok(rx)
    }

    /// A [`crate::mirror::Mirror`] of the absolute key prefix `prefix`
    /// (not under this store's own prefix: `/skydns/` is shared with
    /// CoreDNS's etcd plugin) into `sink`, on this store's connection.
    /// Start it with [`crate::mirror::Mirror::run`].
    pub fn mirror<S: crate::mirror::Sink>(
        &self,
        prefix: &str,
        what: &'static str,
        sink: S,
    ) -> crate::mirror::Mirror<S> {
        crate::mirror::Mirror::new(self.client.clone(), prefix, what, sink)
    }

    /// The `etcd-client` handle, for the election.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The key prefix, ending in '/'.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Maps a lease-related failure, telling a missing lease apart.
fn lease_error(
    source: etcd_client::Error,
    lease: i64,
    key: Option<&str>,
    op: &'static str,
) -> StoreError {
    if let etcd_client::Error::GRpcStatus(s) = &source {
        if s.code() == tonic::Code::NotFound {
            return StoreError::LeaseNotFound {
                lease,
                key: key.map(str::to_string),
            };
        }
    }
    StoreError::Etcd {
        op,
        key: key.map_or_else(|| format!("lease {lease:#x}"), str::to_string),
        source,
    }
}
