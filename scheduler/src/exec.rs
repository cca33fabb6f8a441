//! `AllocService.Exec` routing: the CLI's bidirectional stream is relayed
//! to the allocation's agent over its `Connect` stream, frame by frame
//! (`ExecInput` down, `ExecOutput` up), keyed by a request id.
//!
//! The agent's stream is shared by every allocation on the node and carries
//! its heartbeats, so output is never awaited on here: each session has a
//! bounded queue towards its client, filled with `try_send`, and a client
//! that does not keep up is told so and its session ended (the agent kills
//! the command). A client that goes away ends the session the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::core::{lock, Core};
use crate::state::{AllocStatus, Desired};

/// Output frames queued per session towards a slow client.
const QUEUE: usize = 256;
/// How long a client may take to send the first frame.
const START_TIMEOUT: Duration = Duration::from_secs(10);

static EXEC_REQUESTS: AtomicU64 = AtomicU64::new(1);

/// Where one session's output goes, which node serves it, the token that
/// ends the session's input relay once the agent sent its last frame, and
/// the one that ends it because the client cannot keep up.
pub(crate) struct ExecSink {
    tx: mpsc::Sender<Result<pb::ExecResponse, Status>>,
    node_id: String,
    done: CancellationToken,
    abort: CancellationToken,
}

/// Reads the session's first frame, checks the allocation runs on a
/// connected node, starts the session there and relays the rest of the
/// client's frames; returns the receiver of the output.
pub(crate) async fn start(
    core: &Arc<Core>,
    mut inbound: Streaming<pb::ExecRequest>,
) -> Result<mpsc::Receiver<Result<pb::ExecResponse, Status>>, Status> {
    let first = tokio::time::timeout(START_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no ExecStart within 10 s"))??
        .ok_or_else(|| Status::invalid_argument("exec stream closed before ExecStart"))?;
    let mut start = first
        .start
        .clone()
        .ok_or_else(|| Status::invalid_argument("the first exec message must carry start"))?;
    if start.command.first().is_none_or(String::is_empty) {
        return Err(Status::invalid_argument(
            "no command given: drover exec ALLOC -- COMMAND [ARG...]",
        ));
    }
    let alloc = crate::api::find_alloc(core, &start.alloc_id).await?;
    if alloc.desired != Desired::Run || alloc.status != AllocStatus::Running {
        return Err(Status::failed_precondition(format!(
            "allocation {} ({}) is not running (status {}{})",
            alloc.id,
            alloc.name,
            alloc.status.as_str(),
            if alloc.desired == Desired::Stop {
                ", being stopped"
            } else {
                ""
            }
        )));
    }
    let agent = core.agent_tx(&alloc.node_id).ok_or_else(|| {
        Status::unavailable(format!(
            "node {} holding allocation {} is not connected",
            alloc.node_id, alloc.id
        ))
    })?;
    let id = EXEC_REQUESTS.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(QUEUE);
    let done = CancellationToken::new();
    let abort = CancellationToken::new();
    lock(&core.execs).insert(
        id,
        ExecSink {
            tx: tx.clone(),
            node_id: alloc.node_id.clone(),
            done: done.clone(),
            abort: abort.clone(),
        },
    );
    tracing::info!(request_id = id, alloc_id = %alloc.id, node_id = %alloc.node_id, task = %start.task, tty = start.tty, "exec session starting");
    start.alloc_id = alloc.id.clone();
    let first = pb::ExecRequest {
        start: Some(start),
        ..first
    };
    if agent.send(Ok(input(id, Some(first), false))).await.is_err() {
        lock(&core.execs).remove(&id);
        return Err(Status::unavailable(format!(
            "node {} disconnected",
            alloc.node_id
        )));
    }
    tokio::spawn(relay_input(
        core.clone(),
        id,
        inbound,
        agent,
        tx,
        [done, abort],
    ));
    Ok(rx)
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

/// Relays the client's frames to the agent until the agent has sent its
/// last frame (`done`); a client that disconnects cancels the session.
async fn relay_input(
    core: Arc<Core>,
    id: u64,
    mut inbound: Streaming<pb::ExecRequest>,
    agent: mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
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
    lock(&core.execs).remove(&id);
    if gone {
        // A session that ended meanwhile is unknown to the agent: harmless.
        tracing::info!(
            request_id = id,
            "exec client went away or fell behind; cancelling the session"
        );
        let _ = agent.send(Ok(input(id, None, true))).await;
    }
}

/// Delivers one `ExecOutput` from node `from` to its client, never
/// waiting. Output for a session another node serves is dropped: one
/// node's agent must not write into (or end) another node's session.
pub(crate) fn route(core: &Core, from: &str, out: pb::ExecOutput) {
    let mut execs = lock(&core.execs);
    let Some(sink) = execs.get(&out.request_id) else {
        return;
    };
    if sink.node_id != from {
        tracing::warn!(node_id = %from, serving = %sink.node_id, request_id = out.request_id, "exec output from a node that does not serve the session; dropped");
        return;
    }
    if let Some(resp) = out.response {
        // The last free slot is kept for the error that ends the session.
        if sink.tx.capacity() <= 1 {
            let _ = sink.tx.try_send(Err(Status::resource_exhausted(
                "exec output reader too slow; the session was ended",
            )));
            if let Some(sink) = execs.remove(&out.request_id) {
                // The relay then cancels the session on the node.
                sink.abort.cancel();
            }
            return;
        }
        let _ = sink.tx.try_send(Ok(resp));
    }
    if out.done {
        if let Some(sink) = execs.remove(&out.request_id) {
            sink.done.cancel();
        }
    }
}

/// Ends the sessions served by `node_id`, whose stream is gone.
pub(crate) fn node_gone(core: &Core, node_id: &str) {
    let orphaned: Vec<ExecSink> = {
        let mut execs = lock(&core.execs);
        let ids: Vec<u64> = execs
            .iter()
            .filter(|(_, s)| s.node_id == node_id)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| execs.remove(&id)).collect()
    };
    for sink in orphaned {
        let _ = sink.tx.try_send(Err(Status::unavailable(format!(
            "node {node_id} disconnected during exec; the command's outcome is unknown"
        ))));
        sink.done.cancel();
    }
}
