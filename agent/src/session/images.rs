//! The agent's answer to `ImagesRequest` (`drover node images`): the image
//! cache listed off the session loop and sent back as an `ImagesReport`.

use std::sync::Arc;

use drover_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::runtime::{CacheListing, Runtime};

/// The wire form of a listing (protobuf stops at this edge).
pub fn listing_to_pb(l: &CacheListing) -> pb::NodeImagesResponse {
    pb::NodeImagesResponse {
        node_id: String::new(),
        images: l
            .images
            .iter()
            .map(|i| pb::CachedImage {
                names: i.names.clone(),
                pinned: i.pinned.clone().unwrap_or_default(),
                manifest: i.manifest.clone(),
                size_bytes: i.size,
                last_used_unix_ms: i.last_used_unix_ms,
                layers: i.layers.clone(),
                in_use: i.in_use,
            })
            .collect(),
        layers: l
            .layers
            .iter()
            .map(|x| pb::CachedLayer {
                digest: x.digest.clone(),
                size_bytes: x.size,
                used_by: x.used_by.clone(),
                last_used_unix_ms: x.last_used_unix_ms,
                in_use: x.in_use,
            })
            .collect(),
    }
}

/// Lists the cache (blocking work, off the loop) and sends the answer to
/// request `request_id` on `tx`.
pub fn answer(runtime: Arc<Runtime>, request_id: u64, tx: mpsc::Sender<pb::AgentMessage>) {
    tokio::spawn(async move {
        let listed = tokio::task::spawn_blocking(move || runtime.image_listing()).await;
        let report = match listed {
            Ok(Ok(l)) => pb::ImagesReport {
                request_id,
                listing: Some(listing_to_pb(&l)),
                error: String::new(),
            },
            Ok(Err(e)) => pb::ImagesReport {
                request_id,
                listing: None,
                error: e.to_string(),
            },
            Err(e) => pb::ImagesReport {
                request_id,
                listing: None,
                error: format!("listing the image cache: {e}"),
            },
        };
        let msg = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::ImagesReport(report)),
        };
        if tx.send(msg).await.is_err() {
            tracing::debug!(
                request_id,
                "stream closed before the image listing was sent"
            );
        }
    });
}
