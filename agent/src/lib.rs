//! Drover's node agent.
//!
//! The agent dials the scheduler and holds one `AgentService.Connect`
//! stream: it registers the node, heartbeats, converges on the assignments
//! it is sent ([`allocs`]), reports allocation status, and serves log
//! requests. Every task runs under its own supervisor process ([`runtime`]),
//! so the agent can die and come back without losing one.

pub mod allocs;
pub mod cgroup;
pub mod exec;
pub mod net;
pub mod node;
pub mod peers;
pub mod policy;
pub mod runtime;

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::allocs::Allocs;
use crate::runtime::Runtime;

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration or local state.
    #[error("{0}")]
    Config(String),
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime failed to list existing tasks.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// Node networking failed (`--cleanup`).
    #[error(transparent)]
    Net(#[from] net::NetError),
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Scheduler gRPC address, e.g. `http://127.0.0.1:4680`.
    pub scheduler: String,
    /// Where node identity and task state live.
    pub data_dir: PathBuf,
    /// Drover binary re-executed as each task's supervisor.
    pub exe: PathBuf,
    /// Address other nodes reach this one at.
    pub address: String,
    /// Capacity overrides; detected from the host when `None`.
    pub cpu_millis: Option<i64>,
    /// Memory capacity override, MiB.
    pub memory_mb: Option<i64>,
    /// Mutual TLS towards the scheduler (`https://` addresses).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Cgroup directory, relative to each hierarchy's root, under which
    /// every task gets `<alloc>/<task>` (default `drover`).
    pub cgroup_parent: PathBuf,
    /// What any scheduler may ask of this node.
    pub policy: policy::NodePolicy,
    /// Name of the node bridge ([`net::wiring::DEFAULT_BRIDGE`]).
    pub bridge: String,
    /// The node's task subnet, overriding the one the scheduler assigns.
    pub subnet: Option<net::Ipv4Net>,
    /// The subnet used when neither `subnet`, the scheduler nor an earlier
    /// start gives one (`drover dev`: 10.89.0.0/24).
    pub default_subnet: Option<net::Ipv4Net>,
    /// The node id the agent's certificate is bound to, if it is
    /// (`drover tls agent --node ID`): the agent is that node.
    pub node_id: Option<String>,
    /// How long the files (logs included) of a finished allocation are
    /// kept once the scheduler no longer lists it ([`DEFAULT_KEEP_FINISHED`]).
    pub keep_finished: Duration,
}

/// Default of [`AgentConfig::keep_finished`]: one hour.
pub const DEFAULT_KEEP_FINISHED: Duration = Duration::from_secs(3600);

const POLL: Duration = Duration::from_millis(200);
/// Longest interval between sweeps of finished allocations' files.
const GC_EVERY: Duration = Duration::from_secs(60);
const LOG_CHUNK: usize = 32 * 1024;

