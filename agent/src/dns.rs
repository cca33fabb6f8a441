//! The node's DNS server: the service-discovery zone answered on the
//! bridge address, port 53, the `nameserver` of every task's resolv.conf.
//!
//! The agent has no etcd access: its records come relayed by the
//! scheduler on the session stream (`DnsUpdate`, see the scheduler's
//! `relay::dns` for why a relay). [`Feed`] stages the chunks of one relayed
//! batch, and [`NodeDns::update`] applies a whole batch to the index at
//! once: a reset replaces the index, other batches change it in one write.
//! The server itself is `drover_dns` ([`Handler`] and
//! [`drover_dns::server::serve`]) on sockets bound here, with the zone the
//! scheduler names in `Registered.dns_zone` and names outside it forwarded
//! to the host's resolv.conf upstreams (minus this server itself), or
//! refused when that file cannot be read.
//!
//! The index and the server outlive a session: while the stream to the
//! scheduler is broken the server keeps answering from the last records,
//! and says so in the log; the next session's snapshot replaces them.
//! Without a node bridge (the node network could not come up) there is no
//! address to serve on, and the agent says so and serves nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use drover_dns::config::ZoneConfig;
use drover_dns::handler::Handler;
use drover_dns::{Event, Index, SharedIndex};
use drover_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

pub use drover_model::skydns::DEFAULT_ZONE;

/// The port tasks reach the node's DNS on (the only one the firewall
/// lets them reach).
pub const DNS_PORT: u16 = crate::net::firewall::DNS_PORT;

/// Longest wait between attempts to bind the DNS address.
const MAX_BIND_RETRY: Duration = Duration::from_secs(10);

/// How the node's DNS is set up (`drover agent --no-dns`, `--dns-listen`,
/// `--dns-config`).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Serve at all.
    pub enabled: bool,
    /// Where to answer; the bridge address, port 53, when unset.
    pub listen: Option<SocketAddr>,
    /// Upstreams, resolv.conf, timeouts, TTLs. Its `zone` is replaced by
    /// the scheduler's.
    pub zone: ZoneConfig,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            zone: ZoneConfig::default(),
        }
    }
}

/// The zone named in `Registered.dns_zone`, or [`DEFAULT_ZONE`].
pub fn zone_of(registered: &pb::Registered) -> &str {
    match registered.dns_zone.trim() {
        "" => DEFAULT_ZONE,
        zone => zone,
    }
}

/// One relayed batch, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Replaces the whole index.
    pub reset: bool,
    /// The store revision it brings the index to.
    pub revision: i64,
    /// The records, in store order.
    pub records: Vec<pb::DnsRecord>,
}

/// Stages the chunks of one batch until its last arrives. One per session:
/// a stream that breaks mid-batch leaves nothing half-applied.
#[derive(Debug, Default)]
pub struct Feed {
    staged: Option<Batch>,
}

impl Feed {
    /// Takes one `DnsUpdate`; returns the batch once its last chunk
    /// (`more` unset) arrived.
    pub fn take(&mut self, update: pb::DnsUpdate) -> Option<Batch> {
        let staged = self.staged.get_or_insert_with(|| Batch {
            reset: update.reset,
            revision: update.revision,
            records: Vec::new(),
        });
        staged.records.extend(update.records);
        staged.revision = staged.revision.max(update.revision);
        if update.more {
            return None;
        }
        self.staged.take()
    }
}

fn event(record: pb::DnsRecord) -> Event {
    let key = record.key.into_bytes();
    if record.deleted {
        Event::Delete { key }
    } else {
        Event::Put {
            key,
            value: record.value,
        }
    }
}

/// Applies a whole batch to `index`: a reset builds a new index and swaps
/// it in, others change it under one write lock.
pub fn apply(index: &SharedIndex, batch: Batch) {
    if batch.reset {
        let puts = batch.records.into_iter().filter(|r| !r.deleted).map(event);
        index.replace(Index::load(puts, batch.revision));
        return;
    }
    index.write(|i| {
        for record in batch.records {
            if let Err(error) = i.apply(&event(record)) {
                tracing::warn!(%error, "ignoring a relayed DNS record");
            }
        }
        i.set_revision(i.revision().max(batch.revision));
    });
}

/// A server task and what it serves.
#[derive(Debug)]
struct Server {
    zone: String,
    addr: SocketAddr,
    stop: CancellationToken,
}

