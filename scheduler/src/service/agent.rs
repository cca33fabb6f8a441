//! `AgentService.Connect`: the one stream each agent holds with the
//! scheduler, opened here.
//!
//! Up: `Register` first, then heartbeats, allocation status and log and
//! exec data. Down: `Registered`, then the node's peers and full set of
//! assignments whenever they change (declarative: the agent converges on
//! the list), and log and exec requests. Under mutual TLS an agent's
//! certificate must be allowed to register as the node it names
//! ([`crate::auth::check_agent_identity`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use drover_model::CheckState;
use drover_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::assign::{Sent, Snapshots};
use super::{session, Reply};
use crate::auth;
use crate::core::Core;
use crate::job::{check_dns_label, Resources};
use crate::relay;
use crate::state::{AllocStatus, NodeRecord, NodeStatus};
use crate::transitions::StatusReport;

/// Implements `AgentService`.
#[derive(Clone)]
pub struct AgentApi {
    core: Arc<Core>,
    /// One store read serves every session woken at once.
    snapshots: Arc<Snapshots>,
}

impl AgentApi {
    /// Service over `core`.
    pub fn new(core: Arc<Core>) -> AgentApi {
        AgentApi {
            core,
            snapshots: Arc::default(),
        }
    }
}

/// The node a `Register` describes, checked. Its registration time is set
/// when it is recorded.
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
    // Operator metadata is named by `${meta.KEY}`: keys a target can name,
    // bounded values.
    for (k, v) in &n.meta {
        crate::job::check_meta(k, v)
            .map_err(|e| Status::invalid_argument(format!("node {}: {e}", n.id)))?;
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
        meta: n.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        last_seen_unix_ms: 0,
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

/// What node `node_id` reports about one allocation; `None` (and a
/// warning) for a status or check this scheduler does not know.
pub(super) fn status_report(node_id: &str, st: &pb::AllocStatus) -> Option<StatusReport> {
    let Ok(status) = AllocStatus::parse("status", &st.status) else {
        tracing::warn!(node_id, alloc_id = %st.alloc_id, status = %st.status, "agent reported an unknown status; ignored");
        return None;
    };
    // A check this scheduler cannot read is left out (and said so), not
    // the whole report.
    let checks = st
        .checks
        .iter()
        .filter_map(|c| {
            CheckState::try_from(c)
                .inspect_err(|error| {
                    tracing::warn!(node_id, alloc_id = %st.alloc_id, %error, "agent reported an unknown check state; ignored");
                })
                .ok()
        })
        .collect();
    Some(StatusReport {
        alloc_id: st.alloc_id.clone(),
        status,
        tasks: st.tasks.iter().map(Into::into).collect(),
        ip: st.ip.clone(),
        checks,
    })
}

/// Reads the stream's first message, which must be `Register`, within the
/// grace period.
async fn read_register(
    core: &Core,
    inbound: &mut Streaming<pb::AgentMessage>,
) -> Result<pb::Register, Status> {
    let first = tokio::time::timeout(core.timing().node_grace, inbound.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no Register message within the grace period"))?
        .ok_or_else(|| Status::invalid_argument("stream closed before Register"))??;
    match first.msg {
        Some(pb::agent_message::Msg::Register(reg)) => Ok(reg),
        _ => Err(Status::invalid_argument(
            "the first message on AgentService.Connect must be Register",
        )),
    }
}

/// Under mutual TLS: whether the certificate, bound to node `bound` or
/// shared (`None`), may register as `node_id`.
fn check_identity(core: &Core, bound: Option<&str>, node_id: &str) -> Result<(), Status> {
    if let Err(refused) = auth::check_agent_identity(bound, node_id, core.node_certs_required()) {
        tracing::warn!(node_id = %node_id, certificate_node = ?bound, reason = %refused.message(), "agent registration refused");
        return Err(refused);
    }
    if bound.is_none() {
        tracing::warn!(node_id = %node_id, "agent uses the shared agent certificate; a per-node one (drover tls agent --node ID) keeps a stolen key from registering as another node");
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Reply<Self::ConnectStream> {
        // Under mutual TLS: the node the agent's certificate is bound to.
        let certs = req.peer_certs();
        let tls = certs.is_some();
        let bound = certs
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|der| auth::bound_node(der.as_ref()));
        let mut inbound = req.into_inner();
        let reg = read_register(&self.core, &mut inbound).await?;
        let reported = node_from_register(&reg)?;
        if tls {
            check_identity(&self.core, bound.as_deref(), &reported.id)?;
        }
        let running: Vec<StatusReport> = reg
            .running
            .iter()
            .filter_map(|st| status_report(&reported.id, st))
            .collect();
        let (tx, rx) = mpsc::channel(64);
        let (node, session) = self
            .core
            .register(&reported, &running, tx.clone())
            .await
            .map_err(|e| {
                tracing::warn!(node_id = %reported.id, error = %e, "registration refused");
                Status::from(e)
            })?;
        let hello = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::Registered(pb::Registered {
                node_id: node.id.clone(),
                heartbeat_interval_ms: i64::try_from(self.core.timing().heartbeat.as_millis())
                    .unwrap_or(i64::MAX),
                subnet: node.subnet.map(|s| s.to_string()).unwrap_or_default(),
                cluster_cidr: self.core.cluster().subnets().cluster().to_string(),
                dns_zone: self.core.discovery().zone.clone(),
            })),
        };
        let _ = tx.send(Ok(hello)).await;
        session.dirty.notify_one();
        if node.status == NodeStatus::Initializing {
            self.core.ready_by_bound(&node.id);
        }
        let sent = Sent::new(reg.partial_assignments);
        let pace = Arc::new(relay::dns::Pace::default());
        session::run(
            self.core.clone(),
            node,
            session,
            tx,
            inbound,
            (self.snapshots.clone(), sent),
            (reg.partial_peers, pace.clone()),
        );
        // Jobs waiting for capacity may fit now, and system jobs want an
        // instance on the node: a full pass, soon.
        self.core.node_joined();
        Ok(Response::new(Box::pin(relay::dns::Paced::new(
            ReceiverStream::new(rx),
            pace,
        ))))
    }
}
