//! `AllocService.Exec` relay: the CLI's bidirectional stream is relayed to
//! the allocation's agent over its `Connect` stream, frame by frame
//! (`ExecInput` down, `ExecOutput` up), keyed by a request id.
//!
//! Output is never awaited on here: each session has a bounded queue
//! towards its client, filled with `try_send`, and a client that does not
//! keep up is told so and its session ended (the agent kills the command).
//! A client that goes away ends the session the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::{agent_for, Served, Table};
use crate::registry::{Outbound, Registry};
use crate::state::{AllocRecord, AllocStatus, DesiredState};
use crate::sync::lock;

/// Output frames queued per session towards a slow client.
const QUEUE: usize = 256;
/// How long a client may take to send the first frame.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one session's output goes, which node serves it, the token that
/// ends the session's input relay once the agent sent its last frame, and
/// the one that ends it because the client cannot keep up.
struct Sink {
    tx: mpsc::Sender<Result<pb::ExecResponse, Status>>,
    node_id: String,
    done: CancellationToken,
    abort: CancellationToken,
}

impl Served for Sink {
    fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// The open exec sessions of one scheduler process.
#[derive(Default)]
pub struct ExecRelay {
    open: Table<Sink>,
}

/// Reads a session's first frame, which must start it with a command;
/// returns the frame and its start.
pub async fn read_start(
    inbound: &mut Streaming<pb::ExecRequest>,
) -> Result<(pb::ExecRequest, pb::ExecStart), Status> {
    let first = tokio::time::timeout(START_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no ExecStart within 10 s"))??
        .ok_or_else(|| Status::invalid_argument("exec stream closed before ExecStart"))?;
    let start = first
        .start
        .clone()
        .ok_or_else(|| Status::invalid_argument("the first exec message must carry start"))?;
    if start.command.first().is_none_or(String::is_empty) {
        return Err(Status::invalid_argument(
            "no command given: drover exec ALLOC -- COMMAND [ARG...]",
        ));
    }
    Ok((first, start))
}

fn input(request_id: u64, request: Option<pb::ExecRequest>, cancel: bool) -> pb::SchedulerMessage {
    pb::SchedulerMessage {
        msg: Some(pb::scheduler_message::Msg::ExecInput(pb::ExecInput {
            request_id,
            request,
            cancel,
        })),
    }
}

impl ExecRelay {
    /// Checks the allocation runs on a connected node, starts the session
    /// there with `first` (its `start` naming `alloc` by its full id) and
    /// relays the rest of the client's frames; returns the receiver of the
    /// output.
    pub async fn start(
        &self,
        registry: &Registry,
        alloc: &AllocRecord,
        first: pb::ExecRequest,
        mut start: pb::ExecStart,
        inbound: Streaming<pb::ExecRequest>,
    ) -> Result<mpsc::Receiver<Result<pb::ExecResponse, Status>>, Status> {
        if alloc.desired != DesiredState::Run || alloc.status != AllocStatus::Running {
            return Err(Status::failed_precondition(format!(
                "allocation {} ({}) is not running (status {}{})",
                alloc.id,
                alloc.name,
                alloc.status.as_str(),
                if alloc.desired == DesiredState::Stop {
                    ", being stopped"
                } else {
                    ""
                }
            )));
        }
        let agent = agent_for(registry, alloc, "")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let done = CancellationToken::new();
        let abort = CancellationToken::new();
        let id = self.open.insert(Sink {
            tx: tx.clone(),
            node_id: alloc.node_id.clone(),
            done: done.clone(),
            abort: abort.clone(),
        });
        tracing::info!(request_id = id, alloc_id = %alloc.id, node_id = %alloc.node_id, task = %start.task, tty = start.tty, "exec session starting");
        start.alloc_id = alloc.id.clone();
        let first = pb::ExecRequest {
            start: Some(start),
            ..first
        };
        if agent.send(Ok(input(id, Some(first), false))).await.is_err() {
            self.open.remove(id);
            return Err(Status::unavailable(format!(
                "node {} disconnected",
                alloc.node_id
            )));
        }
        tokio::spawn(relay_input(
            Arc::clone(&self.open.open),
            id,
            inbound,
            agent,
            tx,
            [done, abort],
        ));
        Ok(rx)
    }

    /// Delivers one `ExecOutput` from node `from` to its client, never
    /// waiting.
    pub fn route(&self, from: &str, out: pb::ExecOutput) {
        let mut open = lock(&self.open.open);
        let Some(sink) = open.get(&out.request_id) else {
            return;
        };
        if sink.node_id != from {
            tracing::warn!(node_id = %from, serving = %sink.node_id, request_id = out.request_id, "exec output from a node that does not serve the session; dropped");
            return;
        }
        if out.limit_reached {
            // The node refused to start it: a status, not an answer.
            let error = out.response.map(|r| r.error).unwrap_or_default();
            let _ = sink.tx.try_send(Err(Status::resource_exhausted(error)));
            if let Some(sink) = open.remove(&out.request_id) {
                sink.done.cancel();
            }
            return;
        }
        if let Some(resp) = out.response {
            // The last free slot is kept for the error that ends the session.
            if sink.tx.capacity() <= 1 {
                let _ = sink.tx.try_send(Err(Status::resource_exhausted(
                    "exec output reader too slow; the session was ended",
                )));
                if let Some(sink) = open.remove(&out.request_id) {
                    // The relay then cancels the session on the node.
                    sink.abort.cancel();
                }
                return;
            }
            let _ = sink.tx.try_send(Ok(resp));
        }
        if out.done {
            if let Some(sink) = open.remove(&out.request_id) {
                sink.done.cancel();
            }
        }
    }

    /// Ends the sessions served by `node_id`, whose stream is gone.
    pub fn node_gone(&self, node_id: &str) {
        for sink in self.open.take_node(node_id) {
            let _ = sink.tx.try_send(Err(Status::unavailable(format!(
                "node {node_id} disconnected during exec; the command's outcome is unknown"
            ))));
            sink.done.cancel();
        }
    }
}

/// Relays the client's frames to the agent until the agent has sent its
/// last frame (`done`); a client that disconnects cancels the session.
async fn relay_input(
    open: Arc<Mutex<HashMap<u64, Sink>>>,
    id: u64,
    mut inbound: Streaming<pb::ExecRequest>,
    agent: Outbound,
    tx: mpsc::Sender<Result<pb::ExecResponse, Status>>,
    [done, abort]: [CancellationToken; 2],
) {
    let mut reading = true;
    let gone = loop {
        tokio::select! {
            () = done.cancelled() => break false,
            () = abort.cancelled() => break true,
            () = tx.closed() => break true,
            msg = inbound.message(), if reading => match msg {
                Ok(Some(frame)) => {
                    if agent.send(Ok(input(id, Some(frame), false))).await.is_err() {
                        break false;
                    }
                }
                // The client finished sending; it still reads the output.
                Ok(None) => reading = false,
                Err(_) => break true,
            },
        }
    };
    drop(tx);
    lock(&open).remove(&id);
    if gone {
        // A session that ended meanwhile is unknown to the agent: harmless.
        tracing::info!(
            request_id = id,
            "exec client went away or fell behind; cancelling the session"
        );
        let _ = agent.send(Ok(input(id, None, true))).await;
    }
}
