//! `AgentService.Connect`: the one stream each agent holds with the scheduler.
//!
//! Up: `Register` first, then heartbeats, allocation status and log data.
//! Down: `Registered`, then the node's full set of assignments whenever it
//! changes (declarative: the agent converges on the list), and log requests.
//! A stream silent for longer than the node grace period is closed, and a
//! node that does not come back within it is marked down.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use drover_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::core::{now_ms, AgentLink, Core};
use crate::job::{check_dns_label, Resources};
use crate::state::{AllocRecord, NodeRecord, NodeStatus};

/// Implements `AgentService`.
#[derive(Clone)]
pub struct AgentApi {
    core: Arc<Core>,
}

impl AgentApi {
    /// Service over `core`.
    pub fn new(core: Arc<Core>) -> AgentApi {
        AgentApi { core }
    }
}

type Outbound = mpsc::Sender<Result<pb::SchedulerMessage, Status>>;

fn node_from_register(reg: &pb::Register) -> Result<NodeRecord, Status> {
    let n = reg
        .node
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("register carries no node"))?;
    check_dns_label(&n.id).map_err(|e| Status::invalid_argument(format!("node id {e}")))?;
    if n.cpu_millis <= 0 || n.memory_mb <= 0 {
        return Err(Status::invalid_argument(format!(
            "node {} reports no capacity (cpu_millis {}, memory_mb {})",
            n.id, n.cpu_millis, n.memory_mb
        )));
    }
    Ok(NodeRecord {
        id: n.id.clone(),
        hostname: n.hostname.clone(),
        address: n.address.clone(),
        status: NodeStatus::Ready,
        draining: false,
        resources: Resources {
            cpu_millis: u64::try_from(n.cpu_millis).unwrap_or(0),
            memory_mb: u64::try_from(n.memory_mb).unwrap_or(0),
        },
        attributes: n
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        last_seen_unix_ms: now_ms(),
        agent_version: n.agent_version.clone(),
        // A subnet the agent asks for (`drover agent --subnet`); the
        // scheduler checks it against the cluster CIDR and other nodes.
        subnet: if n.subnet.is_empty() {
            None
        } else {
            Some(n.subnet.parse().map_err(|e| {
                Status::invalid_argument(format!(
                    "node {} asks for subnet {:?}: {e}",
                    n.id, n.subnet
                ))
            })?)
        },
    })
}

