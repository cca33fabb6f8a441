//! Leader election for scheduler replicas, on a lease and one key.
//!
//! A candidate grants a lease and, in one transaction, creates
//! `<prefix>leader` (value: its id, attached to the lease) only if the key
//! does not exist (`create_revision == 0`). The winner keeps the lease
//! alive; the others watch the key and try again when it is deleted
//! (resignation, or lease expiry after the leader died or was cut off).
//!
//! The **fencing token** is the leader key's `create_revision`: it grows
//! with every new term, and a leader's writes go through
//! [`Store::commit_fenced`], a transaction that also compares the key's
//! `create_revision` with the token. A deposed leader that has not noticed
//! yet (paused, partitioned) can therefore never write: its token no
//! longer matches. This uses only KV, Lease and Watch, so it works the
//! same against the embedded server and a real etcd.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{Committed, Guard, KeepAlive, Store, StoreError, Write};

/// The leader key, under the store's prefix.
pub const LEADER_KEY: &str = "leader";

/// Errors from an election.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The store failed.
    #[error("election on {key:?}: {source}")]
    Store {
        /// The leader key.
        key: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// An etcd request failed.
    #[error("election {op} on {key:?}: {source}")]
    Etcd {
        /// What was attempted.
        op: &'static str,
        /// The leader key.
        key: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The watch on the leader key ended while waiting for it to be free.
    #[error("watch on the leader key {key:?} ended while campaigning")]
    WatchEnded {
        /// The leader key.
        key: String,
    },
}

/// A fencing token: writes guarded by it succeed only while the term that
/// issued it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader key.
    pub key: String,
    /// The leader key's `create_revision` for this term.
    pub revision: i64,
}

/// Who leads, as seen by an observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's id (the key's value).
    pub id: String,
    /// Its term's fencing token.
    pub fence: Fence,
}

/// One candidate in the election.
#[derive(Debug, Clone)]
pub struct Election {
    store: Store,
    id: String,
    ttl: i64,
    key: String,
}

impl Election {
    /// A candidate named `id` whose leadership lapses `ttl_secs` after its
    /// keep-alives stop.
    pub fn new(store: Store, id: &str, ttl_secs: i64) -> Election {
        let key = format!("{}{LEADER_KEY}", store.prefix());
        Election {
            store,
            id: id.to_string(),
            ttl: ttl_secs,
            key,
        }
    }

    fn etcd_err(&self, op: &'static str) -> impl Fn(etcd_client::Error) -> ElectionError + '_ {
        move |source| ElectionError::Etcd {
            op,
            key: self.key.clone(),
            source,
        }
    }

    fn store_err(&self) -> impl Fn(StoreError) -> ElectionError + '_ {
        move |source| ElectionError::Store {
            key: self.key.clone(),
            source,
        }
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<Leader>, ElectionError> {
        let mut kv = self.store.client().kv_client();
        let resp = kv
            .get(self.key.as_bytes(), None)
            .await
            .map_err(self.etcd_err("get"))?;
        Ok(resp.kvs().first().map(|kv| self.leader_of(kv)))
    }

    fn leader_of(&self, kv: &etcd_client::KeyValue) -> Leader {
        Leader {
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            fence: Fence {
                key: self.key.clone(),
                revision: kv.create_revision(),
            },
        }
    }

    /// Deletes the leader key if it holds this candidate's id: it was put
    /// by an earlier run of this same candidate (ids are unique: a
    /// scheduler's advertised address) that died before its lease lapsed,
    /// so a restarted candidate need not wait the lease out. Returns
    /// whether it did.
    pub async fn clear_own_stale(&self) -> Result<bool, ElectionError> {
        let txn = Txn::new()
            .when([Compare::value(
                self.key.as_bytes(),
                CompareOp::Equal,
                self.id.as_bytes(),
            )])
            .and_then([TxnOp::delete(self.key.as_bytes(), None)]);
        let mut kv = self.store.client().kv_client();
        let resp = kv.txn(txn).await.map_err(self.etcd_err("txn"))?;
        if resp.succeeded() {
            tracing::info!(key = %self.key, id = %self.id, "removed the leader key of an earlier run of this candidate");
        }
        Ok(resp.succeeded())
    }

    /// Waits until this candidate leads. Cancel-safe only in that a dropped
    /// campaign leaves its lease to expire.
    pub async fn campaign(&self) -> Result<Leadership, ElectionError> {
        let lease = self.store.grant(self.ttl).await.map_err(self.store_err())?;
        match self.campaign_with(lease.id).await {
            Ok(l) => Ok(l),
            Err(e) => {
                let _ = self.store.revoke(lease.id).await;
                Err(e)
            }
        }
    }

    async fn campaign_with(&self, lease: i64) -> Result<Leadership, ElectionError> {
        let keeper = self
            .store
            .keep_alive(lease)
            .await
            .map_err(self.store_err())?;
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.key.as_bytes(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    self.key.as_bytes(),
                    self.id.as_bytes(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(self.key.as_bytes(), None)]);
            let mut kv = self.store.client().kv_client();
            let resp = kv.txn(txn).await.map_err(self.etcd_err("txn"))?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.succeeded() {
                tracing::info!(key = %self.key, id = %self.id, fence = rev, "won the election");
                return Ok(Leadership::start(self.clone(), lease, rev, keeper).await);
            }
            // Someone leads: wait for their key to go, from just after the
            // revision we read so no deletion is missed.
            self.wait_deleted(rev + 1).await?;
        }
    }

