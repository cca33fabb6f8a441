//! Long-running roles: `drover dev`, `drover scheduler`, `drover agent`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use drover_agent::AgentConfig;
use drover_scheduler::gate::Role;
use drover_scheduler::{Core, Timing};
use drover_store::embedded::EmbeddedEtcd;
use drover_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::process::{cancel_on_signal, init_logging, require_loopback, write_addr, DEV_LOOPBACK};

/// Flags of `drover dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the embedded store, node identity and task state are kept.
    #[arg(long, default_value = "/var/lib/drover/dev")]
    data_dir: PathBuf,
    /// Scheduler gRPC address (loopback only).
    #[arg(long, default_value = "127.0.0.1:4680")]
    listen: SocketAddr,
    /// Embedded etcd API address (loopback only); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:4679")]
    store_listen: SocketAddr,
    /// DNS address on the host, UDP and TCP (loopback only); port 0 picks
    /// a free one. `dig @127.0.0.1 -p 8600 web.service.drover.internal`.
    /// (The agent also answers the zone on its bridge address, port 53,
    /// for the tasks.)
    #[arg(long, default_value = crate::dns::DEFAULT_DNS_LISTEN)]
    dns_listen: SocketAddr,
    #[command(flatten)]
    dns: crate::dns::ZoneArgs,
    /// Status page address (loopback only); port 0 picks a free one. The
    /// bound address is written to `<data-dir>/http.addr`.
    #[arg(long, default_value = crate::web::DEFAULT_HTTP_LISTEN)]
    http_listen: SocketAddr,
    /// After `drover dev` was stopped: stop every task it left running and
    /// delete every allocation's network namespace and veth, the bridge and
    /// the firewall table, then exit (the store and logs stay).
    #[arg(long)]
    cleanup: bool,
    /// Cgroup directory (in every hierarchy) that holds the tasks' cgroups.
    #[arg(long, default_value = "drover")]
    cgroup_parent: PathBuf,
    /// Node policy file (TOML): allowed host paths, rootfs dirs, images,
    /// host networking, user namespace range. See `drover_agent::policy`.
    /// Without one, `drover dev` allows any rootfs dir and image (one user,
    /// one machine); `drover agent` allows none, and no bind volume.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Seconds a finished allocation's files (its logs included) are kept
    /// once the scheduler no longer lists it, then removed.
    #[arg(long, value_name = "SECONDS", default_value_t = drover_agent::DEFAULT_KEEP_FINISHED.as_secs())]
    keep_finished: u64,
    #[command(flatten)]
    placement: PlacementArgs,
    #[command(flatten)]
    subnets: SubnetArgs,
    #[command(flatten)]
    net: NodeNetArgs,
    #[command(flatten)]
    meta: crate::meta::MetaArgs,
    #[command(flatten)]
    timing: TimingArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    load: crate::load::LoadArgs,
    /// Log filter, e.g. `info` or `drover_scheduler=debug`.
    #[arg(long, env = "DROVER_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    log_format: crate::process::LogFormatArgs,
}

/// Flags of `drover scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// etcd endpoints, comma separated.
    #[arg(long, env = "DROVER_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = drover_store::client::DEFAULT_PREFIX)]
    prefix: String,
    /// gRPC listen address. Non-loopback addresses need mutual TLS.
    #[arg(long, default_value = "127.0.0.1:4680")]
    listen: SocketAddr,
    /// Write the bound address to this file (useful with port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Serve the read-only status page on this address (none without
    /// it). Off loopback it needs mutual TLS (--tls-*), and people a
    /// certificate with at least the viewer role.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Write the status page's bound address to this file.
    #[arg(long, requires = "http_listen")]
    http_addr_file: Option<PathBuf>,
    #[command(flatten)]
    tls: crate::tls::ServerTls,
    #[command(flatten)]
    etcd_tls: crate::etcd_tls::EtcdTlsArgs,
    /// Accept only agent certificates bound to the node that registers
    /// with them (`drover tls agent --node ID`), not the shared one of
    /// `drover tls init`.
    #[arg(long, requires = "tls_cert")]
    require_node_certs: bool,
    #[command(flatten)]
    placement: PlacementArgs,
    #[command(flatten)]
    subnets: SubnetArgs,
    #[command(flatten)]
    discovery: crate::dns::DiscoveryArgs,
    #[command(flatten)]
    timing: TimingArgs,
    #[command(flatten)]
    ha: crate::ha::HaArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    load: crate::load::LoadArgs,
    /// Log filter.
    #[arg(long, env = "DROVER_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    log_format: crate::process::LogFormatArgs,
}

