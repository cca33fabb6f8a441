//! The node's [`Prober`]: tcp and http checks connect to `127.0.0.1` of
//! the allocation, exec checks run their command in its task.
//!
//! The allocation's loopback is in its network namespace: the socket is
//! made by a short-lived thread that has joined that namespace
//! ([`Netns::run`], on tokio's blocking pool so the async loop never
//! waits on it), and keeps the namespace it was made in once handed back
//! to tokio, which connects it and does the I/O. So a check reaches the
//! task's `127.0.0.1` and never the host's. An allocation on the host's
//! network (no namespace of its own) is probed from the agent's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drover_model::job::CheckSpec;
use drover_model::CheckKind;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{command, http, Outcome, Prober, Target};
use crate::net::Netns;
use crate::runtime::Runtime;

/// Runs checks on this node's allocations.
#[derive(Debug, Clone)]
pub struct NodeProber {
    runtime: Arc<Runtime>,
    exe: PathBuf,
}

impl NodeProber {
    /// Exec checks run in tasks of `runtime` through `exe __exec` (the
    /// `drover exec` helper).
    pub fn new(runtime: Arc<Runtime>, exe: PathBuf) -> NodeProber {
        NodeProber { runtime, exe }
    }
}

impl Prober for NodeProber {
    fn probe(&self, target: &Target, check: &CheckSpec) -> BoxFuture<'static, Outcome> {
        let netns = target.netns.clone();
        let port = check.port;
        match check.kind {
            CheckKind::Tcp => Box::pin(tcp(netns, port)),
            CheckKind::Http => Box::pin(get(netns, port, check.path.clone())),
            CheckKind::Exec => Box::pin(command::run(
                Arc::clone(&self.runtime),
                self.exe.clone(),
                target.alloc_id.clone(),
                check.task.clone(),
                check.command.clone(),
            )),
        }
    }
}

/// An unconnected IPv4 TCP socket in the namespace at `netns` (the
/// agent's own for `None`).
pub async fn socket_in(netns: Option<PathBuf>) -> Result<TcpSocket, String> {
    let Some(path) = netns else {
        return TcpSocket::new_v4().map_err(|e| format!("socket: {e}"));
    };
    tokio::task::spawn_blocking(move || socket_in_blocking(&path))
        .await
        .map_err(|e| format!("socket in the allocation's network namespace: {e}"))?
}

fn socket_in_blocking(path: &Path) -> Result<TcpSocket, String> {
    let netns = Netns::open(path).map_err(|e| e.to_string())?;
    netns
        .run(TcpSocket::new_v4)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("socket in {}: {e}", path.display()))
}

/// A connection to `127.0.0.1:port` in `netns`.
pub async fn connect(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, String> {
    let socket = socket_in(netns).await?;
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))
}

/// A tcp check: the connection is accepted.
async fn tcp(netns: Option<PathBuf>, port: u16) -> Outcome {
    match connect(netns, port).await {
        Ok(_) => Outcome::pass(format!("connected to 127.0.0.1:{port}")),
        Err(e) => Outcome::fail(e),
    }
}

/// An http check: `GET path` answers 2xx or 3xx; the output is the status
/// line.
async fn get(netns: Option<PathBuf>, port: u16, path: String) -> Outcome {
    match status_of(netns, port, &path).await {
        Ok((line, code)) => Outcome {
            passed: http::passes(code),
            output: line,
        },
        Err(e) => Outcome::fail(e),
    }
}

async fn status_of(netns: Option<PathBuf>, port: u16, path: &str) -> Result<(String, u16), String> {
    let mut stream = connect(netns, port).await?;
    stream
        .write_all(&http::request(path, port))
        .await
        .map_err(|e| format!("sending GET {path} to 127.0.0.1:{port}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer to GET {path}: {e}"))?;
        head.extend_from_slice(&buf[..n]);
        match http::status_line(&head, n == 0) {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => continue,
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
}
