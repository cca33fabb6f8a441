//! Fencing: with scheduler replicas, every write of the leader carries its
//! term's fencing token ([`Fence`], the leader key's `create_revision`), so
//! a deposed leader that has not noticed yet (paused, cut off from the
//! store) can never write: its transaction's compare on the leader key
//! fails. A refused write is told apart from a lost race on the write's own
//! guards by reading the leader key once, and fails with
//! [`StoreError::Deposed`] instead of being retried.

use drover_store::election::Fence;
use drover_store::{Committed, Guard, RawOp, StoreError, Write};

use super::{Cluster, ClusterError};

impl Cluster {
    /// Fences every write from now on on `fence` (the term this scheduler
    /// won). Set once, before the first write of the term.
    pub fn fence_writes(&self, fence: Fence) {
        *self.fence.write().unwrap_or_else(|e| e.into_inner()) = Some(fence);
    }

    /// The term writes are fenced on, if any.
    pub fn fence(&self) -> Option<Fence> {
        self.fence.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// [`drover_store::Store::commit`], fenced on the term when there is
    /// one.
    pub(super) async fn commit_fenced(
        &self,
        guards: &[Guard],
        writes: &[Write],
    ) -> Result<Committed, ClusterError> {
        let Some(fence) = self.fence() else {
            return Ok(self.store.commit(guards, writes).await?);
        };
        match self.store.commit_fenced(&fence, guards, writes).await? {
            Committed::Conflict if !self.store.fence_holds(&fence).await? => {
                tracing::error!(key = %fence.key, fence = fence.revision, "write refused: this scheduler's leader term is over");
                Err(deposed(&fence).into())
            }
            committed => Ok(committed),
        }
    }

    /// Writes service-discovery keys ([`drover_store::Store::apply_skydns`]),
    /// fenced on the term when there is one.
    pub async fn apply_skydns(&self, ops: &[RawOp]) -> Result<i64, StoreError> {
        match self.fence() {
            Some(fence) => self.store.apply_skydns_fenced(&fence, ops).await,
            None => self.store.apply_skydns(ops).await,
        }
    }
}

fn deposed(fence: &Fence) -> StoreError {
    StoreError::Deposed {
        key: fence.key.clone(),
        revision: fence.revision,
    }
}
