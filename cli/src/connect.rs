//! The connection to the scheduler every client command makes, and what
//! its gRPC errors mean for people.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use drover_proto::v1 as pb;
use drover_scheduler::gate::LEADER_METADATA;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::ClientOpts;

/// How long a client command waits for a leader while the replicas it
/// reached say none is elected yet, or name one that does not answer (an
/// election after the leader died takes about the leader lease's TTL).
const LEADER_WAIT: Duration = Duration::from_secs(20);
/// Pause between rounds over the addresses while waiting for a leader.
const LEADER_RETRY: Duration = Duration::from_millis(200);

/// The URLs of a comma-separated address list: `https://` with TLS and
/// `http://` without for addresses given without a scheme.
pub(crate) fn urls(list: &str, tls: bool) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| url(a, tls))
        .collect()
}

fn url(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// Connects to the scheduler that leads, or says where it tried and what
/// to do. `--addr` may list several replicas: each is tried in order, a
/// follower's `drover-leader` hint is followed, and while the replicas
/// that answer say no leader is elected yet (or name one that does not
/// answer), the round is tried again for up to [`LEADER_WAIT`].
pub(crate) async fn channel(opts: &ClientOpts) -> Result<Channel> {
    let tls = opts.tls.load()?;
    let addrs = urls(&opts.addr, tls.is_some());
    if addrs.is_empty() {
        bail!("--addr {:?} names no address", opts.addr);
    }
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let mut queue: std::collections::VecDeque<String> = addrs.iter().cloned().collect();
        let mut tried = std::collections::BTreeSet::new();
        let mut unreachable = None;
        let mut refusal = None;
        while let Some(addr) = queue.pop_front() {
            if !tried.insert(addr.clone()) {
                continue;
            }
            let ch = match connect(&addr, tls.clone()).await {
                Ok(ch) => ch,
                Err(e) => {
                    unreachable.get_or_insert(e);
                    continue;
                }
            };
            match probe(ch.clone()).await {
                Probe::Leader => return Ok(ch),
                Probe::Follower { leader, message } => {
                    if let Some(leader) = leader {
                        queue.push_front(url(&leader, tls.is_some()));
                    }
                    refusal = Some(format!("{addr}: {message}"));
                }
                Probe::Broken(e) => {
                    unreachable.get_or_insert(anyhow!("{addr}: {e}"));
                }
            }
        }
        match (refusal, unreachable) {
            // Nobody answered: say why, as for a single scheduler.
            (None, Some(e)) => return Err(e),
            (None, None) => bail!("--addr {:?}: no scheduler answered", opts.addr),
            (Some(why), _) if tokio::time::Instant::now() >= deadline => bail!(
                "no leading scheduler among {} after {}s ({why}); is a majority of etcd up, and is any scheduler running?",
                addrs.join(","),
                LEADER_WAIT.as_secs()
            ),
            (Some(why), _) => {
                tracing::debug!(%why, "no leader yet; trying again");
                tokio::time::sleep(LEADER_RETRY).await;
            }
        }
    }
}

/// Opens a channel to one scheduler.
async fn connect(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| anyhow!("--addr {addr:?} is not a valid address: {e}"))?
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

/// What a scheduler said to the leadership probe.
enum Probe {
    /// It serves (it leads, or runs without an election).
    Leader,
    /// A follower: it names the leader when it knows it.
    Follower {
        leader: Option<String>,
        message: String,
    },
    /// The call failed in transport.
    Broken(String),
}

/// Asks whether the scheduler at `ch` serves, with a call every follower
/// refuses and the leader answers without reading the store: `NodeService.Get`
/// of an empty id (the leader refuses it as `INVALID_ARGUMENT`).
async fn probe(ch: Channel) -> Probe {
    let mut client = pb::node_service_client::NodeServiceClient::new(ch);
    let req = pb::GetNodeRequest::default();
    match client.get(req).await {
        Ok(_) => Probe::Leader,
        Err(s) if s.code() == Code::Unavailable && s.message().starts_with("not the leader") => {
            Probe::Follower {
                leader: s
                    .metadata()
                    .get(LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                message: s.message().to_string(),
            }
        }
        Err(s)
            if matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) =>
        {
            Probe::Broken(status_error(s).to_string())
        }
        // Any other answer comes from a scheduler that serves: the command's
        // own call will meet the same problem (e.g. a refused certificate)
        // and say it.
        Err(_) => Probe::Leader,
    }
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
                "the scheduler closed the connection ({why}); it may have stopped (with \
                 replicas another takes over: retry, and check whether the request took effect), \
                 or, if it uses mutual TLS, check that --tls-cert is a client certificate signed \
                 by the cluster CA"
            )
        }
        _ => anyhow!("{:?}: {}", s.code(), s.message()),
    }
}

/// A size in MiB, one decimal.
pub(crate) fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_become_urls() {
        assert_eq!(
            urls("a:1, https://b:2,,http://c:3", false),
            ["http://a:1", "https://b:2", "http://c:3"]
        );
        assert_eq!(urls("a:1,b:2", true), ["https://a:1", "https://b:2"]);
        assert!(urls(" , ", false).is_empty());
    }
}
