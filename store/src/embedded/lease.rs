//! The Lease service and the task that expires leases.

use std::pin::Pin;
use std::sync::Arc;

use drover_proto::etcd::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::mvcc::{Applied, StoreError};
use super::{header, Shared, LEASE_TICK};

/// etcd's Lease service.
pub(crate) struct LeaseService {
    shared: Arc<Shared>,
}

impl LeaseService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        let ((id, ttl), rev) = self
            .shared
            .commit(|s| {
                let (id, ttl, record) = s.lease_grant(req.id, req.ttl, Instant::now())?;
                Ok(Applied {
                    out: (id, ttl),
                    record: Some(record),
                    published: None,
                })
            })
            .await?;
        tracing::debug!(lease_id = id, ttl, "lease granted");
        Ok(Response::new(LeaseGrantResponse {
            header: header(rev),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let ((), rev) = self.shared.commit(|s| s.lease_revoke(id)).await?;
        tracing::debug!(lease_id = id, revision = rev, "lease revoked");
        Ok(Response::new(LeaseRevokeResponse {
            header: header(rev),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let shared = Arc::clone(&self.shared);
        let stop = self.shared.shutdown.clone().cancelled_owned();
        let out = req.into_inner().take_until(stop).map(move |msg| {
            let id = msg?.id;
            let mut store = shared.lock();
            // etcd answers an unknown lease with TTL 0 rather than an error.
            let ttl = store.lease_keep_alive(id, Instant::now()).unwrap_or(0);
            Ok(LeaseKeepAliveResponse {
                header: header(store.revision()),
                id,
                ttl,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let store = self.shared.lock();
        // etcd answers an unknown lease with TTL -1.
        let (ttl, granted, keys) =
            store
                .lease_info(req.id, Instant::now())
                .unwrap_or((-1, 0, Vec::new()));
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: header(store.revision()),
            id: req.id,
            ttl,
            granted_ttl: granted,
            keys: if req.keys { keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let store = self.shared.lock();
        Ok(Response::new(LeaseLeasesResponse {
            header: header(store.revision()),
            leases: store
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}

/// Revokes lapsed leases (deleting their keys in one revision each) until
/// `stop` is cancelled.
pub(crate) async fn expire_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = shared.lock().expired_leases(Instant::now());
        for id in expired {
            let revoke = |s: &mut super::mvcc::Store| {
                // A keep-alive may have landed since the scan.
                if s.lease_info(id, Instant::now())
                    .is_some_and(|(left, _, _)| left > 0)
                {
                    return Err(StoreError::LeaseNotFound);
                }
                s.lease_revoke(id)
            };
            match shared.commit(revoke).await {
                Ok(((), rev)) => tracing::info!(lease_id = id, revision = rev, "lease expired"),
                // Revoked or renewed between the scan and now.
                Err(s) if s.message() == StoreError::LeaseNotFound.to_string() => {}
                Err(s) => {
                    tracing::warn!(lease_id = id, error = %s.message(), "expiring lease failed")
                }
            }
        }
    }
}
