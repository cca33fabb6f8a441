//! `drover dns`, and the DNS server `drover dev` runs beside its store:
//! the `drover-dns` library bound to sockets, fed by a watch of the
//! store's `/skydns/` prefix.

use drover_scheduler::Discovery;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use drover_dns::config::ZoneConfig;
use drover_dns::handler::Handler;
use drover_dns::metrics::IndexSampler;
use drover_dns::watch::Watch;
use drover_dns::SharedIndex;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The default address of `drover dns` and of `drover dev`'s DNS.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:8600";

/// Flags of `drover dns`.
#[derive(Args, Debug)]
pub struct DnsArgs {
    /// etcd endpoints, comma separated: the `/skydns/` records are read
    /// (watched) there, never written.
    #[arg(long, env = "DROVER_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// UDP and TCP address to answer on; port 0 picks a free one.
    #[arg(long, default_value = DEFAULT_DNS_LISTEN)]
    listen: SocketAddr,
    /// Write the bound address to this file (useful with port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    #[command(flatten)]
    zone: ZoneArgs,
    #[command(flatten)]
    etcd_tls: crate::etcd_tls::EtcdTlsArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    /// Log filter.
    #[arg(long, env = "DROVER_LOG", default_value = "info,hickory_server=warn")]
    log: String,
    #[command(flatten)]
    log_format: crate::process::LogFormatArgs,
}

/// The zone's settings, shared by `drover dns` and `drover dev`.
#[derive(Args, Debug, Clone)]
pub struct ZoneArgs {
    /// Zone configuration file (TOML: zone, ttl, negative_ttl, upstreams,
    /// resolv_conf, forward_timeout_ms, zone_only, ...). Flags below
    /// override it.
    #[arg(long = "dns-config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The zone answered from the store (default `drover.internal`).
    #[arg(long = "dns-zone", value_name = "NAME")]
    zone: Option<String>,
    /// Answer only the zone: names outside it are refused, not forwarded.
    #[arg(long = "dns-zone-only")]
    zone_only: bool,
    /// TTL of the zone's records, in seconds (default 5).
    #[arg(long = "dns-ttl", value_name = "SECONDS")]
    ttl: Option<u32>,
}

/// The zone and TTL the scheduler registers services under (`drover
/// scheduler`); `drover dev` takes them from its [`ZoneArgs`].
#[derive(Args, Debug, Clone)]
pub struct DiscoveryArgs {
    /// The service-discovery zone: records are written under `/skydns/`
    /// + its labels reversed, and agents answer it.
    #[arg(
        long = "dns-zone",
        value_name = "NAME",
        default_value = "drover.internal"
    )]
    zone: String,
    /// TTL of the service records, in seconds.
    #[arg(long = "dns-ttl", value_name = "SECONDS", default_value_t = 5)]
    ttl: u32,
}

impl DiscoveryArgs {
    /// The checked settings.
    pub fn discovery(&self) -> Result<Discovery> {
        discovery(&self.zone, self.ttl)
    }
}

/// `zone` and `ttl` checked as the DNS server would check them.
fn discovery(zone: &str, ttl: u32) -> Result<Discovery> {
    let config = ZoneConfig {
        zone: zone.to_owned(),
        ttl,
        ..ZoneConfig::default()
    };
    config.zone().map_err(|e| anyhow!("DNS zone: {e}"))?;
    Ok(Discovery {
        zone: zone.trim_end_matches('.').to_ascii_lowercase(),
        ttl,
    })
}

/// The node's DNS of `drover agent`: the zone the scheduler names, on the
/// bridge address.
#[derive(Args, Debug, Clone)]
pub struct NodeDnsArgs {
    /// Do not serve the service-discovery zone on this node (tasks'
    /// resolv.conf still names the bridge address).
    #[arg(long = "no-dns")]
    no_dns: bool,
    /// Where the node's DNS answers, UDP and TCP (default: the bridge
    /// address, port 53, which every task's resolv.conf names; tasks can
    /// reach no other address or port of the node).
    #[arg(long = "dns-listen", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Zone configuration file (TOML: upstreams, resolv_conf,
    /// forward_timeout_ms, zone_only, ttl, ...). The zone's name comes
    /// from the scheduler (`drover scheduler --dns-zone`).
    #[arg(long = "dns-config", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl NodeDnsArgs {
    /// The agent's DNS settings.
    pub fn config(&self) -> Result<drover_agent::dns::DnsConfig> {
        Ok(drover_agent::dns::DnsConfig {
            enabled: !self.no_dns,
            listen: self.listen,
            zone: match &self.config {
                Some(path) => read_config(path)?,
                None => ZoneConfig::default(),
            },
        })
    }
}

impl ZoneArgs {
    /// The agent's DNS in `drover dev`: on the bridge, with the same
    /// upstreams and settings as the DNS on the host.
    pub fn node_dns(&self) -> Result<drover_agent::dns::DnsConfig> {
        Ok(drover_agent::dns::DnsConfig {
            zone: self.config()?,
            ..drover_agent::dns::DnsConfig::default()
        })
    }

