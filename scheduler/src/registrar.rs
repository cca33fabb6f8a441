//! The registrar: writes the SkyDNS records the state calls for
//! ([`crate::discovery::desired`]) to the store, each bound to its node's
//! lease. (Not to be confused with the registry of connected agents.)
//!
//! Leases: one per node, granted when the node's first record is written,
//! with a TTL of the node grace period (whole seconds, at least 1). It is
//! renewed from the node's own messages ([`Registrar::heard`], at most
//! every third of the TTL), so it outlives the node's stream by at most
//! the grace period: a node whose agent dies or goes silent loses its
//! records when the lease runs out, and one declared down has its lease
//! revoked at once ([`Registrar::node_down`]). A lease that lapsed is
//! granted again, and the node's records rewritten, only for a node heard
//! from within the TTL, so a silent node's records are not brought back.
//!
//! Passes are serialised; each reads the state it acts on, so whichever
//! runs last writes what the latest state calls for. A targeted pass
//! ([`Registrar::sync_allocs`], [`Registrar::node_up`]) follows each
//! state change; the full pass ([`Registrar::sync_all`], every reconcile)
//! re-reads the store's keys and repairs whatever was missed. After a
//! scheduler restart the full pass adopts the leases the keys are bound to
//! (they live while the old ones are renewed from the nodes' messages).
//!
//! Only keys of the zone that Drover writes (`service/<service>/<alloc>`
//! and `node/<node>`) and that are bound to a lease are managed: a key an
//! operator put by hand, without a lease, is left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_model::skydns::{node_key, owner_of, zone_prefix, Owner};
use drover_store::client::MAX_TXN_OPS;
use drover_store::{Kind, RawOp, Store, StoreError};
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError};
use crate::discovery::desired::{alloc_records, desired, node_record, Desired, Wanted};
use crate::discovery::plan::{plan, Held, Plan};
use crate::discovery::Discovery;
use crate::state::{AllocRecord, JobRecord, NodeRecord, NodeStatus};
use crate::sync::lock;

/// Up to this many allocations a targeted pass reads one by one; past it,
/// it lists them all.
const GETS_PER_PASS: usize = 8;

