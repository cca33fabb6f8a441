//! `--http-listen` of `drover dev` and `drover scheduler`: the read-only
//! status page ([`drover_scheduler::web`]).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use drover_scheduler::web::{check_listen, serve_status, StatusPage, WebError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::process::write_addr;

/// Where `drover dev` serves the status page unless told otherwise.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:4681";

/// Binds `addr` (refused off loopback without `tls`), writes the bound
/// address to `addr_file`, logs the page's URL and serves `page` until
/// `shutdown`.
pub async fn start(
    addr: SocketAddr,
    tls: Option<tonic::transport::ServerTlsConfig>,
    page: StatusPage,
    shutdown: CancellationToken,
    addr_file: Option<&Path>,
) -> Result<(SocketAddr, JoinHandle<Result<(), WebError>>)> {
    check_listen(addr, tls.is_some()).map_err(|e| anyhow::anyhow!("--http-listen: {e}"))?;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (--http-listen); is another drover running?")
    })?;
    let bound = listener.local_addr()?;
    if let Some(path) = addr_file {
        write_addr(path, bound)?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, "status page on {scheme}://{bound}/");
    let task = tokio::spawn(serve_status(page, listener, shutdown, tls));
    Ok((bound, task))
}

/// `drover dev`'s page: no TLS (loopback), its address written to
/// `<data_dir>/http.addr`.
pub async fn start_dev(
    addr: SocketAddr,
    data_dir: &Path,
    page: StatusPage,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<Result<(), WebError>>)> {
    let file = data_dir.join("http.addr");
    start(addr, None, page, shutdown, Some(&file)).await
}

/// Logs how the status page's server ended, when it failed.
pub async fn log_end(task: JoinHandle<Result<(), WebError>>) {
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "status page stopped"),
        Err(error) => tracing::error!(%error, "status page task panicked"),
    }
}