    /// The configuration: the file's (or the defaults), then the flags.
    fn config(&self) -> Result<ZoneConfig> {
        let mut config = match &self.config {
            Some(path) => read_config(path)?,
            None => ZoneConfig::default(),
        };
        if let Some(zone) = &self.zone {
            config.zone = zone.clone();
        }
        config.zone_only |= self.zone_only;
        if let Some(ttl) = self.ttl {
            config.ttl = ttl;
        }
        Ok(config)
    }

    /// The zone and TTL the scheduler of `drover dev` registers under.
    pub fn discovery(&self) -> Result<Discovery> {
        let config = self.config()?;
        discovery(&config.zone, config.ttl)
    }
}

fn read_config(path: &Path) -> Result<ZoneConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the DNS config {}", path.display()))?;
    parse_config(&text).with_context(|| format!("DNS config {}", path.display()))
}

/// Parses a zone configuration file's text.
fn parse_config(text: &str) -> Result<ZoneConfig> {
    toml::from_str(text).map_err(|e| anyhow!("{e}"))
}

/// A running DNS server: where it answers and the task serving it.
pub struct Running {
    /// The bound address (UDP and TCP share it).
    pub addr: SocketAddr,
    /// Ends when the shutdown token fires or the server fails.
    pub task: JoinHandle<Result<()>>,
    /// Reads its index for the metrics.
    pub sampler: IndexSampler,
}

/// Binds `listen` (UDP and TCP on one port), starts the watch of the
/// store at `etcd` (over TLS with `tls`) and serves the zone until
/// `shutdown` fires.
pub async fn start(
    listen: SocketAddr,
    etcd: &[String],
    tls: Option<etcd_client::TlsOptions>,
    zone: &ZoneArgs,
    shutdown: CancellationToken,
) -> Result<Running> {
    let mut config = zone.config()?;
    config.zone().map_err(|e| anyhow!("DNS zone: {e}"))?;
    let forwarder = config.forwarder();
    let checked = config.zone().map_err(|e| anyhow!("DNS zone: {e}"))?;
    let (udp, tcp) = bind_pair(listen).await?;
    let addr = udp.local_addr()?;
    let index = SharedIndex::default();
    let client = drover_store::client::connect_client(etcd, tls)
        .await
        .with_context(|| {
            format!(
                "cannot reach etcd at {} for the DNS records",
                etcd.join(",")
            )
        })?;
    let watch = Watch::new(client, index.clone());
    let sampler = IndexSampler::new("dns", index.clone(), Some(watch.status()));
    tokio::spawn(watch.run(shutdown.clone()));
    let handler = Handler::new(checked, index, forwarder);
    tracing::info!(%addr, zone = %config.zone, zone_only = config.zone_only, "DNS serving");
    let task = tokio::spawn(async move {
        drover_dns::server::serve(handler, vec![udp], vec![tcp], shutdown)
            .await
            .map_err(|e| anyhow!("DNS server: {e}"))
    });
    Ok(Running {
        addr,
        task,
        sampler,
    })
}

/// [`drover_dns::server::bind_pair`], with a hint when the address is
/// taken.
async fn bind_pair(listen: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    drover_dns::server::bind_pair(listen).await.map_err(|e| {
        anyhow!(
            "{e}; is another DNS server running there? \
             Pick another address with --dns-listen (drover dev) or --listen (drover dns)"
        )
    })
}

/// `drover dns`: the zone answered from an etcd cluster's records.
pub async fn dns(a: DnsArgs) -> Result<()> {
    crate::process::init_logging(&a.log, a.log_format.log_format);
    let shutdown = CancellationToken::new();
    crate::process::cancel_on_signal(shutdown.clone());
    let tls = a.etcd_tls.load(&a.etcd)?;
    let running = start(a.listen, &a.etcd, tls, &a.zone, shutdown.clone()).await?;
    let mut exporter = crate::metrics::exporter()?;
    crate::metrics::dns(&mut exporter, running.sampler.clone())?;
    crate::metrics::start(&a.metrics, crate::metrics::DNS_PORT, exporter, shutdown).await?;
    if let Some(path) = &a.addr_file {
        crate::process::write_addr(path, running.addr)?;
    }
    running.task.await.context("DNS task panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_is_parsed_and_flags_override_it() {
        let c = parse_config("zone = \"example.internal\"\nttl = 30\nzone_only = false\n")
            .expect("a valid config");
        assert_eq!(c.zone, "example.internal");
        assert_eq!(c.ttl, 30);
        let err = parse_config("zone = \"a\"\nttl_seconds = 3\n").expect_err("unknown field");
        assert!(err.to_string().contains("ttl_seconds"), "{err}");
    }
}