/// Errors of a registrar pass: reading the state or writing the keys.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    /// Reading the cluster state failed.
    #[error("service discovery: reading the cluster state: {0}")]
    Cluster(#[from] ClusterError),
    /// Reading or writing the SkyDNS keys, or a lease, failed.
    #[error("service discovery: {0}")]
    Store(#[from] StoreError),
}

/// One node's lease as this process holds it.
#[derive(Debug, Clone, Copy)]
struct NodeLease {
    id: i64,
    /// The TTL etcd granted, in seconds.
    ttl: i64,
    renewed: Instant,
    renewing: bool,
}

impl NodeLease {
    fn period(&self) -> Duration {
        renew_period(self.ttl)
    }
}

/// How often a lease of `ttl` seconds is renewed: every third of it.
pub fn renew_period(ttl: i64) -> Duration {
    Duration::from_millis(u64::try_from(ttl.max(1)).unwrap_or(1) * 1000 / 3)
}

/// The TTL of a node's lease for a node grace period: whole seconds,
/// rounded up, at least 1.
pub fn lease_ttl(grace: Duration) -> i64 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// Writes service-discovery records; see the module docs.
#[derive(Debug)]
pub struct Registrar {
    cluster: Arc<Cluster>,
    discovery: Discovery,
    lease_ttl: i64,
    /// What Drover's keys hold; the lock serialises the passes.
    held: tokio::sync::Mutex<BTreeMap<String, Held>>,
    /// Each node's lease.
    leases: Mutex<BTreeMap<String, NodeLease>>,
    /// When each node was last heard from.
    heard: Mutex<HashMap<String, Instant>>,
}

impl Registrar {
    /// A registrar over `cluster`'s store, writing under `discovery`'s
    /// zone, with leases of the node grace period `grace`.
    pub fn new(cluster: Arc<Cluster>, discovery: Discovery, grace: Duration) -> Registrar {
        Registrar {
            cluster,
            discovery,
            lease_ttl: lease_ttl(grace),
            held: tokio::sync::Mutex::new(BTreeMap::new()),
            leases: Mutex::new(BTreeMap::new()),
            heard: Mutex::new(HashMap::new()),
        }
    }

    fn store(&self) -> &Store {
        self.cluster.store()
    }

    /// The lease ids by node.
    fn lease_ids(&self) -> BTreeMap<String, i64> {
        lock(&self.leases)
            .iter()
            .map(|(n, l)| (n.clone(), l.id))
            .collect()
    }

    /// Node `node_id` sent something on its stream: it is alive, and its
    /// lease is renewed when a third of the TTL has passed (in a task of
    /// its own; the caller does not wait for the store).
    pub fn heard(self: &Arc<Self>, node_id: &str) {
        let now = Instant::now();
        lock(&self.heard).insert(node_id.to_owned(), now);
        let lease = {
            let mut leases = lock(&self.leases);
            let Some(l) = leases.get_mut(node_id) else {
                return;
            };
            if l.renewing || now.duration_since(l.renewed) < l.period() {
                return;
            }
            l.renewing = true;
            l.id
        };
        let me = self.clone();
        let node_id = node_id.to_owned();
        tokio::spawn(async move { me.renew(&node_id, lease).await });
    }

    async fn renew(&self, node_id: &str, lease: i64) {
        match self.store().renew(lease).await {
            Ok(()) => {
                if let Some(l) = lock(&self.leases)
                    .get_mut(node_id)
                    .filter(|l| l.id == lease)
                {
                    l.renewed = Instant::now();
                    l.renewing = false;
                }
            }
            Err(StoreError::LeaseNotFound { .. }) => {
                tracing::warn!(
                    node_id,
                    lease_id = lease,
                    "node's discovery lease lapsed; granting a new one and rewriting its records"
                );
                let mut held = self.held.lock().await;
                self.forget_lease(&mut held, node_id, lease);
                if let Err(error) = self.sync_all_locked(&mut held).await {
                    tracing::warn!(node_id, %error, "cannot rewrite the node's records");
                }
            }
            Err(error) => {
                tracing::warn!(node_id, lease_id = lease, %error, "cannot renew the node's discovery lease; retrying on its next message");
                if let Some(l) = lock(&self.leases)
                    .get_mut(node_id)
                    .filter(|l| l.id == lease)
                {
                    l.renewing = false;
                }
            }
        }
    }

    /// Drops `lease` of `node_id` and the keys it held (the store dropped
    /// them with it).
    fn forget_lease(&self, held: &mut BTreeMap<String, Held>, node_id: &str, lease: i64) {
        let mut leases = lock(&self.leases);
        if leases.get(node_id).is_some_and(|l| l.id == lease) {
            leases.remove(node_id);
        }
        held.retain(|_, h| h.lease != lease);
    }

    /// A node registered: its node record is written (granting its lease).
    pub async fn node_up(&self, node: &NodeRecord) -> Result<(), RegistrarError> {
        lock(&self.heard).insert(node.id.clone(), Instant::now());
        let mut held = self.held.lock().await;
        let key = node_key(&self.discovery.zone, &node.id);
        let mut want = Desired::new();
        if let Some((k, record)) = node_record(&self.discovery, node) {
            let node_id = node.id.clone();
            want.insert(k, Wanted { node_id, record });
        }
        let p = plan(&held, &self.lease_ids(), &want, |k| k == key);
        self.apply_then_repair(&mut held, p).await
    }

    /// A node was declared down: its lease is revoked, which deletes all
    /// of its records at once.
    pub async fn node_down(&self, node_id: &str) -> Result<(), RegistrarError> {
        let mut held = self.held.lock().await;
        lock(&self.heard).remove(node_id);
        let Some(lease) = lock(&self.leases).get(node_id).map(|l| l.id) else {
            return Ok(());
        };
        self.forget_lease(&mut held, node_id, lease);
        match self.store().revoke(lease).await {
            Ok(()) => {
                tracing::info!(
                    node_id,
                    lease_id = lease,
                    "node down: its discovery records revoked with its lease"
                );
                Ok(())
            }
            Err(StoreError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the records of allocations `ids` to what their state calls
    /// for, right after it changed.
    pub async fn sync_allocs(&self, ids: &[String]) -> Result<(), RegistrarError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut held = self.held.lock().await;
        let (allocs, jobs, nodes) = self.load(ids).await?;
        let mut want = Desired::new();
        for a in &allocs {
            let Some(node) = nodes.get(&a.node_id) else {
                continue;
            };
            for (_, key, record) in alloc_records(&self.discovery, node, jobs.get(&a.job), a) {
                let node_id = a.node_id.clone();
                want.insert(key, Wanted { node_id, record });
            }
        }
        let ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let zone = &self.discovery.zone;
        let in_scope = |k: &str| matches!(owner_of(zone, k), Some(Owner::Instance { alloc_id, .. }) if ids.contains(alloc_id));
        let p = plan(&held, &self.lease_ids(), &want, in_scope);
        self.apply_then_repair(&mut held, p).await
    }

    /// Allocations `ids` (those that exist), their jobs and nodes.
    async fn load(
        &self,
        ids: &[String],
    ) -> Result<
        (
            Vec<AllocRecord>,
            BTreeMap<String, JobRecord>,
            BTreeMap<String, NodeRecord>,
        ),
        RegistrarError,
    > {
        if ids.len() > GETS_PER_PASS {
            let nodes = self.all_nodes().await?;
            let (mut allocs, jobs) = self.cluster.allocs_and_jobs().await?;
            let ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            allocs.retain(|a| ids.contains(a.id.as_str()));
            return Ok((allocs, jobs, nodes));
        }
        // A few allocations: their own records, jobs and nodes, not every
        // node of the cluster (one status report at 10,000 nodes would
        // otherwise read them all).
        let store = self.store();
        let mut allocs = Vec::new();
        let mut jobs = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for id in ids {
            let Some(a) = store.get::<AllocRecord>(Kind::Alloc, id).await? else {
                continue;
            };
            if !jobs.contains_key(&a.value.job) {
                if let Some(j) = store.get::<JobRecord>(Kind::Job, &a.value.job).await? {
                    jobs.insert(j.name, j.value);
                }
            }
            if !nodes.contains_key(&a.value.node_id) {
                if let Some(n) = store
                    .get::<NodeRecord>(Kind::Node, &a.value.node_id)
                    .await?
                {
                    nodes.insert(n.name, n.value);
                }
            }
            allocs.push(a.value);
        }
        Ok((allocs, jobs, nodes))
    }

    /// Every node, by id.
    async fn all_nodes(&self) -> Result<BTreeMap<String, NodeRecord>, RegistrarError> {
        Ok(self
            .cluster
            .nodes()
            .await?
            .into_iter()
            .map(|n| (n.name, n.value))
            .collect())
    }

    /// The full pass: every key Drover owns in the zone, re-read from the
    /// store, brought to what the whole state calls for; leases of nodes
    /// no longer up are revoked.
    pub async fn sync_all(&self) -> Result<(), RegistrarError> {
        let mut held = self.held.lock().await;
        self.sync_all_locked(&mut held).await
    }

    async fn sync_all_locked(
        &self,
        held: &mut BTreeMap<String, Held>,
    ) -> Result<(), RegistrarError> {
        let nodes: Vec<NodeRecord> = self
            .cluster
            .nodes()
            .await?
            .into_iter()
            .map(|n| n.value)
            .collect();
        let (allocs, jobs) = self.cluster.allocs_and_jobs().await?;
        let zone = &self.discovery.zone;
        *held = self
            .store()
            .list_skydns(&zone_prefix(zone))
            .await?
            .into_iter()
            .filter(|kv| kv.lease != 0 && owner_of(zone, &kv.key).is_some())
            .map(|kv| {
                let h = Held {
                    value: kv.value,
                    lease: kv.lease,
                };
                (kv.key, h)
            })
            .collect();
        let up: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Ready)
            .map(|n| n.id.as_str())
            .collect();
        let gone: Vec<(String, i64)> = lock(&self.leases)
            .iter()
            .filter(|(n, _)| !up.contains(n.as_str()))
            .map(|(n, l)| (n.clone(), l.id))
            .collect();
        for (node_id, lease) in gone {
            self.forget_lease(held, &node_id, lease);
            match self.store().revoke(lease).await {
                Ok(()) | Err(StoreError::LeaseNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let want = desired(&self.discovery, &jobs, &allocs, &nodes);
        self.adopt(held, &want);
        let p = plan(held, &self.lease_ids(), &want, |_| true);
        self.apply(held, p).await.map(drop)
    }

    /// Takes over, for a node whose lease this process does not know
    /// (after a restart), the live lease its wanted keys are bound to.
    fn adopt(&self, held: &BTreeMap<String, Held>, want: &Desired) {
        let mut leases = lock(&self.leases);
        for (key, w) in want {
            if leases.contains_key(&w.node_id) {
                continue;
            }
            let Some(h) = held.get(key) else {
                continue;
            };
            tracing::info!(node_id = %w.node_id, lease_id = h.lease, "adopting the node's discovery lease");
            let l = NodeLease {
                id: h.lease,
                ttl: self.lease_ttl,
                // Renewed on the node's next message, which also tells
                // whether it still lives.
                renewed: Instant::now() - renew_period(self.lease_ttl),
                renewing: false,
            };
            leases.insert(w.node_id.clone(), l);
        }
    }

    /// [`Registrar::apply`], then a full pass if a lease turned out to
    /// have lapsed (its other keys are gone too).
    async fn apply_then_repair(
        &self,
        held: &mut BTreeMap<String, Held>,
        p: Plan,
    ) -> Result<(), RegistrarError> {
        if self.apply(held, p).await? {
            self.sync_all_locked(held).await?;
        }
        Ok(())
    }

    /// Writes `p`: deletes, then each node's puts bound to its lease (one
    /// granted when it has none, for a node heard from within the TTL), in
    /// transactions of at most [`MAX_TXN_OPS`]. Returns whether a lease
    /// was found lapsed (and replaced).
    async fn apply(
        &self,
        held: &mut BTreeMap<String, Held>,
        p: Plan,
    ) -> Result<bool, RegistrarError> {
        for batch in p.delete.chunks(MAX_TXN_OPS) {
            let ops: Vec<RawOp> = batch
                .iter()
                .map(|key| RawOp::Delete { key: key.clone() })
                .collect();
            self.cluster.apply_skydns(&ops).await?;
            for key in batch {
                held.remove(key);
                tracing::info!(%key, "discovery record deleted");
            }
        }
        let mut lapsed = false;
        for (node_id, puts) in p.put {
            let Some(mut lease) = self.lease_for(&node_id).await? else {
                continue;
            };
            for batch in puts.chunks(MAX_TXN_OPS) {
                match self.put_batch(held, batch, lease).await {
                    Err(RegistrarError::Store(StoreError::LeaseNotFound { .. })) => {
                        tracing::warn!(
                            node_id,
                            lease_id = lease,
                            "node's discovery lease lapsed; granting a new one"
                        );
                        lapsed = true;
                        self.forget_lease(held, &node_id, lease);
                        let Some(again) = self.lease_for(&node_id).await? else {
                            break;
                        };
                        lease = again;
                        self.put_batch(held, batch, lease).await?;
                    }
                    other => other?,
                }
            }
        }
        Ok(lapsed)
    }

    async fn put_batch(
        &self,
        held: &mut BTreeMap<String, Held>,
        batch: &[(String, Vec<u8>)],
        lease: i64,
    ) -> Result<(), RegistrarError> {
        let ops: Vec<RawOp> = batch
            .iter()
            .map(|(key, value)| RawOp::Put {
                key: key.clone(),
                value: value.clone(),
                lease,
            })
            .collect();
        self.cluster.apply_skydns(&ops).await?;
        for (key, value) in batch {
            tracing::info!(%key, value = %String::from_utf8_lossy(value), lease_id = lease, "discovery record written");
            let h = Held {
                value: value.clone(),
                lease,
            };
            held.insert(key.clone(), h);
        }
        Ok(())
    }

    /// The lease of `node_id`: the one held, or a new one when the node
    /// was heard from within the TTL; `None` for a silent node.
    async fn lease_for(&self, node_id: &str) -> Result<Option<i64>, RegistrarError> {
        if let Some(l) = lock(&self.leases).get(node_id) {
            return Ok(Some(l.id));
        }
        let ttl = Duration::from_secs(u64::try_from(self.lease_ttl).unwrap_or(1));
        let alive = lock(&self.heard)
            .get(node_id)
            .is_some_and(|t| t.elapsed() <= ttl);
        if !alive {
            tracing::debug!(
                node_id,
                "node not heard from within its lease TTL; its records wait for it"
            );
            return Ok(None);
        }
        let granted = self.store().grant(self.lease_ttl).await?;
        tracing::info!(
            node_id,
            lease_id = granted.id,
            ttl = granted.ttl,
            "discovery lease granted"
        );
        lock(&self.leases).insert(
            node_id.to_owned(),
            NodeLease {
                id: granted.id,
                ttl: granted.ttl,
                renewed: Instant::now(),
                renewing: false,
            },
        );
        Ok(Some(granted.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lasts_the_grace_period_in_whole_seconds() {
        assert_eq!(lease_ttl(Duration::from_secs(10)), 10);
        assert_eq!(lease_ttl(Duration::from_millis(1500)), 2);
        assert_eq!(lease_ttl(Duration::from_millis(600)), 1);
        assert_eq!(lease_ttl(Duration::ZERO), 1);
        assert_eq!(renew_period(3), Duration::from_secs(1));
        assert_eq!(renew_period(0), Duration::from_millis(333));
    }
}
