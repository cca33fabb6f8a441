//! The read-only status page (`--http-listen`): nodes with their capacity
//! and use, jobs and their groups, allocations with their state and
//! address, services with their healthy and unhealthy instances,
//! deployments with their progress and the recent events, as one
//! server-rendered HTML page with a small inline stylesheet that refreshes
//! itself (a `<meta http-equiv="refresh">`: no script at all, and the
//! `Content-Security-Policy` allows none).
//!
//! Access is the API's: without mutual TLS the page is served on loopback
//! only ([`check_listen`] refuses any other address), to root, the
//! scheduler's user and whoever started it with sudo
//! (`drover_store::local_peer`), like the API of `drover dev`. With mutual TLS (the same
//! certificate, key and client CA as the API) every connection presents a
//! client certificate of the cluster's CA, and the page answers only
//! people with at least the viewer role (`urn:drover:role:viewer`, see
//! [`crate::access`]); agents' certificates and certificates without a
//! role get 403. The recent events are the allocations' events and the
//! audit trail's entries; only admins may read the audit trail, so other
//! people's pages leave those out.
//!
//! The page reads the state from the store on each request. Only the
//! leader's view is current, so a follower shows no state: it says it is
//! a follower and names the leader's address.
//!
//! It is served by the same HTTP stack as the gRPC API (tonic's server,
//! which accepts HTTP/1.1 and HTTP/2, with an axum router inside).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::access::{identify, Caller, Kind, Role as Person};
use crate::discovery::Discovery;
use crate::gate::Role;

pub mod render;
pub mod snapshot;

pub use snapshot::{recent_events, Event, Snapshot};

/// Default seconds between the page's own refreshes.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// The role a person needs to see the page under mutual TLS.
pub const NEEDED_ROLE: Person = Person::Viewer;

/// What the page is made from: the store, the discovery settings (for
/// the healthy counts) and this scheduler's role in the election.
#[derive(Debug, Clone)]
pub struct StatusPage {
    store: Store,
    discovery: Discovery,
    role: watch::Receiver<Role>,
    refresh: Duration,
}

impl StatusPage {
    /// The page of the state in `store`, as a scheduler whose role
    /// `role` follows sees it.
    pub fn new(store: Store, discovery: Discovery, role: watch::Receiver<Role>) -> StatusPage {
        StatusPage {
            store,
            discovery,
            role,
            refresh: DEFAULT_REFRESH,
        }
    }

    /// The same page, refreshing every `refresh` (at least 1 s).
    pub fn with_refresh(self, refresh: Duration) -> StatusPage {
        StatusPage { refresh, ..self }
    }

    /// The page's HTML as of now, for `caller`: the recent events (from
    /// the audit trail) only for those who may read the trail (admins, and
    /// anyone on loopback without mutual TLS).
    pub async fn html(&self, caller: &Caller) -> String {
        let role = self.role.borrow().clone();
        let info = render::PageInfo {
            role: &role,
            now_unix_ms: now_unix_ms(),
            refresh_secs: self.refresh.as_secs().max(1),
        };
        if role != Role::Leading {
            return render::page(&info, None, None);
        }
        let events = matches!(caller.kind, Kind::Loopback | Kind::Person(Person::Admin));
        match Snapshot::load(&self.store, &self.discovery, events).await {
            Ok(snap) => render::page(&info, Some(&snap), None),
            Err(error) => {
                tracing::warn!(%error, "status page: cannot read the state");
                render::page(&info, None, Some(&error.to_string()))
            }
        }
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Errors starting or running the status page's server.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A listen address off loopback without mutual TLS.
    #[error(
        "status page on {addr}: serving off loopback needs mutual TLS (give --tls-cert, \
         --tls-key and --tls-client-ca; people then need a certificate with at least the \
         viewer role, `drover tls issue --role viewer`), or listen on 127.0.0.1"
    )]
    NeedsTls {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The HTTP server failed.
    #[error("status page server on {addr}: {source}")]
    Transport {
        /// The listening address.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Refuses a listen address off loopback unless the page is served with
/// mutual TLS (`mtls`).
pub fn check_listen(addr: SocketAddr, mtls: bool) -> Result<(), WebError> {
    if !mtls && !addr.ip().is_loopback() {
        return Err(WebError::NeedsTls { addr });
    }
    Ok(())
}

/// Serves `page` on the already-bound `listener` until `shutdown`. With
/// `tls` (the API's mutual TLS) every request needs a client certificate
/// with at least the viewer role; without, the listener must be on
/// loopback.
pub async fn serve_status(
    page: StatusPage,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), WebError> {
    let local = listener.local_addr().ok();
    let addr = local.map(|a| a.to_string()).unwrap_or_default();
    if let Some(local) = local {
        check_listen(local, tls.is_some())?;
    }
    let mtls = tls.is_some();
    let router = axum::Router::new()
        .route("/", axum::routing::get(index))
        .fallback(not_found)
        .with_state(Arc::new(Shared { page, mtls }));
    let mut builder = tonic::transport::Server::builder().accept_http1(true);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|source| WebError::Transport {
                addr: addr.clone(),
                source,
            })?;
    }
    tracing::info!(%addr, mtls, "status page listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    builder
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|source| WebError::Transport { addr, source })
}