/// How the scheduler places jobs that do not say (`drover scheduler`,
/// `drover dev`).
#[derive(Args, Debug)]
pub struct PlacementArgs {
    /// Scoring of jobs whose file names no `algorithm`: `binpack` fills
    /// nodes (keeps whole nodes free for large instances), `spread`
    /// prefers the emptiest node.
    #[arg(long, value_name = "binpack|spread", default_value = "binpack")]
    algorithm: drover_scheduler::job::Algorithm,
}

impl PlacementArgs {
    fn config(&self) -> drover_scheduler::placement::PlanConfig {
        drover_scheduler::placement::PlanConfig {
            algorithm: self.algorithm,
            ..Default::default()
        }
    }
}

/// How often agents heartbeat, how long a silent node stays up, and how
/// often every job is planned again (`drover scheduler`, `drover dev`).
#[derive(Args, Debug)]
pub struct TimingArgs {
    /// Interval agents are told to heartbeat at, in milliseconds (the
    /// README's "Node failures" says why 1 s).
    #[arg(long = "heartbeat-ms", value_name = "MS", default_value_t = 1_000)]
    heartbeat_ms: u64,
    /// Silence after which a node is down: its allocations are replaced
    /// and its DNS records (bound to a lease of this length) vanish. At
    /// least twice the heartbeat interval.
    #[arg(long = "node-grace-ms", value_name = "MS", default_value_t = 5_000)]
    node_grace_ms: u64,
    /// Period of the full reconcile pass, in milliseconds: the backstop
    /// that plans every job again. Jobs waiting for capacity do not wait
    /// for it: they are planned again as soon as capacity appears.
    #[arg(long = "reconcile-ms", value_name = "MS", default_value_t = 5_000)]
    reconcile_ms: u64,
}

impl TimingArgs {
    fn timing(&self) -> Result<Timing> {
        if self.heartbeat_ms == 0 {
            bail!("--heartbeat-ms must be > 0");
        }
        if self.reconcile_ms == 0 {
            bail!("--reconcile-ms must be > 0");
        }
        if self.node_grace_ms < 2 * self.heartbeat_ms {
            bail!(
                "--node-grace-ms {} must be at least twice --heartbeat-ms {}: one lost heartbeat would take a node down",
                self.node_grace_ms,
                self.heartbeat_ms
            );
        }
        Ok(Timing {
            heartbeat: std::time::Duration::from_millis(self.heartbeat_ms),
            node_grace: std::time::Duration::from_millis(self.node_grace_ms),
            reconcile: std::time::Duration::from_millis(self.reconcile_ms),
        })
    }
}

/// How the scheduler cuts node task subnets (`drover scheduler`, `drover dev`).
#[derive(Args, Debug)]
pub struct SubnetArgs {
    /// Address range every node's task subnet is cut from. Keep it the same
    /// on every scheduler of a cluster: nodes keep the subnet they got.
    #[arg(long, default_value = drover_scheduler::subnet::DEFAULT_CLUSTER_CIDR)]
    cluster_cidr: String,
    /// Prefix length of each node's task subnet (e.g. 24: 253 task
    /// addresses per node).
    #[arg(long, default_value_t = drover_scheduler::subnet::DEFAULT_NODE_PREFIX)]
    node_prefix: u8,
}

