//! The gRPC services at the edge: protobuf in, domain types to [`Core`],
//! protobuf and statuses out.
//!
//! [`Api`] serves people and automation (`JobService` in `jobs`,
//! `NodeService` in `nodes`, `AllocService` in `allocs`); [`AgentApi`]
//! serves the agents' `Connect` streams (`agent`, with each session's
//! tasks in `session`). [`serve`] puts them on a listener behind the
//! access layer of [`crate::access`] (each method checked against the
//! caller's role, changes recorded in [`crate::audit`]'s trail) and the
//! certificate-kind checks of [`crate::auth`].

use std::sync::Arc;

use drover_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::access::AccessLayer;
use crate::audit::{AuditApi, AuditLimits, AuditLog};
use crate::auth;
use crate::cluster::ClusterError;
use crate::core::Core;
use crate::events::EventApi;
use crate::gate::{self, Gate, Role};

mod agent;
mod allocs;
mod assign;
mod deployments;
mod jobs;
mod nodes;
mod session;
mod store_status;
mod version;

pub use agent::AgentApi;

/// A generated server with Drover's message limit both ways
/// ([`drover_proto::MAX_MESSAGE_BYTES`]; tonic's default decodes 4 MiB and
/// encodes without bound).
macro_rules! bounded {
    ($server:expr) => {
        $server
            .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
    };
}

/// What a unary call answers.
type Reply<T> = Result<tonic::Response<T>, Status>;

/// Implements `JobService`, `NodeService` and `AllocService` over a [`Core`].
#[derive(Clone)]
pub struct Api {
    core: Arc<Core>,
}