impl AgentApi {
    /// Records what a registering agent reports running.
    async fn record_running(
        &self,
        node: &NodeRecord,
        reg: &pb::Register,
    ) -> Result<(), crate::core::CoreError> {
        tracing::info!(node_id = %node.id, hostname = %node.hostname, cpu_millis = node.resources.cpu_millis, memory_mb = node.resources.memory_mb, "agent registered");
        for st in &reg.running {
            self.core.report(&node.id, st).await?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        // Under mutual TLS: the node the agent's certificate is bound to.
        let certs = req.peer_certs();
        let tls = certs.is_some();
        let bound = certs
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|der| crate::auth::bound_node(der.as_ref()));
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(self.core.timing.node_grace, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register message within the grace period"))?
            .ok_or_else(|| Status::invalid_argument("stream closed before Register"))??;
        let Some(pb::agent_message::Msg::Register(reg)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message on AgentService.Connect must be Register",
            ));
        };
        let reported = node_from_register(&reg)?;
        if tls {
            let required = self
                .core
                .node_certs_required
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Err(refused) =
                crate::auth::check_agent_identity(bound.as_deref(), &reported.id, required)
            {
                tracing::warn!(node_id = %reported.id, certificate_node = ?bound, reason = %refused.message(), "agent registration refused");
                return Err(refused);
            }
            if bound.is_none() {
                tracing::warn!(node_id = %reported.id, "agent uses the shared agent certificate; a per-node one (drover tls agent --node ID) keeps a stolen key from registering as another node");
            }
        }
        // The link goes in first and the node is written under the planning
        // lock, so that no concurrent node_down can see the node ready in
        // the store without a stream, or overwrite the new registration.
        let (tx, rx) = mpsc::channel(64);
        let dirty = Arc::new(Notify::new());
        let session = self.core.next_session();
        let planning = self.core.planning.lock().await;
        if let Ok(mut agents) = self.core.agents.lock() {
            agents.insert(
                reported.id.clone(),
                AgentLink {
                    session,
                    tx: tx.clone(),
                    dirty: dirty.clone(),
                },
            );
        }
        // Keeps what the operator set (drain) and the node's subnet across
        // reconnects; a new node gets a subnet here.
        let recorded = self.core.register_node(&reported).await;
        drop(planning);
        let recorded = match recorded {
            Ok(node) => self.record_running(&node, &reg).await.map(|()| node),
            Err(e) => Err(e),
        };
        let node = match recorded {
            Ok(node) => node,
            Err(e) => {
                if let Ok(mut agents) = self.core.agents.lock() {
                    if agents
                        .get(&reported.id)
                        .is_some_and(|l| l.session == session)
                    {
                        agents.remove(&reported.id);
                    }
                }
                tracing::warn!(node_id = %reported.id, error = %e, "registration refused");
                return Err(e.into());
            }
        };
        let (subnet, cluster_cidr) = self.core.registered_net(&node);
        let hello = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::Registered(pb::Registered {
                node_id: node.id.clone(),
                heartbeat_interval_ms: i64::try_from(self.core.timing.heartbeat.as_millis())
                    .unwrap_or(i64::MAX),
                subnet,
                cluster_cidr,
            })),
        };
        let _ = tx.send(Ok(hello)).await;
        dirty.notify_one();
        let ended = CancellationToken::new();
        tokio::spawn(crate::node_net::push_peers(
            self.core.clone(),
            node.id.clone(),
            tx.clone(),
            ended.clone(),
        ));
        tokio::spawn(push_assignments(
            self.core.clone(),
            node.id.clone(),
            tx.clone(),
            dirty,
            ended.clone(),
        ));
        drop(tx);
        tokio::spawn(receive(self.core.clone(), node, session, inbound, ended));
        // Jobs waiting for capacity may fit now.
        let core = self.core.clone();
        tokio::spawn(async move {
            if let Err(error) = core.reconcile().await {
                tracing::warn!(%error, "reconcile after registration failed");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the node its assignments each time they may have changed.
async fn push_assignments(
    core: Arc<Core>,
    node_id: String,
    tx: Outbound,
    dirty: Arc<Notify>,
    ended: CancellationToken,
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
        match core.assignments(&node_id).await {
            Ok(a) => {
                let msg = pb::SchedulerMessage {
                    msg: Some(pb::scheduler_message::Msg::Assignments(a)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(node_id = %node_id, %error, "cannot compute assignments; retrying");
                tokio::time::sleep(core.timing.heartbeat).await;
                dirty.notify_one();
            }
        }
    }
}

/// Handles what the agent sends until the stream ends or goes silent.
async fn receive(
    core: Arc<Core>,
    mut node: NodeRecord,
    session: u64,
    mut inbound: Streaming<pb::AgentMessage>,
    ended: CancellationToken,
) {
    let _end_session = ended.drop_guard();
    let node_id = node.id.clone();
    loop {
        let msg = match tokio::time::timeout(core.timing.node_grace, inbound.next()).await {
            Err(_) => {
                tracing::warn!(node_id = %node_id, "agent silent past the grace period; closing its stream");
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
        match msg.msg {
            Some(pb::agent_message::Msg::ExecOutput(o)) => crate::exec::route(&core, &node_id, o),
            Some(pb::agent_message::Msg::Heartbeat(_)) => {
                node.last_seen_unix_ms = now_ms();
            }
            Some(pb::agent_message::Msg::AllocStatus(st)) => {
                if let Err(error) = core.report(&node_id, &st).await {
                    // The agent believes this was delivered; end the session
                    // so that it reconnects and sends every status again.
                    tracing::warn!(node_id = %node_id, alloc_id = %st.alloc_id, %error, "cannot record allocation status; closing the session");
                    break;
                }
            }
            Some(pb::agent_message::Msg::LogData(d)) => route_log(&core, &node_id, d),
            Some(pb::agent_message::Msg::Register(_)) | None => {
                tracing::warn!(node_id = %node_id, "unexpected message on agent stream; ignored");
            }
        }
    }
    let current = core
        .agents
        .lock()
        .map(|mut agents| {
            let mine = agents.get(&node_id).is_some_and(|l| l.session == session);
            if mine {
                agents.remove(&node_id);
                if let Ok(mut d) = core.disconnected.lock() {
                    d.insert(node_id.clone(), tokio::time::Instant::now());
                }
            }
            mine
        })
        .unwrap_or(false);
    if !current {
        return;
    }
    crate::exec::node_gone(&core, &node_id);
    // Log streams this session carried cannot finish any more.
    let orphaned: Vec<_> = {
        let mut logs = crate::core::lock(&core.logs);
        let ids: Vec<u64> = logs
            .iter()
            .filter(|(_, sink)| sink.2 == node_id)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| logs.remove(&id)).collect()
    };
    for (tx, done, _) in orphaned {
        let _ = tx.try_send(Err(Status::unavailable(format!(
            "node {node_id} disconnected; retry once it is back"
        ))));
        done.cancel();
    }
    // Give the agent its grace period to come back before declaring it down.
    tokio::time::sleep(core.timing.node_grace).await;
    let back = core
        .agents
        .lock()
        .map(|a| a.contains_key(&node_id))
        .unwrap_or(false);
    if !back {
        if let Err(error) = core.node_down(&node_id).await {
            tracing::warn!(node_id = %node_id, %error, "cannot mark node down");
        }
        if let Err(error) = core.reconcile().await {
            tracing::warn!(%error, "reconcile after node loss failed");
        }
    }
}

static LOG_REQUESTS: AtomicU64 = AtomicU64::new(1);

/// Asks the allocation's agent for a log stream; returns its receiver.
pub(crate) async fn request_logs(
    core: &Arc<Core>,
    alloc: &AllocRecord,
    req: &pb::LogsRequest,
) -> Result<mpsc::Receiver<Result<pb::LogChunk, Status>>, Status> {
    let agent = core.agent_tx(&alloc.node_id).ok_or_else(|| {
        Status::unavailable(format!(
            "node {} holding allocation {} is not connected; its logs are on that node",
            alloc.node_id, alloc.id
        ))
    })?;
    let id = LOG_REQUESTS.fetch_add(1, Ordering::Relaxed);
    // 8 MiB of 32 KiB chunks between the node and a slow reader.
    let (tx, rx) = mpsc::channel(256);
    let done = CancellationToken::new();
    if let Ok(mut logs) = core.logs.lock() {
        logs.insert(id, (tx.clone(), done.clone(), alloc.node_id.clone()));
    }
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
    // Tell the agent to stop when the client goes away. This task must not
    // keep the stream open once the agent has sent its last chunk.
    let core2 = core.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tx.closed() => {}
            _ = done.cancelled() => return,
        }
        drop(tx);
        let still = core2
            .logs
            .lock()
            .map(|mut l| l.remove(&id).is_some())
            .unwrap_or(false);
        if still {
            let cancel = pb::SchedulerMessage {
                msg: Some(pb::scheduler_message::Msg::LogCancel(pb::LogCancel {
                    request_id: id,
                })),
            };
            let _ = agent.send(Ok(cancel)).await;
        }
    });
    Ok(rx)
}

fn route_log(core: &Core, from: &str, d: pb::LogData) {
    let tx = core
        .logs
        .lock()
        .ok()
        .and_then(|l| l.get(&d.request_id).cloned());
    let Some((tx, done, node_id)) = tx else {
        return;
    };
    // One node's agent must not write into (or end) another's log stream.
    if node_id != from {
        tracing::warn!(node_id = %from, serving = %node_id, request_id = d.request_id, "log data from a node that does not serve the request; dropped");
        return;
    }
    // Never wait on a log reader here: this runs on the node's control
    // stream, and a paused `drover logs -f` must not delay heartbeats. The
    // last free slot is kept for the error that ends the stream.
    if !d.data.is_empty() {
        if tx.capacity() <= 1 {
            tracing::warn!(node_id = %node_id, request_id = d.request_id, "log reader too slow; its stream was ended");
            let _ = tx.try_send(Err(Status::resource_exhausted(
                "log reader too slow; the stream was ended (logs are kept on the node)",
            )));
            if let Ok(mut l) = core.logs.lock() {
                l.remove(&d.request_id);
            }
            // Ends the request's watcher, whose sender would otherwise keep
            // the client's stream open, and stops the agent.
            done.cancel();
            let agent = core.agent_tx(&node_id);
            if let Some(agent) = agent {
                let cancel = pb::SchedulerMessage {
                    msg: Some(pb::scheduler_message::Msg::LogCancel(pb::LogCancel {
                        request_id: d.request_id,
                    })),
                };
                let _ = agent.try_send(Ok(cancel));
            }
            return;
        }
        let _ = tx.try_send(Ok(pb::LogChunk { data: d.data }));
    }
    if d.eof {
        if !d.error.is_empty() {
            let _ = tx.try_send(Err(Status::failed_precondition(d.error)));
        }
        if let Ok(mut l) = core.logs.lock() {
            l.remove(&d.request_id);
        }
        done.cancel();
    }
}
