//! `AllocService.Logs` relay: a log request goes down the agent's stream
//! keyed by a request id, and the agent's `LogData` for it comes back up
//! and is delivered to the client's stream.

use std::sync::Arc;

use drover_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{agent_for, Served, Table};
use crate::registry::Registry;
use crate::state::AllocRecord;
use crate::sync::lock;

/// Where an agent's log data for one request goes, the token that ends
/// the request's cancel-watcher once the agent has sent its last chunk,
/// and the node serving it.
#[derive(Clone)]
struct Sink {
    tx: mpsc::Sender<Result<pb::LogChunk, Status>>,
    done: CancellationToken,
    node_id: String,
}

impl Served for Sink {
    fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// The open log requests of one scheduler process.
#[derive(Default)]
pub struct LogRelay {
    open: Table<Sink>,
}

fn cancel(request_id: u64) -> pb::SchedulerMessage {
    pb::SchedulerMessage {
        msg: Some(pb::scheduler_message::Msg::LogCancel(pb::LogCancel {
            request_id,
        })),
    }
}

impl LogRelay {
    /// Asks the allocation's agent for a log stream; returns its receiver.
    pub async fn open(
        &self,
        registry: &Registry,
        alloc: &AllocRecord,
        req: &pb::LogsRequest,
    ) -> Result<mpsc::Receiver<Result<pb::LogChunk, Status>>, Status> {
        let agent = agent_for(registry, alloc, "; its logs are on that node")?;
        // 8 MiB of 32 KiB chunks between the node and a slow reader.
        let (tx, rx) = mpsc::channel(256);
        let done = CancellationToken::new();
        let id = self.open.insert(Sink {
            tx: tx.clone(),
            done: done.clone(),
            node_id: alloc.node_id.clone(),
        });
        let msg = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::LogRequest(pb::LogRequest {
                request_id: id,
                alloc_id: alloc.id.clone(),
                task: req.task.clone(),
                stderr: req.stderr,
                follow: req.follow,
            })),
        };
        agent
            .send(Ok(msg))
            .await
            .map_err(|_| Status::unavailable("agent stream closed"))?;
        // Tell the agent to stop when the client goes away. This task must
        // not keep the stream open once the agent has sent its last chunk.
        let open = Arc::clone(&self.open.open);
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = done.cancelled() => return,
            }
            drop(tx);
            let still = lock(&open).remove(&id).is_some();
            if still {
                let _ = agent.send(Ok(cancel(id))).await;
            }
        });
        Ok(rx)
    }

    /// Delivers one `LogData` from node `from` to its client, never waiting.
    pub fn route(&self, registry: &Registry, from: &str, d: pb::LogData) {
        let sink = lock(&self.open.open).get(&d.request_id).cloned();
        let Some(Sink { tx, done, node_id }) = sink else {
            return;
        };
        if node_id != from {
            tracing::warn!(node_id = %from, serving = %node_id, request_id = d.request_id, "log data from a node that does not serve the request; dropped");
            return;
        }
        // A paused `drover logs -f` must not delay heartbeats. The last
        // free slot is kept for the error that ends the stream.
        if !d.data.is_empty() {
            if tx.capacity() <= 1 {
                tracing::warn!(node_id = %node_id, request_id = d.request_id, "log reader too slow; its stream was ended");
                let _ = tx.try_send(Err(Status::resource_exhausted(
                    "log reader too slow; the stream was ended (logs are kept on the node)",
                )));
                self.open.remove(d.request_id);
                // Ends the request's watcher, whose sender would otherwise
                // keep the client's stream open, and stops the agent.
                done.cancel();
                if let Some(agent) = registry.sender(&node_id) {
                    let _ = agent.try_send(Ok(cancel(d.request_id)));
                }
                return;
            }
            let _ = tx.try_send(Ok(pb::LogChunk { data: d.data }));
        }
        if d.eof {
            if d.limit_reached {
                let _ = tx.try_send(Err(Status::resource_exhausted(d.error)));
            } else if !d.error.is_empty() {
                let _ = tx.try_send(Err(Status::failed_precondition(d.error)));
            }
            self.open.remove(d.request_id);
            done.cancel();
        }
    }

    /// Ends the log streams `node_id`'s session carried: they cannot finish
    /// any more.
    pub fn node_gone(&self, node_id: &str) {
        for sink in self.open.take_node(node_id) {
            let _ = sink.tx.try_send(Err(Status::unavailable(format!(
                "node {node_id} disconnected; retry once it is back"
            ))));
            sink.done.cancel();
        }
    }
}