impl SubnetArgs {
    fn config(&self) -> Result<drover_scheduler::subnet::SubnetConfig> {
        let cidr = drover_scheduler::subnet::parse_cidr(&self.cluster_cidr)
            .map_err(|e| anyhow!("--cluster-cidr: {e}"))?;
        drover_scheduler::subnet::SubnetConfig::new(cidr, self.node_prefix)
            .map_err(|e| anyhow!("--node-prefix: {e}"))
    }
}

/// The node's networking (`drover agent`, `drover dev`).
#[derive(Args, Debug)]
pub struct NodeNetArgs {
    /// Name of the node bridge the allocations' veths attach to (at most
    /// 15 bytes).
    #[arg(long, default_value = drover_agent::net::wiring::DEFAULT_BRIDGE)]
    bridge: String,
    /// This node's task subnet (e.g. 10.89.3.0/24), overriding the one the
    /// scheduler assigns; the bridge gets its first host address.
    #[arg(long)]
    subnet: Option<String>,
}

impl NodeNetArgs {
    fn subnet(&self) -> Result<Option<drover_agent::net::Ipv4Net>> {
        self.subnet
            .as_deref()
            .map(|s| s.parse().map_err(|e| anyhow!("--subnet: {e}")))
            .transpose()
    }
}

/// The subnet `drover dev` falls back on when the scheduler assigns none.
const DEV_SUBNET: &str = "10.89.0.0/24";

/// Flags of `drover agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Scheduler gRPC addresses, comma separated (the replicas): the
    /// agent holds its stream with the one that leads, follows a
    /// follower's hint to it and moves to the next leader by itself.
    #[arg(long, env = "DROVER_ADDR", default_value = crate::DEFAULT_ADDR)]
    scheduler: String,
    /// Node identity and task state.
    #[arg(long, default_value = "/var/lib/drover/agent")]
    data_dir: PathBuf,
    /// Address other nodes reach this node at.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// CPU capacity to offer, in millicores (default: all CPUs).
    #[arg(long)]
    cpu_millis: Option<i64>,
    /// Cgroup directory (in every hierarchy) that holds the tasks' cgroups.
    #[arg(long, default_value = "drover")]
    cgroup_parent: PathBuf,
    /// Memory capacity to offer, in MiB (default: all memory).
    #[arg(long)]
    memory_mb: Option<i64>,
    /// Node policy file (TOML): allowed host paths, rootfs dirs, images,
    /// host networking, user namespace range. See `drover_agent::policy`.
    /// Without one, `drover dev` allows any rootfs dir and image (one user,
    /// one machine); `drover agent` allows none, and no bind volume.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Seconds a finished allocation's files (its logs included) are kept
    /// once the scheduler no longer lists it, then removed.
    #[arg(long, value_name = "SECONDS", default_value_t = drover_agent::DEFAULT_KEEP_FINISHED.as_secs())]
    keep_finished: u64,
    #[command(flatten)]
    tls: crate::tls::ClientTls,
    #[command(flatten)]
    net: NodeNetArgs,
    #[command(flatten)]
    meta: crate::meta::MetaArgs,
    #[command(flatten)]
    dns: crate::dns::NodeDnsArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    /// Remove this node: stop every task, delete every allocation's network
    /// namespace and veth, the bridge, the routes and firewall table the
    /// agent made and its networking state, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Log filter.
    #[arg(long, env = "DROVER_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    log_format: crate::process::LogFormatArgs,
}

