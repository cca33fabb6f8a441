//! What every long-running role of the binary does alike: logging to
//! stderr, writing the addresses it bound, ending on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// How a long-running role writes its log lines on stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`,
    /// `spans`), for log shippers.
    Json,
}

/// The log flags every long-running command (`dev`, `scheduler`, `agent`,
/// `dns`) takes besides its `--log` filter.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LogFormatArgs {
    /// Log line format on stderr: `text` (colour only on a terminal) or
    /// `json` (one object per line, for log shippers).
    #[arg(long, value_enum, env = "DROVER_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Sets up the one tracing subscriber, on stderr, with `filter`, in
/// `format`.
pub(crate) fn init_logging(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    // hickory-server logs every DNS request at `info`.
    let filter = if filter.contains("hickory") {
        filter.to_string()
    } else {
        format!("{filter},hickory_server=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// Whether text log lines get colour escapes: only on a terminal (a log
/// file, a pipe or journald gets none), and not when the user set
/// `NO_COLOR` to anything non-empty (https://no-color.org).
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
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

/// Refuses `addr` given as `flag` unless it is a loopback address, saying
/// `why`.
pub(crate) fn require_loopback(flag: &str, addr: SocketAddr, why: &str) -> Result<()> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("{flag} {addr}: {why}");
    }
    Ok(())
}

/// Why `drover dev` refuses an address off loopback.
pub(crate) const DEV_LOOPBACK: &str = "drover dev serves on loopback only; use 127.0.0.1";

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
    }
}