impl Api {
    /// Services over `core`.
    pub fn new(core: Arc<Core>) -> Api {
        Api { core }
    }
}

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Status {
        match e {
            ClusterError::Store(e) => store_status::store_unavailable(&e),
            ClusterError::Contended { .. } => Status::aborted(e.to_string()),
            ClusterError::TooLarge { .. } | ClusterError::JobTooLarge { .. } => {
                Status::invalid_argument(e.to_string())
            }
            ClusterError::Subnet { .. } => Status::resource_exhausted(e.to_string()),
            ClusterError::SubnetRefused { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}

/// Refuses an empty id of a `what` ("node", "allocation").
fn check_id(what: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{what} id is empty")));
    }
    Ok(())
}

/// The one `what` that `id` (an id prefix or a name) matches among `hits`,
/// or why there is not exactly one.
fn only_match<T>(what: &str, id: &str, hits: Vec<T>) -> Result<T, Status> {
    let n = hits.len();
    let mut it = hits.into_iter();
    match (n, it.next()) {
        (1, Some(hit)) => Ok(hit),
        (0, _) | (_, None) => Err(Status::not_found(format!("no {what} with id {id:?}"))),
        (n, Some(_)) => Err(Status::invalid_argument(format!(
            "{what} id {id:?} matches {n} {what}s; give more of it"
        ))),
    }
}

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// gRPC server reflection could not be set up.
    #[error("building gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("scheduler gRPC server on {addr}: {source}")]
    Transport {
        /// Listening address.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Serves the scheduler's gRPC API (jobs, nodes, allocations, agents, plus
/// the standard health and reflection services) on an already-bound
/// listener until `shutdown` is cancelled, with the core's background
/// loops ([`spawn_loops`]). One scheduler, no election: see
/// [`crate::leader::serve_elected`] for replicas.
///
/// With `tls`, every connection must present a client certificate signed
/// by the configured CA (mutual TLS), and each call is checked against the
/// role it carries ([`crate::access`]); calls that change the cluster are
/// recorded in the audit trail ([`crate::audit`]).
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), ServeError> {
    spawn_loops(&core, &shutdown);
    serve_api(core, listener, shutdown, tls, Gate::open()).await
}

/// Starts what only the leader runs besides answering calls, until `stop`
/// is cancelled: the periodic reconcile with the prompt passes over jobs
/// waiting for capacity, the reschedule alarm, the watch of the DNS
/// records relayed to agents, the launcher of periodic jobs' children and
/// the deployments' timers.
pub fn spawn_loops(core: &Arc<Core>, stop: &CancellationToken) {
    tokio::spawn(core.clone().run_passes(stop.clone()));
    tokio::spawn(core.clone().reschedule_when_due(stop.clone()));
    tokio::spawn(core.clone().relay_dns_records(stop.clone()));
    tokio::spawn(core.clone().launch_periodic(stop.clone()));
    tokio::spawn(crate::events::watch::run(
        core.events().clone(),
        stop.clone(),
    ));
    let (deploys, stop) = (core.clone(), stop.clone());
    tokio::spawn(async move {
        let timers = deploys.deploy_timers();
        timers
            .run(stop, |job| {
                let core = deploys.clone();
                async move { core.step_deployment(&job).await }
            })
            .await;
    });
}

/// Serves the gRPC API on `listener` until `shutdown`, admitting calls to
/// the Drover services only through `gate` (a follower refuses them,
/// naming the leader); health and reflection always answer, the health of
/// `drover.v1.JobService` and `drover.v1.AgentService` being `SERVING`
/// only while the gate admits.
pub async fn serve_api(
    core: Arc<Core>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<tonic::transport::ServerTlsConfig>,
    gate: Gate,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(health, gate.watch(), shutdown.clone()));
    let (reflection, reflection_v1alpha) = reflection()?;
    let api = Api::new(core.clone());
    tracing::info!(%addr, mtls = tls.is_some(), "scheduler gRPC API listening");
    let mtls = tls.is_some();
    let audit = Arc::new(AuditLog::new(core.store().clone(), AuditLimits::default()));
    // Every call passes the access layer: its caller named, its method
    // checked against the caller's role, and the calls that change the
    // cluster recorded in the audit trail.
    // Streams beyond the per-connection limit wait in their client, calls
    // beyond the handled-at-once limit wait in the server (so that one
    // client's burst leaves room for everyone else's calls); the
    // long-lived streams are bounded per client in the services.
    let limits = core.load().limits();
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.streams_per_connection)
        .concurrency_limit_per_connection(limits.calls_per_connection)
        .layer(AccessLayer::new(mtls, Some(audit.clone())));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|source| ServeError::Transport {
                addr: addr.clone(),
                source,
            })?;
    }
    let cli = || gate::guard(gate.clone(), auth::require(auth::Role::Cli, mtls));
    // tonic sets TCP_NODELAY only on sockets it accepts itself
    // (`serve`), not on an incoming stream it is given. Without it, Nagle
    // holds a small message (a DNS record relayed to an agent, an
    // assignment) written after another until the agent's delayed ACK,
    // ~40 ms later.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(pb::version_service_server::VersionServiceServer::new(
            version::VersionApi,
        ))
        // Jobs up to MAX_MESSAGE_BYTES are read, so that one too large for
        // the store is refused naming its size and the store's limit.
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::job_service_server::JobServiceServer::new(api.clone())),
            cli(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::node_service_server::NodeServiceServer::new(api.clone())),
            cli(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::deployment_service_server::DeploymentServiceServer::new(
                api.clone()
            )),
            cli(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::alloc_service_server::AllocServiceServer::new(api)),
            cli(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::audit_service_server::AuditServiceServer::new(
                AuditApi::new(audit)
            )),
            cli(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::event_service_server::EventServiceServer::new(
                EventApi::new(core.events().clone())
            )),
            cli(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            bounded!(pb::agent_service_server::AgentServiceServer::new(
                AgentApi::new(core)
            )),
            gate::guard(gate.clone(), auth::require(auth::Role::Agent, mtls)),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|source| ServeError::Transport { addr, source })
}

/// Server reflection in both forms: v1, and v1alpha that many tools
/// (Python's grpcio-reflection among them) still speak.
#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(drover_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Keeps the health of the Drover services in step with the role: serving
/// while leading, not serving while following.
async fn report_health(
    health: tonic_health::server::HealthReporter,
    mut role: tokio::sync::watch::Receiver<Role>,
    shutdown: CancellationToken,
) {
    loop {
        let leading = *role.borrow_and_update() == Role::Leading;
        if leading {
            health
                .set_serving::<pb::job_service_server::JobServiceServer<Api>>()
                .await;
            health
                .set_serving::<pb::agent_service_server::AgentServiceServer<AgentApi>>()
                .await;
        } else {
            health
                .set_not_serving::<pb::job_service_server::JobServiceServer<Api>>()
                .await;
            health
                .set_not_serving::<pb::agent_service_server::AgentServiceServer<AgentApi>>()
                .await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = role.changed() => if changed.is_err() { return },
        }
    }
}