fn require_root(what: &str) -> Result<()> {
    if !nix_is_root() {
        bail!("{what} runs tasks in new Linux namespaces and must run as root");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Without mutual TLS, every Drover API that can start processes listens
/// on loopback only: an unauthenticated root-equivalent API on the network
/// is the mistake this project exists to avoid.
const NEEDS_TLS: &str = "serving off loopback needs mutual TLS: give --tls-cert, --tls-key and \
     --tls-client-ca (create them with `drover tls init`)";

async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({flag}); is another drover running?"))
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the drover binary to re-execute as supervisor")
}

/// The node policy from `--policy`, or `otherwise`.
fn load_policy(
    path: Option<&Path>,
    otherwise: drover_agent::policy::NodePolicy,
) -> Result<drover_agent::policy::NodePolicy> {
    match path {
        None => Ok(otherwise),
        Some(p) => Ok(drover_agent::policy::NodePolicy::load(p)?),
    }
}

/// `drover dev`: the embedded store, the scheduler and one agent in one
/// process, all on loopback.
pub async fn dev(a: DevArgs) -> Result<()> {
    init_logging(&a.log, a.log_format.log_format);
    let meta = a.meta.entries()?;
    require_root("drover dev")?;
    if a.cleanup {
        let report = drover_agent::cleanup(&dev_agent(&a, a.listen, meta)?).await?;
        tracing::info!(?report, "drover dev's node cleaned up");
        return Ok(());
    }
    require_loopback("--listen", a.listen, DEV_LOOPBACK)?;
    require_loopback("--store-listen", a.store_listen, DEV_LOOPBACK)?;
    require_loopback("--dns-listen", a.dns_listen, DEV_LOOPBACK)?;
    require_loopback("--http-listen", a.http_listen, DEV_LOOPBACK)?;
    let subnets = dev_subnets(&a)?;
    drover_agent::private_fs::private_dir(&a.data_dir)
        .with_context(|| format!("cannot create data dir {} (0700)", a.data_dir.display()))?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());

    let store_dir = a.data_dir.join("store");
    let embedded = EmbeddedEtcd::open(&store_dir)
        .map_err(|e| anyhow!("cannot open the embedded store: {e}"))?;
    let store_listener = bind("--store-listen", a.store_listen).await?;
    let store_addr = store_listener.local_addr()?;
    write_addr(&a.data_dir.join("store.addr"), store_addr)?;
    tracing::info!(addr = %store_addr, "embedded etcd API on {store_addr} (etcdctl --endpoints={store_addr})");
    let store_handle = embedded.handle();
    let store_task = tokio::spawn(embedded.serve(store_listener, shutdown.clone()));
    let dns = crate::dns::start(
        a.dns_listen,
        &[format!("http://{store_addr}")],
        None,
        &a.dns,
        shutdown.clone(),
    )
    .await?;
    write_addr(&a.data_dir.join("dns.addr"), dns.addr)?;
    tracing::info!(addr = %dns.addr, "DNS on {0} (dig @{1} -p {2} NAME.service.drover.internal)", dns.addr, dns.addr.ip(), dns.addr.port());

    let store = Store::connect(
        &[format!("http://{store_addr}")],
        drover_store::client::DEFAULT_PREFIX,
    )
    .await?;
    let (zone, placing) = (a.dns.discovery()?, a.placement.config());
    let (role, settled) = tokio::sync::watch::channel(Role::Following { leader: None });
    let page = drover_scheduler::web::StatusPage::new(store.clone(), zone.clone(), settled.clone());
    let core = Core::with_placement(store, a.timing.timing()?, subnets, zone, placing);
    core.load().set_limits(a.load.limits()?);
    let listener = bind("--listen", a.listen).await?;
    let addr = listener.local_addr()?;
    // One replica: it campaigns and wins at once; `scheduler.addr`
    // appears when it leads.
    let candidacy = drover_scheduler::leader::Candidacy::single(addr);
    let web = crate::web::start_dev(a.http_listen, &a.data_dir, page, shutdown.clone());
    let (http, web_task) = web.await?;
    let roles = crate::metrics::DevRoles {
        store: store_handle,
        dns: dns.sampler.clone(),
        core: &core,
        role: settled.clone(),
        cgroup_parent: &a.cgroup_parent,
    };
    crate::metrics::dev(&a.metrics, roles, &a.data_dir, shutdown.clone()).await?;
    tokio::spawn(write_addr_when_settled(
        settled,
        a.data_dir.join("scheduler.addr"),
        addr,
    ));
    let elected = drover_scheduler::leader::serve_elected_reporting;
    let sched_task = tokio::spawn(elected(
        core,
        candidacy,
        listener,
        shutdown.clone(),
        None,
        std::sync::Arc::new(role),
    ));

    let agent = dev_agent(&a, addr, meta)?;
    tracing::info!(%addr, %http, data_dir = %a.data_dir.display(), "drover dev ready: scheduler on {addr}, status page on http://{http}/");
    let agent_result = drover_agent::run(agent, shutdown.clone()).await;
    shutdown.cancel();
    let sched_result = sched_task.await;
    let store_result = store_task.await;
    let dns_result = dns.task.await;
    let web_result = web_task.await;
    agent_result?;
    web_result.context("status page task panicked")??;
    dns_result.context("DNS task panicked")??;
    sched_result.context("scheduler task panicked")??;
    store_result
        .context("store task panicked")?
        .map_err(|e| anyhow!("embedded store: {e}"))?;
    Ok(())
}