    async fn wait_deleted(&self, from: i64) -> Result<(), ElectionError> {
        let mut wc = self.store.client().watch_client();
        let mut stream = wc
            .watch(
                self.key.as_bytes(),
                Some(WatchOptions::new().with_start_revision(from)),
            )
            .await
            .map_err(self.etcd_err("watch"))?;
        loop {
            let Some(resp) = stream.message().await.map_err(self.etcd_err("watch"))? else {
                return Err(ElectionError::WatchEnded {
                    key: self.key.clone(),
                });
            };
            if resp.canceled() {
                // Compacted or cancelled: just try the transaction again.
                return Ok(());
            }
            if resp
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                return Ok(());
            }
        }
    }

    /// Follows who leads: the receiver holds the current leader (or `None`)
    /// and changes with every term. The watch stops when the receiver is
    /// dropped.
    pub async fn observe(&self) -> Result<watch::Receiver<Option<Leader>>, ElectionError> {
        let mut kv = self.store.client().kv_client();
        let resp = kv
            .get(self.key.as_bytes(), None)
            .await
            .map_err(self.etcd_err("get"))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let (tx, rx) = watch::channel(resp.kvs().first().map(|kv| self.leader_of(kv)));
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tx.closed() => {}
                () = me.observe_loop(rev + 1, &tx) => {}
            }
        });
        Ok(rx)
    }

    async fn observe_loop(&self, mut from: i64, tx: &watch::Sender<Option<Leader>>) {
        loop {
            let mut wc = self.store.client().watch_client();
            let opened = wc
                .watch(
                    self.key.as_bytes(),
                    Some(WatchOptions::new().with_start_revision(from)),
                )
                .await;
            if let Ok(mut stream) = opened {
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        break;
                    }
                    for e in resp.events() {
                        let Some(kv) = e.kv() else { continue };
                        from = kv.mod_revision() + 1;
                        let _ = tx.send(match e.event_type() {
                            EventType::Put => Some(self.leader_of(kv)),
                            EventType::Delete => None,
                        });
                    }
                }
            }
            // Re-read, then watch again from after the read.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(resp) = self
                .store
                .client()
                .kv_client()
                .get(self.key.as_bytes(), None)
                .await
            {
                from = resp.header().map(|h| h.revision()).unwrap_or(from - 1) + 1;
                let _ = tx.send(resp.kvs().first().map(|kv| self.leader_of(kv)));
            }
        }
    }
}

/// This candidate's term as leader. Dropping it stops the keep-alives, so
/// the term ends when the lease expires; [`Leadership::resign`] ends it at
/// once.
#[derive(Debug)]
pub struct Leadership {
    election: Election,
    lease: i64,
    fence: Fence,
    lost: watch::Receiver<bool>,
    _keeper: KeepAlive,
    _stop: DropGuard,
}