/// Runs the agent until `shutdown` is cancelled. Tasks keep running when
/// the agent stops; a restarted agent re-adopts them.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let hostname = node::hostname();
    let node_id = match &config.node_id {
        Some(bound) => node::claim_node_id(&config.data_dir, bound)?,
        None => node::node_id(&config.data_dir, &hostname)?,
    };
    let state_root = config.data_dir.join("allocs");
    let runtime = Runtime::new(state_root.clone(), config.exe.clone())
        .with_cgroups(
            PathBuf::from("/sys/fs/cgroup"),
            config.cgroup_parent.clone(),
        )
        .with_policy(config.policy.clone());
    // Layers of images no task uses any more (e.g. tasks removed while the
    // agent was down); the runtime collects again after each removal.
    if let Err(error) = runtime.collect_image_garbage() {
        tracing::warn!(%error, "image cache garbage collection");
    }
    let mut allocs = Allocs::new(runtime).with_host_network(config.policy.allow_host_network);
    let node = pb::Node {
        id: node_id.clone(),
        hostname,
        address: config.address.clone(),
        status: "ready".into(),
        cpu_millis: config.cpu_millis.unwrap_or_else(node::cpu_millis),
        memory_mb: config
            .memory_mb
            .unwrap_or_else(|| node::memory_mb(std::path::Path::new("/proc"))),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        // `--subnet` asks the scheduler for that subnet; it refuses the
        // registration when the subnet is not this node's to have.
        subnet: config.subnet.map(|s| s.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    tracing::info!(node_id = %node_id, scheduler = %config.scheduler, data_dir = %config.data_dir.display(), "agent starting");
    let mut backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match session(&config, &node, &mut allocs, &state_root, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::warn!(scheduler = %config.scheduler, %error, retry_in_ms = backoff.as_millis() as u64, "scheduler session ended");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection to the scheduler; returns Ok on shutdown, Err when the
/// stream breaks (the caller reconnects).
async fn session(
    config: &AgentConfig,
    node: &pb::Node,
    allocs: &mut Allocs,
    state_root: &std::path::Path,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut endpoint = Endpoint::from_shared(config.scheduler.clone())
        .map_err(|e| format!("bad scheduler address {:?}: {e}", config.scheduler))?
        .connect_timeout(Duration::from_secs(3));
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS setup for {}: {e}", config.scheduler))?;
    }
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", config.scheduler))?;
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    // Two queues up: control (register, heartbeats, allocation status) and
    // bulk (log and exec output), taken in turn, so that a busy log or exec
    // reader never queues more than one chunk ahead of a heartbeat.
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    let (bulk_tx, bulk_rx) = mpsc::channel::<pb::AgentMessage>(64);
    let running = allocs.on_disk().map_err(|e| e.to_string())?;
    let register = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            node: Some(node.clone()),
            running,
        })),
    };
    tx.send(register)
        .await
        .map_err(|_| "outbound channel closed".to_string())?;
    let mut inbound = client
        .connect(tokio_stream::StreamExt::merge(
            ReceiverStream::new(rx),
            ReceiverStream::new(bulk_rx),
        ))
        .await
        .map_err(|s| format!("Connect refused: {}", s.message()))?
        .into_inner();
    // Heartbeats run in their own task: a slow stop or start in this loop
    // must never make a healthy node look dead.
    let beat = shutdown.child_token();
    let _stop_beat = beat.clone().drop_guard();
    let (interval_tx, interval_rx) = tokio::sync::watch::channel(Duration::from_secs(2));
    tokio::spawn(heartbeats(tx.clone(), interval_rx, beat));
    allocs.forget_reported();
    let mut poll = tokio::time::interval(POLL);
    // Finished allocations' files, swept at most every GC_EVERY (and at
    // least ten times per retention period), off the async loop.
    let gc_every = GC_EVERY.min(config.keep_finished / 10).max(POLL);
    let mut gc = tokio::time::interval(gc_every);
    let mut gc_running: Option<tokio::task::JoinHandle<std::collections::BTreeSet<String>>> = None;
    // Nothing is collected before the scheduler has said what this node
    // holds: until then every allocation on disk may be one it wants.
    let mut converged = false;
    let mut log_streams: std::collections::HashMap<u64, CancellationToken> = Default::default();
    let mut peer_routes = peers::Peers::default();
    let log_runtime_root = state_root.to_path_buf();
    let mut execs = exec::ExecSessions::new(
        Runtime::new(log_runtime_root.clone(), config.exe.clone()),
        config.exe.clone(),
        bulk_tx.clone(),
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                for t in log_streams.values() { t.cancel(); }
                return Ok(());
            }
            _ = gc.tick(), if converged => {
                if let Some(done) = gc_running.take_if(|h| h.is_finished()) {
                    match done.await {
                        Ok(removed) => allocs.forget_collected(&removed).await,
                        Err(error) => tracing::warn!(%error, "garbage collection task"),
                    }
                }
                if gc_running.is_none() {
                    let (rt, in_use, keep) = (Runtime::new(log_runtime_root.clone(), config.exe.clone()), allocs.in_use(), config.keep_finished);
                    gc_running = Some(tokio::task::spawn_blocking(move || {
                        allocs::collect_finished(&rt, &in_use, keep)
                    }));
                }
            }
            _ = poll.tick() => {
                peer_routes.retry().await;
                for st in allocs.poll().await {
                    let m = pb::AgentMessage { msg: Some(pb::agent_message::Msg::AllocStatus(st)) };
                    tx.send(m).await.map_err(|_| "stream closed".to_string())?;
                }
            }
            msg = inbound.next() => {
                let msg = match msg {
                    None => return Err("scheduler closed the stream".into()),
                    Some(Err(s)) => return Err(format!("stream error: {}", s.message())),
                    Some(Ok(m)) => m,
                };
                match msg.msg {
                    Some(pb::scheduler_message::Msg::Registered(r)) => {
                        peer_routes.set_own_subnet(&r.subnet);
                        if r.heartbeat_interval_ms > 0 {
                            let every = Duration::from_millis(u64::try_from(r.heartbeat_interval_ms).unwrap_or(2000));
                            let _ = interval_tx.send(every);
                        }
                        tracing::info!(node_id = %r.node_id, "registered with scheduler");
                        network_ready(config, &node.id, &r, allocs).await;
                    }
                    Some(pb::scheduler_message::Msg::Assignments(a)) => {
                        allocs.converge(a.allocations).await;
                        converged = true;
                        for st in allocs.poll().await {
                            let m = pb::AgentMessage { msg: Some(pb::agent_message::Msg::AllocStatus(st)) };
                            tx.send(m).await.map_err(|_| "stream closed".to_string())?;
                        }
                    }
                    Some(pb::scheduler_message::Msg::LogRequest(req)) => {
                        let cancel = shutdown.child_token();
                        log_streams.retain(|_, t| !t.is_cancelled());
                        log_streams.insert(req.request_id, cancel.clone());
                        match allocs.log_task(&req.alloc_id, &req.task) {
                            Ok(task) => {
                                let rt = Runtime::new(log_runtime_root.clone(), config.exe.clone());
                                tokio::spawn(stream_log(rt, req, task, bulk_tx.clone(), cancel));
                            }
                            Err(error) => {
                                let _ = tx.send(log_msg(req.request_id, Vec::new(), true, error)).await;
                            }
                        }
                    }
                    Some(pb::scheduler_message::Msg::LogCancel(c)) => {
                        if let Some(t) = log_streams.remove(&c.request_id) { t.cancel(); }
                    }
                    Some(pb::scheduler_message::Msg::Peers(p)) => peer_routes.apply(&p).await,
                    Some(pb::scheduler_message::Msg::ExecInput(i)) => execs.handle(allocs, i),
                    None => {}
                }
            }
        }
    }
}

