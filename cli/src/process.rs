//! What every long-running role of the binary does alike: logging to
//! stderr, writing the addresses it bound, ending on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// Sets up the one tracing subscriber, on stderr, with `filter`.
pub(crate) fn init_logging(filter: &str) {
    // hickory-server logs every DNS request at `info`.
    let filter = if filter.contains("hickory") {
        filter.to_string()
    } else {
        format!("{filter},hickory_server=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Writes `addr` to `path` atomically (a temporary file renamed over it),
/// so a reader never sees half an address.
pub(crate) fn write_addr(path: &Path, addr: SocketAddr) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(drover_agent::private_fs::PRIVATE_FILE_MODE)
        .open(&tmp)
        .and_then(|mut f| {
            drover_agent::private_fs::make_private(&f)?;
            f.write_all(format!("{addr}\n").as_bytes())
        })
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Cancels `token` on SIGINT or SIGTERM.
pub(crate) fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down; tasks keep running and are re-adopted on the next start");
        token.cancel();
    });
}