impl Leadership {
    async fn start(election: Election, lease: i64, revision: i64, keeper: KeepAlive) -> Leadership {
        let fence = Fence {
            key: election.key.clone(),
            revision,
        };
        let (tx, lost) = watch::channel(false);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let mut expired = keeper.expired();
        let store = election.store.clone();
        let key = fence.key.clone();
        tokio::spawn(async move {
            let gone = async {
                // The term ends when the key is deleted or recreated.
                let Ok(mut stream) = store
                    .client()
                    .watch_client()
                    .watch(
                        key.as_bytes(),
                        Some(WatchOptions::new().with_start_revision(revision + 1)),
                    )
                    .await
                else {
                    return;
                };
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        return;
                    }
                    if resp.events().iter().any(|e| {
                        e.event_type() == EventType::Delete
                            || e.kv().is_some_and(|kv| kv.create_revision() != revision)
                    }) {
                        return;
                    }
                }
            };
            tokio::select! {
                () = token.cancelled() => return,
                () = gone => {}
                _ = expired.wait_for(|e| *e) => {}
            }
            tracing::warn!(key = %key, fence = revision, "leadership lost");
            let _ = tx.send(true);
        });
        Leadership {
            election,
            lease,
            fence,
            lost,
            _keeper: keeper,
            _stop: stop.drop_guard(),
        }
    }

    /// This leader's id.
    pub fn id(&self) -> &str {
        &self.election.id
    }

    /// The term's fencing token.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The lease the leader key is attached to.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Becomes `true` when the term is over (key deleted or replaced, lease
    /// gone) or can no longer be confirmed (the watch on the key broke): in
    /// doubt, a leader steps down. Writes are fenced regardless; this is for
    /// stopping work promptly.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// [`Store::commit`] that succeeds only while this term lasts.
    pub async fn commit(
        &self,
        guards: &[Guard],
        writes: &[Write],
    ) -> Result<Committed, StoreError> {
        self.election
            .store
            .commit_fenced(&self.fence, guards, writes)
            .await
    }

    /// Ends the term now: revokes the lease, which deletes the leader key.
    pub async fn resign(self) -> Result<(), ElectionError> {
        match self.election.store.revoke(self.lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound { .. }) => Ok(()),
            Err(source) => Err(ElectionError::Store {
                key: self.fence.key.clone(),
                source,
            }),
        }
    }
}

impl Store {
    /// [`Store::commit`] that also requires `fence` to be the current
    /// leader term: a deposed leader's writes get [`Committed::Conflict`].
    pub async fn commit_fenced(
        &self,
        fence: &Fence,
        guards: &[Guard],
        writes: &[Write],
    ) -> Result<Committed, StoreError> {
        let term = Compare::create_revision(fence.key.as_bytes(), CompareOp::Equal, fence.revision);
        self.commit_when(vec![term], guards, writes).await
    }
}

impl Store {
    /// Whether `fence`'s term still lasts: the leader key exists and was
    /// created at the fence's revision. Tells a write refused by the fence
    /// apart from one refused by its own guards.
    pub async fn fence_holds(&self, fence: &Fence) -> Result<bool, StoreError> {
        let mut kv = self.client().kv_client();
        let resp = kv
            .get(fence.key.as_bytes(), None)
            .await
            .map_err(|source| StoreError::Etcd {
                op: "get",
                key: fence.key.clone(),
                source,
            })?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == fence.revision))
    }

    /// [`Store::apply_skydns`] that succeeds only while `fence`'s term
    /// lasts: a deposed leader gets [`StoreError::Deposed`].
    pub async fn apply_skydns_fenced(
        &self,
        fence: &Fence,
        ops: &[crate::RawOp],
    ) -> Result<i64, StoreError> {
        let term = Compare::create_revision(fence.key.as_bytes(), CompareOp::Equal, fence.revision);
        self.apply_skydns_when(vec![term], ops)
            .await?
            .ok_or_else(|| StoreError::Deposed {
                key: fence.key.clone(),
                revision: fence.revision,
            })
    }
}
