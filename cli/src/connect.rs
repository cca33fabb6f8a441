//! The connection to the scheduler every client command makes, and what
//! its gRPC errors mean for people.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::ClientOpts;

/// Connects to the scheduler, or says where it tried and what to do.
pub(crate) async fn channel(opts: &ClientOpts) -> Result<Channel> {
    let tls = opts.tls.load()?;
    let addr = if opts.addr.contains("://") {
        opts.addr.clone()
    } else if tls.is_some() {
        format!("https://{}", opts.addr)
    } else {
        format!("http://{}", opts.addr)
    };
    let mut endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|e| anyhow!("--addr {:?} is not a valid address: {e}", opts.addr))?
        .connect_timeout(Duration::from_secs(3));
    match tls {
        Some(tls) => {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| anyhow!("TLS setup for {addr}: {e}"))?;
        }
        None if addr.starts_with("https://") => {
            bail!("{addr} is https: give --tls-ca, --tls-cert and --tls-key (or DROVER_TLS_*)")
        }
        None => {}
    }
    endpoint.connect().await.map_err(|e| {
        let cause = root_cause(&e).unwrap_or_else(|| e.to_string());
        anyhow!(
            "cannot reach the Drover scheduler at {addr}: {cause}\n\
             Is `drover dev` (or `drover scheduler`) running there? \
             Point --addr or DROVER_ADDR at it."
        )
    })
}

/// The message of the innermost error below `e`, if it has a source.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = None;
    let mut src = e.source();
    while let Some(s) = src {
        cause = Some(s.to_string());
        src = s.source();
    }
    cause
}

/// Turns a gRPC status into an error message for people.
pub(crate) fn status_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => {
            anyhow!("{}", s.message())
        }
        Code::Unavailable => anyhow!("scheduler unavailable: {}", s.message()),
        Code::OutOfRange if s.message().contains("message length too large") => anyhow!(
            "{}: a gRPC message over the limit (Drover's API carries messages of at most {}; \
             a job is stored only up to 1.5 MiB)",
            s.message(),
            mib(drover_proto::MAX_MESSAGE_BYTES)
        ),
        Code::Internal if s.message().contains("h2 protocol error") => anyhow!(
            "the scheduler did not answer plaintext gRPC ({}); it probably requires mutual TLS: \
             use an https:// --addr with --tls-ca, --tls-cert and --tls-key",
            s.message()
        ),
        Code::Cancelled | Code::Unknown => {
            // The innermost cause says why (a TLS alert from the server,
            // a reset), where the status only says "transport error".
            let why = match root_cause(&s) {
                Some(cause) => format!("{}: {cause}", s.message()),
                None => s.message().to_string(),
            };
            anyhow!(
                "the scheduler closed the connection ({why}); if it uses mutual TLS, check that \
                 --tls-cert is a client certificate signed by the cluster CA"
            )
        }
        _ => anyhow!("{:?}: {}", s.code(), s.message()),
    }
}

/// A size in MiB, one decimal.
pub(crate) fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
