//! `AuditService`: the audit trail for `drover audit`.

use std::sync::Arc;

use drover_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{AuditEntry, AuditLog};

/// Serves the trail of an [`AuditLog`].
#[derive(Clone, Debug)]
pub struct AuditApi {
    log: Arc<AuditLog>,
}

impl AuditApi {
    /// The service over `log`.
    pub fn new(log: Arc<AuditLog>) -> AuditApi {
        AuditApi { log }
    }
}

impl From<AuditEntry> for pb::AuditEntry {
    fn from(e: AuditEntry) -> pb::AuditEntry {
        pb::AuditEntry {
            time_unix_ms: e.time_unix_ms,
            caller: e.caller,
            role: e.role,
            method: e.method,
            action: e.action,
            target: e.target,
            detail: e.detail,
            outcome: e.outcome,
            peer: e.peer,
        }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = req.into_inner();
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let entries = self
            .log
            .list(req.since_unix_ms, limit)
            .await
            .map_err(|e| Status::unavailable(format!("state store: {e}")))?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }
}
