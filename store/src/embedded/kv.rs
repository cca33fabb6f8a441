//! The KV, Maintenance and Cluster services.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use drover_proto::etcd::etcdserverpb::{
    cluster_server::Cluster, kv_server::Kv, maintenance_server::Maintenance, response_op,
    CompactionRequest, CompactionResponse, DefragmentRequest, DefragmentResponse,
    DeleteRangeRequest, DeleteRangeResponse, HashRequest, HashResponse, Member, MemberListRequest,
    MemberListResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::mvcc::{Applied, StoreError};
use super::{check_grpc_size, check_size, header, to_status, Shared, MEMBER_ID};

/// Bytes per Maintenance.Snapshot message (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 * 1024;
/// Version string reported by Maintenance.Status.
const VERSION: &str = "3.4.0-drover";

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "{method} is not implemented by Drover's embedded store"
    ))
}

/// etcd's KV service.
pub(crate) struct KvService {
    shared: Arc<Shared>,
}

impl KvService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        check_grpc_size(&req)?;
        if req.key.is_empty() {
            return Err(to_status(StoreError::KeyNotProvided));
        }
        let store = self.shared.lock();
        let mut resp = store.range(&req).map_err(to_status)?;
        resp.header = header(store.revision());
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        check_size(&req)?;
        let (mut resp, rev) = self.shared.commit(|s| s.put(&req)).await?;
        tracing::debug!(revision = rev, key_len = req.key.len(), "put");
        resp.header = header(rev);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        check_size(&req)?;
        let (mut resp, rev) = self.shared.commit(|s| s.delete_range(&req)).await?;
        resp.header = header(rev);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        check_size(&req)?;
        let (mut resp, rev) = self.shared.commit(|s| s.txn(&req)).await?;
        fill_headers(&mut resp, rev);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        let ((), rev) = self
            .shared
            .commit(|s| {
                let record = s.compact(&req)?;
                Ok(Applied {
                    out: (),
                    record: Some(record),
                    published: None,
                })
            })
            .await?;
        tracing::info!(compact_revision = req.revision, "compacted history");
        Ok(Response::new(CompactionResponse {
            header: header(rev),
        }))
    }
}

/// Fills the header of a txn response and of every nested response, so
/// clients that unwrap inner headers find one.
fn fill_headers(resp: &mut TxnResponse, rev: i64) {
    resp.header = header(rev);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => r.header = header(rev),
            Some(response_op::Response::ResponsePut(r)) => r.header = header(rev),
            Some(response_op::Response::ResponseDeleteRange(r)) => r.header = header(rev),
            Some(response_op::Response::ResponseTxn(t)) => fill_headers(t, rev),
            None => {}
        }
    }
}

/// etcd's Maintenance service: only Status.
pub(crate) struct MaintenanceService {
    shared: Arc<Shared>,
}

impl MaintenanceService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let rev = self.shared.lock().revision();
        let d = &self.shared.durable;
        let size = (d.size.load(Ordering::SeqCst) + d.snap_size.load(Ordering::SeqCst)) as i64;
        Ok(Response::new(StatusResponse {
            header: header(rev),
            version: VERSION.to_string(),
            db_size: size,
            leader: MEMBER_ID,
            raft_index: rev as u64,
            raft_term: 1,
            raft_applied_index: rev as u64,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(unimplemented("Defragment"))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unimplemented("Hash"))
    }

    type SnapshotStream = SnapshotStream;

    /// The live state in the store's snapshot format (a backup that
    /// `drover store restore` installs; not a bbolt file), streamed in
    /// chunks as etcd does.
    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (image, rev) = {
            let store = self.shared.lock();
            let body = store.encode_snapshot();
            (
                super::snapshot::backup_image(super::snapshot::encode(0, &body)),
                store.revision(),
            )
        };
        tracing::info!(
            revision = rev,
            bytes = image.len(),
            "streaming a store backup"
        );
        let total = image.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = image
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, c)| {
                Ok(SnapshotResponse {
                    header: header(rev),
                    remaining_bytes: (total - (i * SNAPSHOT_CHUNK + c.len())) as u64,
                    blob: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

/// etcd's Cluster service: one member, this server.
pub(crate) struct ClusterService {
    shared: Arc<Shared>,
}

impl ClusterService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let rev = self.shared.lock().revision();
        let url = self.shared.client_url.get().cloned().unwrap_or_default();
        Ok(Response::new(MemberListResponse {
            header: header(rev),
            members: vec![Member {
                id: MEMBER_ID,
                name: "drover".to_string(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: vec![url],
                is_learner: false,
            }],
        }))
    }
}
