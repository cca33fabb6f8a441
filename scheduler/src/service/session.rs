//! One agent session after registration: the tasks that push the node its
//! peers, assignments and DNS records, and the one that handles what the agent sends
//! until its stream ends or goes silent past the grace period.

use std::collections::BTreeSet;
use std::sync::Arc;

use drover_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::agent::status_report;
use super::assign::{Sent, Snapshots};
use crate::core::Core;
use crate::peers;
use crate::registry::{Outbound, Session};
use crate::relay;
use crate::state::NodeRecord;

/// Starts the session's tasks. They end when the agent's stream does; the
/// agent is told when the scheduler ends the session.
pub(super) fn run(
    core: Arc<Core>,
    node: NodeRecord,
    session: Session,
    tx: Outbound,
    inbound: Streaming<pb::AgentMessage>,
    assignments: (Arc<Snapshots>, Sent),
    (partial_peers, dns_pace): (bool, Arc<relay::dns::Pace>),
) {
    let ended = CancellationToken::new();
    tokio::spawn(peers::push(
        core.peer_view(),
        node.id.clone(),
        tx.clone(),
        ended.clone(),
        partial_peers,
    ));
    // The DNS records: right after `Registered`, which the caller sent.
    tokio::spawn(relay::dns::feed(
        core.dns_relay().clone(),
        node.id.clone(),
        tx.clone(),
        dns_pace,
        ended.clone(),
    ));
    let snapshots = assignments.0.clone();
    tokio::spawn(push_assignments(
        core.clone(),
        node.id.clone(),
        tx,
        session.dirty,
        ended.clone(),
        assignments,
    ));
    tokio::spawn(receive(
        core,
        (node.id, session.id),
        inbound,
        ended,
        snapshots,
    ));
}

/// Sends the node its assignments each time they may have changed.
async fn push_assignments(
    core: Arc<Core>,
    node_id: String,
    tx: Outbound,
    dirty: Arc<Notify>,
    ended: CancellationToken,
    (snapshots, mut sent): (Arc<Snapshots>, Sent),
) {
    loop {
        tokio::select! {
            _ = dirty.notified() => {}
            _ = tx.closed() => return,
            _ = ended.cancelled() => {
                // Ends the agent's response stream, so that an agent we
                // stopped hearing from learns it and reconnects.
                let _ = tx
                    .send(Err(Status::unavailable(
                        "scheduler closed this session; reconnect and register again",
                    )))
                    .await;
                return;
            }
        }
        let woken = tokio::time::Instant::now();
        match snapshots.for_node(&core, &node_id, woken).await {
            Ok(current) => {
                let Some(a) = sent.next(current) else {
                    continue;
                };
                let msg = pb::SchedulerMessage {
                    msg: Some(pb::scheduler_message::Msg::Assignments(a)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(node_id = %node_id, %error, "cannot compute assignments; retrying");
                tokio::time::sleep(core.timing().heartbeat).await;
                dirty.notify_one();
            }
        }
    }
}

/// Handles what the agent sends until the stream ends or goes silent, then
/// ends the session (see [`Core::session_ended`]).
async fn receive(
    core: Arc<Core>,
    (node_id, session): (String, u64),
    mut inbound: Streaming<pb::AgentMessage>,
    ended: CancellationToken,
    snapshots: Arc<Snapshots>,
) {
    let _end_session = ended.drop_guard();
    let grace = core.timing().node_grace;
    // How long the node had been silent when the stream ended.
    let mut silent_for = std::time::Duration::ZERO;
    loop {
        let msg = match tokio::time::timeout(grace, inbound.next()).await {
            Err(_) => {
                tracing::warn!(node_id = %node_id, "agent silent past the grace period; closing its stream");
                silent_for = grace;
                break;
            }
            Ok(None) => {
                tracing::info!(node_id = %node_id, "agent stream closed");
                break;
            }
            Ok(Some(Err(status))) => {
                tracing::info!(node_id = %node_id, %status, "agent stream failed");
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        // Any message proves the node alive: its discovery lease is renewed.
        core.heard(&node_id);
        match msg.msg {
            Some(pb::agent_message::Msg::ExecOutput(o)) => core.execs().route(&node_id, o),
            // A heartbeat only proves the stream alive, which the timeout
            // above measures; it is not written anywhere.
            Some(pb::agent_message::Msg::Heartbeat(_)) => {}
            Some(pb::agent_message::Msg::AllocStatus(st)) => {
                let Some(report) = status_report(&node_id, &st) else {
                    continue;
                };
                // The events first, so that a status once visible has its
                // events in. They are a record, not state: one that cannot
                // be written is logged, not retried.
                if let Err(error) = core.events().record_reported(&node_id, &st).await {
                    tracing::warn!(node_id = %node_id, alloc_id = %st.alloc_id, %error, "cannot record the allocation's events");
                }
                if let Err(error) = core.report(&node_id, &report).await {
                    // The agent believes this was delivered; end the session
                    // so that it reconnects and sends every status again.
                    tracing::warn!(node_id = %node_id, alloc_id = %st.alloc_id, %error, "cannot record allocation status; closing the session");
                    break;
                }
                // A tag's first resolution becomes its deployment's pin; a
                // task that started on another digest is sent the pin now
                // (its agent restarts it on that digest). Off this loop:
                // the recording reads the allocation and its job, which no
                // later report of the node should wait for.
                if snapshots.pins.is_news(&st) {
                    let (core, snapshots, node_id) =
                        (core.clone(), snapshots.clone(), node_id.clone());
                    tokio::spawn(async move {
                        let store = core.cluster().store();
                        if snapshots.pins.record(store, &node_id, &st).await {
                            core.registry().wake(&BTreeSet::from([node_id]));
                        }
                    });
                }
            }
            Some(pb::agent_message::Msg::AllocEvent(e)) => {
                let st = pb::AllocStatus {
                    alloc_id: e.alloc_id.clone(),
                    events: vec![e],
                    ..Default::default()
                };
                if let Err(error) = core.events().record_reported(&node_id, &st).await {
                    tracing::warn!(node_id = %node_id, alloc_id = %st.alloc_id, %error, "cannot record the allocation's event");
                }
            }
            Some(pb::agent_message::Msg::ImagesReport(r)) => core.images().deliver(&node_id, r),
            Some(pb::agent_message::Msg::LogData(d)) => {
                core.logs().route(core.registry(), &node_id, d)
            }
            Some(pb::agent_message::Msg::Register(_)) | None => {
                tracing::warn!(node_id = %node_id, "unexpected message on agent stream; ignored");
            }
        }
    }
    core.session_ended(&node_id, session, silent_for).await;
}