/// `drover dev`'s subnets. The agent asks the scheduler for its
/// --subnet; when that is not a node subnet of the cluster CIDR (outside
/// it, or another prefix), the one node's subnet becomes the cluster CIDR,
/// so that the scheduler grants exactly the subnet the agent uses.
fn dev_subnets(a: &DevArgs) -> Result<drover_scheduler::subnet::SubnetConfig> {
    let mut subnets = a.subnets.config()?;
    if let Some(s) = a.net.subnet()? {
        // One type on both sides (`drover_model::Ipv4Net`).
        if !subnets.is_node_subnet(&s) {
            subnets = drover_scheduler::subnet::SubnetConfig::new(s, s.prefix())
                .map_err(|e| anyhow!("--subnet {s}: {e}"))?;
        }
    }
    Ok(subnets)
}

/// `drover dev`'s agent, of the scheduler at `addr`.
fn dev_agent(
    a: &DevArgs,
    addr: SocketAddr,
    meta: std::collections::BTreeMap<String, String>,
) -> Result<AgentConfig> {
    Ok(AgentConfig {
        scheduler: format!("http://{addr}"),
        data_dir: a.data_dir.join("agent"),
        exe: exe()?,
        address: "127.0.0.1".into(),
        cpu_millis: None,
        memory_mb: None,
        tls: None,
        cgroup_parent: a.cgroup_parent.clone(),
        policy: load_policy(
            a.policy.as_deref(),
            drover_agent::policy::NodePolicy::default(),
        )?,
        bridge: a.net.bridge.clone(),
        subnet: a.net.subnet()?,
        default_subnet: Some(
            DEV_SUBNET
                .parse()
                .map_err(|e| anyhow!("{DEV_SUBNET}: {e}"))?,
        ),
        keep_finished: std::time::Duration::from_secs(a.keep_finished),
        node_id: None,
        dns: a.dns.node_dns()?,
        meta,
    })
}

