//! `VersionService`: which release a server runs, for `drover version`.
//! Answered by every replica, leader or not, to any caller the TLS
//! handshake admitted: it holds no cluster data.

use drover_proto::v1 as pb;

use super::Reply;

/// The release of this build (the workspace's package version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Implements `drover.v1.VersionService`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionApi;

#[tonic::async_trait]
impl pb::version_service_server::VersionService for VersionApi {
    async fn get(
        &self,
        _request: tonic::Request<pb::GetVersionRequest>,
    ) -> Reply<pb::GetVersionResponse> {
        Ok(tonic::Response::new(pb::GetVersionResponse {
            version: VERSION.to_string(),
            component: "scheduler".to_string(),
            api: "v1".to_string(),
        }))
    }
}