/// The node's task subnet: `--subnet` first, then the scheduler's
/// assignment (`Registered.subnet`), then the one kept from an earlier
/// start, then the configured default.
fn choose_subnet(
    config: &AgentConfig,
    net_cfg: &net::wiring::NetConfig,
    assigned: &str,
) -> Result<Option<net::Ipv4Net>, String> {
    if let Some(s) = config.subnet {
        return Ok(Some(s));
    }
    if !assigned.trim().is_empty() {
        return assigned
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("the scheduler assigned an unusable subnet: {e}"));
    }
    match net::wiring::saved_subnet(net_cfg) {
        Ok(Some(s)) => return Ok(Some(s)),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring the saved node subnet"),
    }
    Ok(config.default_subnet)
}

/// Brings the node's networking up once the scheduler has answered (its
/// `Registered` may carry the node's subnet): bridge, forwarding,
/// isolation rules, then removal of what a crash left of allocations no
/// longer on disk. Tried again on every `Registered` until it works; once
/// up it stays as it is for the life of the process.
async fn network_ready(
    config: &AgentConfig,
    node_id: &str,
    registered: &pb::Registered,
    allocs: &mut Allocs,
) {
    let assigned = registered.subnet.as_str();
    if let Some(up) = allocs.network() {
        if !assigned.is_empty() && config.subnet.is_none() && up.subnet().to_string() != assigned {
            tracing::warn!(have = %up.subnet(), assigned, "the scheduler assigned another subnet; keeping the current one until the agent restarts");
        }
        return;
    }
    let mut net_cfg = net::wiring::NetConfig::for_agent(&config.data_dir, &config.bridge, node_id);
    net_cfg.cluster_cidr = match registered.cluster_cidr.trim() {
        "" => None,
        cidr => cidr
            .parse()
            .inspect_err(|error| tracing::warn!(cidr, %error, "ignoring an unusable cluster CIDR"))
            .ok(),
    };
    let subnet = match choose_subnet(config, &net_cfg, assigned) {
        Ok(Some(s)) => s,
        Ok(None) => {
            let why = "this node has no task subnet: the scheduler assigned none and the agent \
                       has no --subnet";
            tracing::error!("{why}; allocations cannot start");
            allocs.set_network(Err(why.into()));
            return;
        }
        Err(why) => {
            tracing::error!(%why, "no node network");
            allocs.set_network(Err(why));
            return;
        }
    };
    match net::wiring::NodeNetwork::init(net_cfg, subnet).await {
        Ok(up) => {
            match allocs.ids_on_disk() {
                Ok(keep) => {
                    if let Err(error) = up.reconcile(&keep).await {
                        tracing::warn!(%error, "cannot remove networks left by a crash");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot list allocations on disk"),
            }
            allocs.set_network(Ok(std::sync::Arc::new(up)));
        }
        Err(error) => {
            tracing::error!(%error, bridge = %config.bridge, %subnet, "cannot set up the node network");
            allocs.set_network(Err(format!("the node network is down: {error}")));
        }
    }
}

/// `drover agent --cleanup`, for removing the node: stops every task
/// (through the runtime, as a stop would), then removes every allocation
/// namespace and veth, the bridge, the routes the agent made, its nftables
/// table and the networking state (subnet, IPAM). Does not contact the
/// scheduler.
pub async fn cleanup(config: &AgentConfig) -> Result<net::wiring::CleanupReport, AgentError> {
    let node_id = node::node_id(&config.data_dir, &node::hostname())?;
    let runtime = Runtime::new(config.data_dir.join("allocs"), config.exe.clone()).with_cgroups(
        PathBuf::from("/sys/fs/cgroup"),
        config.cgroup_parent.clone(),
    );
    let tasks = runtime.list()?;
    let stops = tasks.iter().map(|(alloc, task)| {
        let runtime = &runtime;
        async move {
            if let Err(error) = runtime.stop(alloc, task).await {
                tracing::warn!(alloc_id = %alloc, task = %task, %error, "stop failed");
            }
        }
    });
    futures::future::join_all(stops).await;
    tracing::info!(tasks = tasks.len(), "tasks stopped");
    let net_cfg = net::wiring::NetConfig::for_agent(&config.data_dir, &config.bridge, &node_id);
    let report = net::wiring::cleanup_node(&net_cfg, true).await?;
    tracing::info!(?report, "node networking removed");
    Ok(report)
}

/// Sends a heartbeat every interval until `stop` or the stream closes.
async fn heartbeats(
    tx: mpsc::Sender<pb::AgentMessage>,
    mut every: tokio::sync::watch::Receiver<Duration>,
    stop: CancellationToken,
) {
    loop {
        let wait = *every.borrow_and_update();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.changed() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let hb = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                unix_ms: now_ms(),
            })),
        };
        if tx.send(hb).await.is_err() {
            return;
        }
    }
}

