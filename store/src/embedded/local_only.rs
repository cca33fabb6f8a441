//! The embedded store admits loopback calls only from root and its own
//! user ([`crate::local_peer`]): a layer over every service it serves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;

use crate::local_peer::PeerLookup;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LocalUsersLayer {
    lookup: Arc<PeerLookup>,
}

impl LocalUsersLayer {
    /// Asking about connections with `lookup` (the listener's namespace).
    pub fn new(lookup: PeerLookup) -> LocalUsersLayer {
        LocalUsersLayer {
            lookup: Arc::new(lookup),
        }
    }
}

impl<S> tower_layer::Layer<S> for LocalUsersLayer {
    type Service = LocalUsers<S>;

    fn layer(&self, inner: S) -> LocalUsers<S> {
        LocalUsers {
            inner,
            lookup: Arc::clone(&self.lookup),
        }
    }
}

/// The service [`LocalUsersLayer`] wraps.
#[derive(Debug, Clone)]
pub struct LocalUsers<S> {
    inner: S,
    lookup: Arc<PeerLookup>,
}

impl<S> Service<http::Request<Body>> for LocalUsers<S>
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

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let info = req.extensions().get::<TcpConnectInfo>();
        let (server, client) = (
            info.and_then(TcpConnectInfo::local_addr),
            info.and_then(TcpConnectInfo::remote_addr),
        );
        if let Err(why) = self.lookup.check(server, client, "the embedded store") {
            tracing::warn!(path = %req.uri().path(), ?client, reason = %why, "store call refused");
            return Box::pin(async move { Ok(Status::permission_denied(why).into_http()) });
        }
        // The ready service serves this call; a fresh clone the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}