/// `drover scheduler` against a real etcd cluster.
pub async fn scheduler(a: SchedulerArgs) -> Result<()> {
    init_logging(&a.log, a.log_format.log_format);
    let tls = a.tls.load()?;
    if tls.is_none() {
        require_loopback("--listen", a.listen, NEEDS_TLS)?;
    }
    if let Some(http) = a.http_listen {
        drover_scheduler::web::check_listen(http, tls.is_some())
            .map_err(|e| anyhow!("--http-listen: {e}"))?;
    }
    let subnets = a.subnets.config()?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let discovery = a.discovery.discovery()?;
    let etcd_tls = a.etcd_tls.load(&a.etcd)?;
    let store = Store::connect_with(&a.etcd, &a.prefix, etcd_tls).await?;
    let listener = bind("--listen", a.listen).await?;
    let bound = listener.local_addr()?;
    // Kept open across terms: a client that connects between two terms
    // waits in the backlog for the next term's server, not refused.
    let socket = listener.into_std()?;
    let candidacy = a.ha.candidacy(bound)?;
    let (role, settled) = tokio::sync::watch::channel(Role::Following { leader: None });
    let role = std::sync::Arc::new(role);
    let mut exporter = crate::metrics::exporter()?;
    let scheduling = crate::metrics::scheduler(&mut exporter)?;
    scheduling.set_role(settled.clone());
    let port = crate::metrics::SCHEDULER_PORT;
    crate::metrics::start(&a.metrics, port, exporter, shutdown.clone()).await?;
    if let Some(path) = a.addr_file.clone() {
        tokio::spawn(write_addr_when_settled(settled, path, bound));
    }
    // The status page outlives the terms: it follows the role.
    if let Some(http) = a.http_listen {
        let page = drover_scheduler::web::StatusPage::new(
            store.clone(),
            discovery.clone(),
            role.subscribe(),
        );
        let file = a.http_addr_file.as_deref();
        let (_, task) = crate::web::start(http, tls.clone(), page, shutdown.clone(), file).await?;
        tokio::spawn(crate::web::log_end(task));
    }
    // One term per pass: a replica whose term ended (its lease lapsed,
    // etcd unreachable, the key gone) starts again from a fresh core as a
    // follower on the same address, and campaigns again; nothing of the
    // lost term's memory is kept.
    loop {
        let core = Core::with_placement(
            store.clone(),
            a.timing.timing()?,
            subnets,
            discovery.clone(),
            a.placement.config(),
        );
        core.require_node_certs(a.require_node_certs);
        scheduling.set_core(&core);
        core.load().set_limits(a.load.limits()?);
        let term = shutdown.child_token();
        let listener = socket.try_clone()?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let served = drover_scheduler::leader::serve_elected_reporting(
            core,
            candidacy.clone(),
            listener,
            term,
            tls.clone(),
            role.clone(),
        )
        .await;
        match served {
            Err(error @ drover_scheduler::leader::LeaderError::Lost { .. })
                if !shutdown.is_cancelled() =>
            {
                tracing::warn!(%error, "serving again as a follower");
            }
            other => return Ok(other?),
        }
    }
}

/// Writes `--addr-file` once the election has an outcome (this replica
/// leads, or it knows the leader), so that whoever waits for the file
/// finds a replica that answers rather than one refusing with "no leader
/// is elected yet".
async fn write_addr_when_settled(
    mut role: tokio::sync::watch::Receiver<Role>,
    path: PathBuf,
    addr: std::net::SocketAddr,
) {
    let settled = role
        .wait_for(|r| !matches!(r, Role::Following { leader: None }))
        .await
        .is_ok();
    if !settled {
        return;
    }
    if let Err(error) = write_addr(&path, addr) {
        tracing::error!(path = %path.display(), error = %format!("{error:#}"), "cannot write the address file");
    }
}

/// `drover agent`.
pub async fn agent(a: AgentArgs) -> Result<()> {
    init_logging(&a.log, a.log_format.log_format);
    let meta = a.meta.entries()?;
    require_root("drover agent")?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let tls = a.tls.load()?;
    let scheduler = crate::connect::urls(&a.scheduler, tls.is_some()).join(",");
    let config = AgentConfig {
        scheduler,
        data_dir: a.data_dir,
        exe: exe()?,
        address: a.address,
        cpu_millis: a.cpu_millis,
        memory_mb: a.memory_mb,
        tls,
        cgroup_parent: a.cgroup_parent,
        policy: load_policy(
            a.policy.as_deref(),
            drover_agent::policy::NodePolicy::node_default(),
        )?,
        bridge: a.net.bridge.clone(),
        subnet: a.net.subnet()?,
        default_subnet: None,
        keep_finished: std::time::Duration::from_secs(a.keep_finished),
        node_id: a.tls.bound_node()?,
        dns: a.dns.config()?,
        meta,
    };
    if a.cleanup {
        let report = drover_agent::cleanup(&config).await?;
        tracing::info!(?report, "node cleaned up");
        return Ok(());
    }
    let mut exporter = crate::metrics::exporter()?;
    crate::metrics::agent(&mut exporter, &config.cgroup_parent, true)?;
    let port = crate::metrics::AGENT_PORT;
    crate::metrics::start(&a.metrics, port, exporter, shutdown.clone()).await?;
    drover_agent::run(config, shutdown).await?;
    Ok(())
}
