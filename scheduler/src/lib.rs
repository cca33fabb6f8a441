//! Drover's scheduler.
//!
//! [`job`] validates submissions, [`jobfile`] parses TOML job files,
//! [`placement`] is the pure placement function, [`state`] holds the records
//! kept in etcd, [`subnet`] cuts node task subnets from the cluster CIDR,
//! and [`core`], [`api`] and [`agents`] are the thin store and gRPC loop
//! around them.

pub mod agents;
pub mod api;
pub mod auth;
pub mod core;
mod exec;
pub mod job;
pub mod jobfile;
mod node_net;
pub mod placement;
pub mod reconcile;
pub mod state;
pub mod subnet;
#[cfg(test)]
mod testkit;
pub mod transitions;

use std::sync::Arc;

use drover_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use crate::core::{Core, Timing};

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
/// listener until `shutdown` is cancelled. Also runs the periodic reconcile.
///
/// With `tls`, every connection must present a client certificate signed
/// by the configured CA (mutual TLS).
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::job_service_server::JobServiceServer<api::Api>>()
        .await;
    health
        .set_serving::<pb::agent_service_server::AgentServiceServer<agents::AgentApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(drover_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let api = api::Api::new(core.clone());

    let reconcile_core = core.clone();
    let reconcile_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(reconcile_core.timing.reconcile);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = reconcile_stop.cancelled() => return,
            }
            if let Err(error) = reconcile_core.reconcile().await {
                tracing::warn!(%error, "reconcile failed");
            }
        }
    });

    tracing::info!(%addr, mtls = tls.is_some(), "scheduler gRPC API listening");
    let mtls = tls.is_some();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|source| ServeError::Transport {
                addr: addr.clone(),
                source,
            })?;
    }
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(pb::job_service_server::JobServiceServer::with_interceptor(
            api.clone(),
            auth::require(auth::Role::Cli, mtls),
        ))
        .add_service(
            pb::node_service_server::NodeServiceServer::with_interceptor(
                api.clone(),
                auth::require(auth::Role::Cli, mtls),
            ),
        )
        .add_service(
            pb::alloc_service_server::AllocServiceServer::with_interceptor(
                api,
                auth::require(auth::Role::Cli, mtls),
            ),
        )
        .add_service(
            pb::agent_service_server::AgentServiceServer::with_interceptor(
                agents::AgentApi::new(core),
                auth::require(auth::Role::Agent, mtls),
            ),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
        .map_err(|source| ServeError::Transport { addr, source })
}