struct Shared {
    page: StatusPage,
    mtls: bool,
}

/// Who may see the page: anyone without mutual TLS (loopback only); with
/// it, a person whose certificate carries at least the viewer role. The
/// refusal's status and message otherwise.
pub fn admit(mtls: bool, cert_der: Option<&[u8]>) -> Result<Caller, (StatusCode, String)> {
    if !mtls {
        return Ok(Caller::loopback());
    }
    let Some(der) = cert_der else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "the status page needs a client certificate of the cluster".to_owned(),
        ));
    };
    let caller = identify(der).map_err(|s| (StatusCode::FORBIDDEN, s.message().to_owned()))?;
    match caller.kind {
        Kind::Person(role) if role >= NEEDED_ROLE => Ok(caller),
        Kind::Loopback => Ok(caller),
        Kind::Person(_) | Kind::Agent => Err((
            StatusCode::FORBIDDEN,
            format!(
                "the status page needs the {NEEDED_ROLE} role; {} is an {} certificate",
                caller.name,
                caller.role_name()
            ),
        )),
    }
}

fn peer_cert(req: &Request) -> Option<Vec<u8>> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)?;
    certs.first().map(|c| c.as_ref().to_vec())
}

fn peer_addr(req: &Request) -> String {
    let ext = req.extensions();
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .map(|a| a.to_string())
        .unwrap_or_default()
}

async fn index(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if !shared.mtls {
        // Loopback is shared by the machine's users: as the API.
        let info = req.extensions().get::<TcpConnectInfo>();
        let (server, client) = (
            info.and_then(TcpConnectInfo::local_addr),
            info.and_then(TcpConnectInfo::remote_addr),
        );
        if let Err(why) = drover_store::local_peer::check(server, client, "the status page") {
            tracing::warn!(peer = %peer_addr(&req), reason = %why, "status page refused");
            return with_headers(
                (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
                "text/plain",
            );
        }
    }
    let cert = peer_cert(&req);
    let caller = match admit(shared.mtls, cert.as_deref()) {
        Ok(caller) => caller,
        Err((status, why)) => {
            tracing::warn!(peer = %peer_addr(&req), reason = %why, "status page refused");
            return with_headers((status, format!("{why}\n")).into_response(), "text/plain");
        }
    };
    let html = shared.page.html(&caller).await;
    with_headers(html.into_response(), "text/html")
}

async fn not_found() -> Response {
    with_headers(
        (
            StatusCode::NOT_FOUND,
            "not found: the status page is at /\n",
        )
            .into_response(),
        "text/plain",
    )
}

/// The page's headers: its type, no caching, and a policy that runs no
/// script and loads nothing from anywhere (the stylesheet is inline).
fn with_headers(mut r: Response, kind: &'static str) -> Response {
    let h = r.headers_mut();
    let content_type = if kind == "text/html" {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests;
