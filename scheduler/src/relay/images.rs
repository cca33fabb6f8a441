//! `NodeService.Images` relay: the question goes down the node's agent
//! stream keyed by a request id (`ImagesRequest`), the agent's
//! `ImagesReport` comes back up and answers the waiting call. An answer
//! from another node than the one asked is dropped; a node that does not
//! answer in [`ANSWER_TIMEOUT`] fails the call.

use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::sync::oneshot;
use tonic::Status;

use super::{Served, Table};
use crate::registry::Registry;

/// How long a call waits for the agent's answer (it reads its cache's
/// records and measures its layers on disk).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

struct Waiter {
    tx: oneshot::Sender<Result<pb::NodeImagesResponse, Status>>,
    node_id: String,
}

impl Served for Waiter {
    fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// The image questions in flight of one scheduler process.
#[derive(Default)]
pub struct ImagesRelay {
    open: Table<Waiter>,
}

impl ImagesRelay {
    /// Asks node `node_id`'s agent for its image cache and waits for the
    /// answer.
    pub async fn ask(
        &self,
        registry: &Registry,
        node_id: &str,
    ) -> Result<pb::NodeImagesResponse, Status> {
        let agent = registry.sender(node_id).ok_or_else(|| {
            Status::unavailable(format!(
                "node {node_id} is not connected; its image cache is on that node"
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        let id = self.open.insert(Waiter {
            tx,
            node_id: node_id.to_owned(),
        });
        let msg = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::ImagesRequest(
                pb::ImagesRequest { request_id: id },
            )),
        };
        if agent.send(Ok(msg)).await.is_err() {
            self.open.remove(id);
            return Err(Status::unavailable(format!(
                "node {node_id}: agent stream closed"
            )));
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Status::unavailable(format!(
                "node {node_id} went away before answering"
            ))),
            Err(_) => {
                self.open.remove(id);
                Err(Status::deadline_exceeded(format!(
                    "node {node_id} did not list its image cache within {} s \
                     (an agent older than this scheduler does not know the request)",
                    ANSWER_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Delivers node `node_id`'s answer to the call waiting for it.
    pub fn deliver(&self, node_id: &str, report: pb::ImagesReport) {
        let Some(w) = self.open.remove(report.request_id) else {
            tracing::debug!(
                node_id,
                request_id = report.request_id,
                "images answer for no open request; dropped"
            );
            return;
        };
        if w.node_id != node_id {
            tracing::warn!(node_id, request_id = report.request_id, asked = %w.node_id, "images answer from another node than the one asked; dropped");
            let _ = w.tx.send(Err(Status::internal(
                "another node answered for this one; ask again",
            )));
            return;
        }
        let answer = if report.error.is_empty() {
            let mut listing = report.listing.unwrap_or_default();
            listing.node_id = node_id.to_owned();
            Ok(listing)
        } else {
            Err(Status::internal(format!(
                "node {node_id}: {}",
                report.error
            )))
        };
        let _ = w.tx.send(answer);
    }

    /// Fails the calls waiting on node `node_id` (its stream ended).
    pub fn node_gone(&self, node_id: &str) {
        for w in self.open.take_node(node_id) {
            let _ = w.tx.send(Err(Status::unavailable(format!(
                "node {node_id} disconnected before answering"
            ))));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_go_to_the_asker_and_only_from_its_node() {
        let relay = ImagesRelay::default();
        let (tx, rx) = oneshot::channel();
        let id = relay.open.insert(Waiter {
            tx,
            node_id: "n1".into(),
        });
        let report = |error: &str| pb::ImagesReport {
            request_id: id,
            listing: Some(pb::NodeImagesResponse {
                layers: vec![pb::CachedLayer {
                    digest: "sha256:aa".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            error: error.into(),
        };
        relay.deliver("n2", report(""));
        let err = rx.await.unwrap().unwrap_err();
        assert!(err.message().contains("another node"), "{err:?}");

        let (tx, rx) = oneshot::channel();
        let id2 = relay.open.insert(Waiter {
            tx,
            node_id: "n1".into(),
        });
        relay.deliver(
            "n1",
            pb::ImagesReport {
                request_id: id2,
                ..report("")
            },
        );
        let got = rx.await.unwrap().unwrap();
        assert_eq!(got.node_id, "n1");
        assert_eq!(got.layers.len(), 1);
    }
}
