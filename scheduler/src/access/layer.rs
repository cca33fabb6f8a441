//! The tower layer in front of every gRPC service of the scheduler: it
//! names the caller, refuses what the caller's role does not allow, and
//! records audited calls (see [`crate::audit`]).
//!
//! A layer rather than per-service interceptors: an interceptor does not
//! see which method is called, and a layer covers every service the server
//! holds, including ones added later (which have no rule, so are refused
//! until they get one).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::{authorize, identify, needed, rule_of, Caller};
use crate::audit::{AuditEntry, AuditLog, Note};

/// How long an audit write may hold up the answer to the call it records.
const AUDIT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks each call against [`super::rules::RULES`]; see the module docs.
#[derive(Clone, Debug)]
pub struct AccessLayer {
    mtls: bool,
    audit: Option<Arc<AuditLog>>,
}

impl AccessLayer {
    /// With `mtls`, callers are named by their client certificates;
    /// without, every caller is [`Caller::loopback`] (the scheduler then
    /// serves loopback only), admitted only from root and the scheduler's
    /// own user. Audited calls go to `audit`.
    pub fn new(mtls: bool, audit: Option<Arc<AuditLog>>) -> AccessLayer {
        AccessLayer { mtls, audit }
    }

    fn caller(&self, req: &http::Request<Body>) -> Result<Caller, Status> {
        if !self.mtls {
            // Loopback is shared by every user of the machine: only root
            // and the scheduler's own user may call (see
            // `drover_store::local_peer`).
            let info = req.extensions().get::<TcpConnectInfo>();
            drover_store::local_peer::check(
                info.and_then(TcpConnectInfo::local_addr),
                info.and_then(TcpConnectInfo::remote_addr),
                "the scheduler",
            )
            .map_err(Status::permission_denied)?;
            return Ok(Caller::loopback());
        }
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .ok_or_else(|| Status::unauthenticated("no client certificate presented"))?;
        let der = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate presented"))?;
        identify(der.as_ref())
    }
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AccessLayer`] wraps around the scheduler's.
#[derive(Clone, Debug)]
pub struct Access<S> {
    inner: S,
    layer: AccessLayer,
}

/// The caller's address, from the connection.
fn peer(req: &http::Request<Body>) -> String {
    let ext = req.extensions();
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// `Code: message` of a status, or `ok` for none.
fn outcome(status: Option<&Status>) -> String {
    match status {
        None => "ok".to_owned(),
        Some(s) if s.code() == tonic::Code::Ok => "ok".to_owned(),
        Some(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

impl<S> Service<http::Request<Body>> for Access<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The ready service serves this call; a fresh clone the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_owned();
        let method = path.trim_start_matches('/').to_owned();
        let action = rule_of(&path).and_then(|r| r.audit);
        let caller = self.layer.caller(&req);
        let verdict = match &caller {
            Ok(c) => authorize(&path, c).map(|_| ()),
            // A local user loopback does not admit: the uid says it all.
            Err(s) if s.code() == tonic::Code::PermissionDenied => Err(s.clone()),
            Err(s) => {
                let need = rule_of(&path).map_or("a rule".to_owned(), |r| needed(r.need));
                Err(Status::new(
                    s.code(),
                    format!("{method} needs {need}: {}", s.message()),
                ))
            }
        };
        let mut entry = AuditEntry {
            caller: caller
                .as_ref()
                .map_or("unidentified".into(), |c| c.name.clone()),
            role: caller.as_ref().map_or("", |c| c.role_name()).to_owned(),
            method: method.clone(),
            action: action.unwrap_or_default().to_owned(),
            peer: peer(&req),
            ..AuditEntry::default()
        };
        let audit = self.layer.audit.clone().filter(|_| action.is_some());
        Box::pin(async move {
            let note = Note::default();
            let response = match verdict {
                Err(refused) => {
                    tracing::warn!(
                        %method,
                        caller = %entry.caller,
                        role = %entry.role,
                        peer = %entry.peer,
                        reason = %refused.message(),
                        "call refused"
                    );
                    entry.outcome = outcome(Some(&refused));
                    refused.into_http()
                }
                Ok(()) => {
                    if let Ok(c) = caller {
                        req.extensions_mut().insert(c);
                    }
                    req.extensions_mut().insert(note.clone());
                    let response = inner.call(req).await?;
                    entry.outcome = outcome(Status::from_header_map(response.headers()).as_ref());
                    response
                }
            };
            if let Some(log) = audit {
                (entry.target, entry.detail) = note.take();
                entry.time_unix_ms = drover_model::clock::now_ms();
                match tokio::time::timeout(AUDIT_WRITE_TIMEOUT, log.record(entry)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(%method, error = %e, "audit entry not stored"),
                    Err(_) => tracing::warn!(%method, "audit entry not stored within 5 s"),
                }
            }
            Ok(response)
        })
    }
}
