//! `--metrics-listen`: each long-running role's Prometheus endpoint, and
//! which roles' metrics a process registers (`drover dev`: all of them, on
//! one endpoint).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use drover_metrics::Exporter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Default metrics port of `drover scheduler` and `drover dev`.
pub const SCHEDULER_PORT: u16 = 9480;
/// Default metrics port of `drover agent`.
pub const AGENT_PORT: u16 = 9481;
/// Default metrics port of `drover dns`.
pub const DNS_PORT: u16 = 9482;

/// The `--metrics-listen` flag of a long-running role.
#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Prometheus metrics address (plain HTTP, `GET /metrics`, no
    /// authentication: keep it on loopback or a monitoring network); port
    /// 0 picks a free one. Without it: 127.0.0.1 on the role's port
    /// (scheduler and dev 9480, agent 9481, dns 9482), and when another
    /// process holds that port the role runs without metrics (a warning
    /// says so).
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// A new exporter carrying this binary's version.
pub fn exporter() -> Result<Exporter> {
    Exporter::new(env!("CARGO_PKG_VERSION")).map_err(|e| anyhow!("metrics: {e}"))
}

/// Binds `--metrics-listen` (or the default port) and serves `exporter`
/// until `shutdown`. Returns the bound address, `None` when the default
/// port was taken.
pub async fn start(
    args: &MetricsArgs,
    default_port: u16,
    exporter: Exporter,
    shutdown: CancellationToken,
) -> Result<Option<SocketAddr>> {
    let listener = match args.metrics_listen {
        Some(addr) => TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
        None => {
            let addr = SocketAddr::from(([127, 0, 0, 1], default_port));
            match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(error) => {
                    tracing::warn!(%addr, %error, "metrics are off: the default address is taken; give --metrics-listen");
                    return Ok(None);
                }
            }
        }
    };
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = drover_metrics::serve(listener, Arc::new(exporter), shutdown).await {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    Ok(Some(addr))
}

fn reg(e: drover_metrics::MetricsError) -> anyhow::Error {
    anyhow!("metrics: {e}")
}

/// Registers the scheduler's metrics (and the store client's) into
/// `exporter`; the sampler is to be told of each term's core.
pub fn scheduler(
    exporter: &mut Exporter,
) -> Result<Arc<drover_scheduler::metrics::SchedulerSampler>> {
    drover_store::metrics::register_client(exporter.registry()).map_err(reg)?;
    let sampler = drover_scheduler::metrics::register(exporter.registry()).map_err(reg)?;
    exporter.add_sampler(sampler.clone());
    Ok(sampler)
}

/// Registers the agent's metrics (its node DNS server's included) into
/// `exporter`, its allocations' cgroups being below `cgroup_parent`.
pub fn agent(exporter: &mut Exporter, cgroup_parent: &Path, with_dns: bool) -> Result<()> {
    if with_dns {
        drover_dns::metrics::register(exporter.registry()).map_err(reg)?;
    }
    let sampler = drover_agent::metrics::register(
        exporter.registry(),
        PathBuf::from(drover_agent::runtime::DEFAULT_CGROUP_ROOT),
        cgroup_parent.to_owned(),
    )
    .map_err(reg)?;
    exporter.add_sampler(Arc::new(sampler));
    Ok(())
}

/// Registers the DNS server's metrics into `exporter`, sampling `index`.
pub fn dns(exporter: &mut Exporter, index: drover_dns::metrics::IndexSampler) -> Result<()> {
    drover_dns::metrics::register(exporter.registry()).map_err(reg)?;
    exporter.add_sampler(Arc::new(index));
    Ok(())
}

/// Registers the embedded store's metrics, read through `handle`.
pub fn embedded_store(
    exporter: &mut Exporter,
    handle: drover_store::embedded::EmbeddedHandle,
) -> Result<()> {
    let sampler = drover_store::embedded::metrics::register_embedded(exporter.registry(), handle)
        .map_err(reg)?;
    exporter.add_sampler(Arc::new(sampler));
    Ok(())
}

/// What `drover dev` runs, for its one metrics endpoint.
pub struct DevRoles<'a> {
    /// The embedded store.
    pub store: drover_store::embedded::EmbeddedHandle,
    /// The host DNS server's index.
    pub dns: drover_dns::metrics::IndexSampler,
    /// The scheduler.
    pub core: &'a Arc<drover_scheduler::Core>,
    /// The scheduler's role.
    pub role: tokio::sync::watch::Receiver<drover_scheduler::gate::Role>,
    /// Where the agent's allocation cgroups are.
    pub cgroup_parent: &'a Path,
}

/// `drover dev`: every role's metrics on one endpoint, its address written
/// to `<data_dir>/metrics.addr`.
pub async fn dev(
    args: &MetricsArgs,
    roles: DevRoles<'_>,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> Result<()> {
    if let Some(addr) = args.metrics_listen {
        let why = crate::process::DEV_LOOPBACK;
        crate::process::require_loopback("--metrics-listen", addr, why)?;
    }
    let mut exporter = exporter()?;
    embedded_store(&mut exporter, roles.store)?;
    dns(&mut exporter, roles.dns)?;
    let scheduling = scheduler(&mut exporter)?;
    scheduling.set_core(roles.core);
    scheduling.set_role(roles.role);
    agent(&mut exporter, roles.cgroup_parent, false)?;
    if let Some(addr) = start(args, SCHEDULER_PORT, exporter, shutdown).await? {
        crate::process::write_addr(&data_dir.join("metrics.addr"), addr)?;
    }
    Ok(())
}