fn log_msg(request_id: u64, data: Vec<u8>, eof: bool, error: String) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::LogData(pb::LogData {
            request_id,
            data,
            eof,
            error,
        })),
    }
}

/// Sends a task's log file up the stream, then (with `follow`) what is
/// appended until the task ends for good or the request is cancelled.
async fn stream_log(
    rt: Runtime,
    req: pb::LogRequest,
    task: String,
    tx: mpsc::Sender<pb::AgentMessage>,
    cancel: CancellationToken,
) {
    let dir = match rt.task_dir(&req.alloc_id, &task) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx
                .send(log_msg(req.request_id, Vec::new(), true, e.to_string()))
                .await;
            return;
        }
    };
    let path = dir.join(if req.stderr {
        "stderr.log"
    } else {
        "stdout.log"
    });
    // Rotated files first (oldest first), then the current one; followed
    // across rotations (see `runtime::logs::LogReader`).
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || runtime::logs::LogReader::open(&path, true)).await
    };
    let mut reader = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let msg = format!("cannot open {}: {e}", path.display());
            let _ = tx
                .send(log_msg(req.request_id, Vec::new(), true, msg))
                .await;
            return;
        }
        Err(e) => {
            let msg = format!("log reader for {}: {e}", path.display());
            let _ = tx
                .send(log_msg(req.request_id, Vec::new(), true, msg))
                .await;
            return;
        }
    };
    let mut buf = vec![0u8; LOG_CHUNK];
    let mut ended = false;
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let n = reader.read(&mut buf);
            (reader, buf, n)
        })
        .await;
        let n = match read {
            Ok((r, b, Ok(n))) => {
                reader = r;
                buf = b;
                n
            }
            Ok((_, _, Err(e))) => {
                let msg = format!("reading {}: {e}", path.display());
                let _ = tx
                    .send(log_msg(req.request_id, Vec::new(), true, msg))
                    .await;
                return;
            }
            Err(e) => {
                let msg = format!("log reader for {}: {e}", path.display());
                let _ = tx
                    .send(log_msg(req.request_id, Vec::new(), true, msg))
                    .await;
                return;
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        if n > 0 {
            if tx
                .send(log_msg(
                    req.request_id,
                    buf[..n].to_vec(),
                    false,
                    String::new(),
                ))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let live = rt
            .state(&req.alloc_id, &task)
            .map(|s| !s.is_terminal())
            .unwrap_or(false);
        // At the end: done unless following a task that still runs. The
        // supervisor records the exit only after the last line is written,
        // so one more read after seeing it ended misses nothing.
        if !req.follow || cancel.is_cancelled() {
            break;
        }
        if !live {
            if ended {
                break;
            }
            ended = true;
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    let _ = tx
        .send(log_msg(req.request_id, Vec::new(), true, String::new()))
        .await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