/// The node's DNS: the index fed by the scheduler and the server answering
/// from it. See the module docs.
#[derive(Debug)]
pub struct NodeDns {
    config: DnsConfig,
    index: SharedIndex,
    server: Option<Server>,
    /// Stops every server with the agent.
    shutdown: CancellationToken,
    /// Whether the current session has delivered records yet.
    relayed: bool,
}

impl NodeDns {
    /// The node's DNS, serving nothing until [`NodeDns::ensure`].
    pub fn new(config: DnsConfig, shutdown: CancellationToken) -> Self {
        Self {
            config,
            index: SharedIndex::default(),
            server: None,
            shutdown,
            relayed: false,
        }
    }

    /// The index the server answers from.
    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    /// Where the server answers, once started.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr)
    }

    /// Serves `zone` on the bridge address `bridge` (port 53) or the
    /// configured address, on every `Registered`: started the first time,
    /// restarted when the zone or address changed, left alone otherwise.
    /// Without a bridge, says why nothing is served.
    pub fn ensure(&mut self, bridge: Option<Ipv4Addr>, zone: &str) {
        if !self.config.enabled {
            return;
        }
        let addr = match (self.config.listen, bridge) {
            (Some(addr), _) => addr,
            (None, Some(ip)) => SocketAddr::from((ip, DNS_PORT)),
            (None, None) => {
                tracing::info!(
                    "no node bridge (the node network is not up): the node's DNS is not served"
                );
                return;
            }
        };
        if let Some(s) = &self.server {
            if s.zone == zone && s.addr == addr {
                return;
            }
            tracing::info!(old_zone = %s.zone, zone, old = %s.addr, %addr, "restarting the node's DNS");
            s.stop.cancel();
        }
        let mut config = self.config.zone.clone();
        config.zone = zone.to_owned();
        let checked = match config.zone() {
            Ok(z) => z,
            Err(error) => {
                tracing::error!(%error, zone, "the node's DNS cannot serve this zone");
                self.server = None;
                return;
            }
        };
        let forwarder = config.forwarder();
        let handler = Handler::new(checked, self.index.clone(), forwarder);
        let stop = self.shutdown.child_token();
        tokio::spawn(serve(handler, addr, stop.clone()));
        self.server = Some(Server {
            zone: zone.to_owned(),
            addr,
            stop,
        });
    }

    /// Takes one relayed update, applying its batch once whole.
    pub fn update(&mut self, feed: &mut Feed, update: pb::DnsUpdate) {
        let Some(batch) = feed.take(update) else {
            return;
        };
        let (reset, revision, records) = (batch.reset, batch.revision, batch.records.len());
        apply(&self.index, batch);
        if !std::mem::replace(&mut self.relayed, true) {
            let endpoints = self.index.read(Index::len);
            tracing::info!(
                revision,
                endpoints,
                reset,
                "DNS records relayed by the scheduler"
            );
        } else {
            tracing::debug!(revision, records, reset, "DNS records updated");
        }
    }

    /// The session ended: the server goes on with the last records.
    pub fn scheduler_lost(&mut self) {
        if !std::mem::replace(&mut self.relayed, false) || self.server.is_none() {
            return;
        }
        let (endpoints, revision) = self.index.read(|i| (i.len(), i.revision()));
        tracing::warn!(
            endpoints,
            revision,
            "scheduler unreachable: the node's DNS answers from the last records it relayed"
        );
    }
}

/// Binds `addr` (retrying with backoff while it cannot: the address may be
/// taken for a moment by a server being replaced) and serves until `stop`.
async fn serve(handler: Handler, addr: SocketAddr, stop: CancellationToken) {
    let mut wait = Duration::from_millis(100);
    let mut said = false;
    let (udp, tcp) = loop {
        match drover_dns::server::bind_pair(addr).await {
            Ok(pair) => break pair,
            Err(error) => {
                if !std::mem::replace(&mut said, true) {
                    tracing::error!(%error, retry_in = ?wait, "the node's DNS cannot bind its address; retrying");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        wait = (wait * 2).min(MAX_BIND_RETRY);
    };
    tracing::info!(%addr, zone = %handler.zone().origin, "the node's DNS is serving");
    if let Err(error) = drover_dns::server::serve(handler, vec![udp], vec![tcp], stop).await {
        tracing::error!(%error, %addr, "the node's DNS stopped");
    }
}

#[cfg(test)]
mod tests;
