//! A node that comes back after being replaced: recorded `initializing`
//! while it still runs the copies the cluster replaced, made ready once
//! its reports show them stopped, or past a bound regardless (the rules
//! are [`crate::returning`]'s; this is their I/O).

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_store::Kind;

use super::Core;
use crate::cluster::ClusterError;
use crate::returning::{self, Flip, Stale};
use crate::state::{AllocRecord, DesiredState, NodeRecord, NodeStatus};
use crate::sync::lock;
use crate::transitions::StatusReport;

/// Now, on tokio's clock (paused in tests).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Core {
    /// The record to register `reported` with: initializing when what it
    /// reports `running` holds stale copies (then waited on until they
    /// stop), else as reported (ready). A node that reports nothing live
    /// costs no read.
    pub(super) async fn returning(
        &self,
        reported: &NodeRecord,
        running: &[StatusReport],
    ) -> Result<NodeRecord, ClusterError> {
        let stale = self.stale_on_return(&reported.id, running).await?;
        let bound = returning::bound(&stale, self.timing.node_grace);
        lock(&self.returns).start(&reported.id, &stale, now(), bound);
        if stale.is_empty() {
            return Ok(reported.clone());
        }
        let ids: Vec<&str> = stale.iter().map(|s| s.alloc_id.as_str()).collect();
        tracing::warn!(node_id = %reported.id, stale = ?ids, bound_ms = bound.as_millis() as u64, "node returns running copies the cluster replaced: initializing until they are stopped");
        Ok(NodeRecord {
            status: NodeStatus::Initializing,
            ..reported.clone()
        })
    }

    /// The stale copies among `running`, read from the store (the
    /// allocations reported live, and the jobs of those not wanted).
    async fn stale_on_return(
        &self,
        node_id: &str,
        running: &[StatusReport],
    ) -> Result<Vec<Stale>, ClusterError> {
        let store = self.cluster.store();
        let mut allocs = BTreeMap::new();
        let mut jobs = BTreeMap::new();
        for r in running.iter().filter(|r| !r.status.is_terminal()) {
            let Some(a) = store.get::<AllocRecord>(Kind::Alloc, &r.alloc_id).await? else {
                continue;
            };
            let wanted = a.value.node_id == node_id && a.value.desired == DesiredState::Run;
            if !wanted && !jobs.contains_key(&a.value.job) {
                if let Some(j) = self.cluster.job(&a.value.job).await? {
                    jobs.insert(a.value.job.clone(), j.value);
                }
            }
            allocs.insert(a.name, a.value);
        }
        Ok(returning::stale(node_id, running, &allocs, &jobs))
    }

    /// Node `node_id` reported `report`: when it was the last stale copy
    /// it waited on, the node is ready now.
    pub(super) async fn returned_report(&self, node_id: &str, report: &StatusReport) {
        let flip =
            lock(&self.returns).reported(node_id, &report.alloc_id, report.status.is_terminal());
        self.flip(node_id, flip).await;
    }

    /// Makes initializing node `node_id` ready once its bound is past
    /// (spawned at its registration): the safety net for an agent that
    /// never reports its stale copies stopped.
    pub(crate) fn ready_by_bound(self: &Arc<Self>, node_id: &str) {
        let Some(deadline) = lock(&self.returns).deadline(node_id) else {
            return;
        };
        let core = self.clone();
        let node_id = node_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            core.initializing_due(&node_id).await;
        });
    }

    /// For an initializing node (seen by the reconcile pass or when its
    /// bound is past): ready if past its bound, or if this scheduler
    /// waits on nothing for it while its agent is connected (it took over
    /// from another leader, or an earlier flip's write failed).
    pub(super) async fn initializing_due(&self, node_id: &str) {
        let flip = {
            let mut returns = lock(&self.returns);
            if !returns.tracks(node_id) && self.registry.is_connected(node_id) {
                Flip::Ready
            } else {
                returns.check(node_id, now())
            }
        };
        self.flip(node_id, flip).await;
    }

    /// Acts on `flip`: records node `node_id` ready (a fenced write that
    /// leaves a node no longer initializing alone), then tells its peers,
    /// writes its discovery record and asks for a placement pass.
    async fn flip(&self, node_id: &str, flip: Flip) {
        match flip {
            Flip::Wait => return,
            Flip::Ready => {
                tracing::info!(node_id, "returning node's stale copies are stopped: ready");
            }
            Flip::Overdue(left) => {
                tracing::warn!(node_id, still_running = ?left, "returning node did not report its stale copies stopped within its bound: ready anyway");
            }
        }
        let node = match self.cluster.node_ready(node_id).await {
            Ok(Some(node)) => node,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(node_id, %error, "cannot record the returning node ready; the next reconcile pass retries");
                return;
            }
        };
        self.peers.notify();
        if let Err(error) = self.registrar.node_up(&node).await {
            tracing::warn!(node_id, %error, "cannot write the node's discovery record; the next reconcile pass retries");
        }
        // Its allocations may enter discovery, and queued work may fit.
        if let Err(error) = self.registrar.sync_all().await {
            tracing::warn!(node_id, %error, "discovery records resync failed");
        }
        self.node_joined();
    }
}
