//! The agent's life towards the scheduler: [`run`] builds the node's
//! runtime and allocations once, then holds one `AgentService.Connect`
//! stream at a time, reconnecting with backoff. A session registers the
//! node, keeps heartbeats going, decodes what the scheduler sends at this
//! edge ([`crate::assignment`]) and dispatches it: assignments to
//! [`Allocs`], peers to the route keeper, log and exec requests to
//! [`crate::log_stream`] and [`crate::exec`], relayed DNS records to the
//! node's DNS ([`crate::dns`]); it brings the node network and its DNS up
//! on `Registered` (`bootstrap`), sends the allocation reports that
//! changed, and sweeps finished allocations' files.
//!
//! The health checks ([`Checks`]) outlive sessions, as the allocations do.
//! Every report sent carries its allocation's check states. A check whose
//! status changes wakes the session through [`crate::checks::Changes`]
//! (a set of allocation ids and a `Notify`), which sends those
//! allocations' reports at once rather than on the next poll.
//!
//! Task states are learnt the same way: a [`StateWatch`] (inotify on every
//! task directory on disk, adopted ones included) wakes the session when a
//! supervisor replaces a `state.json`, and the session polls at once; the
//! timed poll stays as the fallback and drives restart delays.

mod away;
mod bootstrap;
mod images;
mod leader;

use away::Away;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_model::now_ms;
use drover_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::allocs::{collect_finished, Allocs};
use crate::assignment::{self, AllocReport};
use crate::checks::{Checks, NodeProber};
use crate::config::AgentConfig;
use crate::dns::{self, NodeDns};
use crate::error::AgentError;
use crate::exec::ExecSessions;
use crate::log_stream::{limit_msg, log_msg, stream_log, LogStreams};
use crate::net::peers::Peers;
use crate::node;
use crate::runtime::{Runtime, RuntimeError, StateWatch};

/// How often task states are read and changes reported.
const POLL: Duration = Duration::from_millis(200);
/// Longest interval between sweeps of finished allocations' files.
const GC_EVERY: Duration = Duration::from_secs(60);
/// Heartbeat interval until the scheduler says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// Why a session with the scheduler ended (the agent reconnects).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `--scheduler` is not a usable address.
    #[error("bad scheduler address {address:?}: {source}")]
    Address {
        /// What was configured.
        address: String,
        /// Why it is unusable.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS setup for {address}: {source}")]
    Tls {
        /// The scheduler's address.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The scheduler could not be reached.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The scheduler's address.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The tasks on disk could not be read for `Register`.
    #[error("cannot read the tasks on disk: {0}")]
    OnDisk(#[source] RuntimeError),
    /// The scheduler refused the stream.
    #[error("Connect refused: {0}")]
    Refused(String),
    /// A follower replica refused the stream, naming the leader or not.
    #[error("{address} is not the leader ({message})")]
    NotLeader {
        /// The follower's address.
        address: String,
        /// Its refusal.
        message: String,
        /// The leader it named.
        leader: Option<String>,
    },
    /// The scheduler ended the stream.
    #[error("scheduler closed the stream")]
    Closed,
    /// The stream broke.
    #[error("stream error: {0}")]
    Stream(String),
    /// Nothing more can be sent up.
    #[error("stream closed")]
    Outbound,
}

/// Runs the agent until `shutdown` is cancelled. Tasks keep running when
/// the agent stops; a restarted agent re-adopts them.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let hostname = node::hostname();
    let node_id = match &config.node_id {
        Some(bound) => node::claim_node_id(&config.data_dir, bound)?,
        None => node::node_id(&config.data_dir, &hostname)?,
    };
    // The one runtime of the process: allocations, logs, exec and garbage
    // collection all go through it.
    let runtime = Arc::new(
        Runtime::new(config.data_dir.join("allocs"), config.exe.clone())
            .with_cgroups(
                PathBuf::from("/sys/fs/cgroup"),
                config.cgroup_parent.clone(),
            )
            .with_policy(config.policy.clone()),
    );
    // Layers of images no task uses any more (e.g. tasks removed while the
    // agent was down); the runtime collects again after each removal.
    if let Err(error) = runtime.collect_image_garbage() {
        tracing::warn!(%error, "image cache garbage collection");
    }
    let mut checks = Checks::new(Arc::new(NodeProber::new(
        Arc::clone(&runtime),
        config.exe.clone(),
    )));
    let mut allocs = Allocs::new(runtime).with_host_network(config.policy.allow_host_network);
    let node = registration(&config, node_id.clone(), hostname);
    // Outlives every session: answers from the last records while the
    // scheduler is away.
    let mut dns = NodeDns::new(config.dns.clone(), shutdown.clone());
    crate::metrics::node_dns(dns.index().clone());
    tracing::info!(node_id = %node_id, scheduler = %config.scheduler, data_dir = %config.data_dir.display(), "agent starting");
    let mut away = Away::new();
    let mut schedulers = leader::Schedulers::new(&config.scheduler);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let address = schedulers.pick();
        let mut link = Link {
            allocs: &mut allocs,
            checks: &mut checks,
            dns: &mut dns,
            away: &mut away,
        };
        let backoff = match session(&config, &address, &node, &mut link, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                dns.scheduler_lost();
                away.lost();
                let how = match &error {
                    SessionError::NotLeader { leader, .. } => {
                        leader::Ended::Follower(leader.clone())
                    }
                    SessionError::Closed | SessionError::Stream(_) => leader::Ended::AfterRegister,
                    _ => leader::Ended::Failed,
                };
                let backoff = schedulers.ended(&address, &how);
                tracing::warn!(scheduler = %address, %error, retry_in_ms = backoff.as_millis() as u64, "scheduler session ended");
                backoff
            }
        };
        // Disconnect policies keep being applied while waiting to retry.
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        let mut check = tokio::time::interval(away::CHECK_EVERY);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                _ = check.tick() => away.enforce(&mut allocs).await,
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// What outlives a session: the allocations, their checks, the node's DNS
/// and how long the scheduler has been away.
struct Link<'a> {
    allocs: &'a mut Allocs,
    checks: &'a mut Checks,
    dns: &'a mut NodeDns,
    away: &'a mut Away,
}

/// What the node registers as: identity, capacity, attributes, operator
/// metadata.
fn registration(config: &AgentConfig, id: String, hostname: String) -> pb::Node {
    let proc_root = std::path::Path::new("/proc");
    pb::Node {
        id,
        attributes: node::attributes(proc_root, &hostname).into_iter().collect(),
        hostname,
        address: config.address.clone(),
        status: "ready".into(),
        cpu_millis: config.cpu_millis.unwrap_or_else(node::cpu_millis),
        memory_mb: config
            .memory_mb
            .unwrap_or_else(|| node::memory_mb(proc_root)),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        // `--subnet` asks the scheduler for that subnet; it refuses the
        // registration when the subnet is not this node's to have.
        subnet: config.subnet.map(|s| s.to_string()).unwrap_or_default(),
        meta: config
            .meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// [`connect`], which may take its whole timeout on a partitioned link,
/// applying the disconnect policies meanwhile.
async fn connect_while_away(
    config: &AgentConfig,
    addr: &str,
    link: &mut Link<'_>,
) -> Result<Channel, SessionError> {
    let connecting = connect(config, addr);
    tokio::pin!(connecting);
    let mut check = tokio::time::interval(away::CHECK_EVERY);
    loop {
        tokio::select! {
            c = &mut connecting => return c,
            _ = check.tick() => link.away.enforce(link.allocs).await,
        }
    }
}

/// Opens the channel to the scheduler at `addr`.
async fn connect(config: &AgentConfig, addr: &str) -> Result<Channel, SessionError> {
    let address = || addr.to_string();
    let mut endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|source| SessionError::Address {
            address: address(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        // A partition is noticed within a few seconds, not when TCP gives
        // up: disconnect policies count from then.
        .http2_keep_alive_interval(away::KEEPALIVE_EVERY)
        .keep_alive_timeout(away::KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|source| SessionError::Tls {
                address: address(),
                source,
            })?;
    }
    endpoint
        .connect()
        .await
        .map_err(|source| SessionError::Connect {
            address: address(),
            source,
        })
}

/// Why the scheduler at `address` refused the stream: a follower (naming
/// the leader or not), or otherwise.
fn refused(address: &str, s: &tonic::Status) -> SessionError {
    match leader::follower_refusal(s) {
        Some(leader) => SessionError::NotLeader {
            address: address.to_string(),
            message: s.message().to_string(),
            leader,
        },
        None => SessionError::Refused(s.message().to_string()),
    }
}

/// What one connection holds besides the allocations.
struct Session<'a> {
    config: &'a AgentConfig,
    node: &'a pb::Node,
    shutdown: &'a CancellationToken,
    /// Control messages up: register, heartbeats, allocation status.
    tx: mpsc::Sender<pb::AgentMessage>,
    /// Bulk messages up: log and exec output.
    bulk_tx: mpsc::Sender<pb::AgentMessage>,
    heartbeat_every: watch::Sender<Duration>,
    log_streams: LogStreams,
    peer_routes: Peers,
    execs: ExecSessions,
    /// The node's DNS, and the chunks of a relayed batch not yet whole.
    dns: &'a mut NodeDns,
    /// How long the scheduler has been away (until `Registered`).
    away: &'a mut Away,
    dns_feed: dns::Feed,
    gc_running: Option<JoinHandle<BTreeSet<String>>>,
    /// Wakes the session when a task's `state.json` is replaced.
    state_watch: StateWatch,
    /// The scheduler has said what this node holds: until then every
    /// allocation on disk may be one it wants, and nothing is collected.
    converged: bool,
    /// The assignments as last sent, by allocation id: partial updates
    /// apply to them.
    assigned: BTreeMap<String, pb::Assignment>,
}

/// One connection to the scheduler; returns Ok on shutdown, Err when the
/// stream breaks (the caller reconnects).
async fn session(
    config: &AgentConfig,
    address: &str,
    node: &pb::Node,
    link: &mut Link<'_>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let channel = connect_while_away(config, address, link).await?;
    let (allocs, checks) = (&mut *link.allocs, &mut *link.checks);
    let (dns, away) = (&mut *link.dns, &mut *link.away);
    // Assignments carry each allocation's group: a node with many
    // allocations of a large group gets more than gRPC's default 4 MiB.
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    // Two queues up: control (register, heartbeats, allocation status) and
    // bulk (log and exec output), taken in turn, so that a busy log or exec
    // reader never queues more than one chunk ahead of a heartbeat.
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    let (bulk_tx, bulk_rx) = mpsc::channel::<pb::AgentMessage>(64);
    let mut running = allocs.on_disk().map_err(SessionError::OnDisk)?;
    // After a reconnect (not a restart) the checks kept running: their
    // states go up with the registration.
    for r in &mut running {
        r.checks = checks.states(&r.alloc_id);
    }
    let register = pb::Register {
        node: Some(node.clone()),
        running: running.iter().map(pb::AllocStatus::from).collect(),
        partial_assignments: true,
        partial_peers: true,
    };
    send(&tx, pb::agent_message::Msg::Register(register)).await?;
    let mut inbound = client
        .connect(tokio_stream::StreamExt::merge(
            ReceiverStream::new(rx),
            ReceiverStream::new(bulk_rx),
        ))
        .await
        .map_err(|s| refused(address, &s))?
        .into_inner();
    // Heartbeats run in their own task: a slow stop or start in this loop
    // must never make a healthy node look dead.
    let beat = shutdown.child_token();
    let _stop_beat = beat.clone().drop_guard();
    let (heartbeat_every, every) = watch::channel(DEFAULT_HEARTBEAT);
    spawn_pull_forwarder(allocs.runtime(), &tx, &beat);
    tokio::spawn(heartbeats(tx.clone(), every, beat));
    allocs.forget_reported();
    let execs = ExecSessions::new(
        Arc::clone(allocs.runtime()),
        config.exe.clone(),
        bulk_tx.clone(),
    );
    let mut s = Session {
        config,
        node,
        shutdown,
        tx,
        bulk_tx,
        heartbeat_every,
        log_streams: LogStreams::new(allocs.runtime().policy().sessions),
        peer_routes: Peers::default(),
        execs,
        dns,
        away,
        dns_feed: dns::Feed::default(),
        gc_running: None,
        state_watch: StateWatch::new(),
        converged: false,
        assigned: BTreeMap::new(),
    };
    let mut poll = tokio::time::interval(POLL);
    // Finished allocations' files, swept at most every GC_EVERY (and at
    // least ten times per retention period), off the async loop.
    let mut gc = tokio::time::interval(GC_EVERY.min(config.keep_finished / 10).max(POLL));
    let check_changes = checks.changes();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                s.log_streams.cancel_all();
                return Ok(());
            }
            _ = gc.tick(), if s.converged => s.collect_garbage(allocs).await,
            _ = poll.tick() => {
                // Until `Registered`, the scheduler is still away.
                s.away.enforce(allocs).await;
                s.peer_routes.retry().await;
                s.poll_and_report(allocs, checks).await?;
            }
            () = s.state_watch.changed() => s.poll_and_report(allocs, checks).await?,
            () = check_changes.changed() => s.report(allocs, checks, Vec::new()).await?,
            msg = inbound.next() => match msg {
                None => return Err(SessionError::Closed),
                Some(Err(status)) => return Err(SessionError::Stream(status.message().to_string())),
                Some(Ok(m)) => s.dispatch(allocs, checks, m).await?,
            },
        }
    }
}

/// Sends one control message up.
async fn send(
    tx: &mpsc::Sender<pb::AgentMessage>,
    msg: pb::agent_message::Msg,
) -> Result<(), SessionError> {
    tx.send(pb::AgentMessage { msg: Some(msg) })
        .await
        .map_err(|_| SessionError::Outbound)
}

impl Session<'_> {
    /// Acts on one message from the scheduler.
    async fn dispatch(
        &mut self,
        allocs: &mut Allocs,
        checks: &mut Checks,
        msg: pb::SchedulerMessage,
    ) -> Result<(), SessionError> {
        use pb::scheduler_message::Msg;
        match msg.msg {
            Some(Msg::Registered(r)) => self.on_registered(allocs, &r).await,
            Some(Msg::Assignments(a)) => {
                crate::memory::busy();
                let all = self.merge(a);
                let (assignments, refused) = assignment::decode_all(&all);
                allocs.converge(&assignments, &refused).await;
                self.converged = true;
                self.poll_and_report(allocs, checks).await?;
            }
            Some(Msg::LogRequest(req)) => self.on_log_request(allocs, req).await,
            Some(Msg::LogCancel(c)) => self.log_streams.cancel(c.request_id),
            Some(Msg::Peers(p)) => self.peer_routes.apply(&p).await,
            Some(Msg::ExecInput(i)) => self.execs.handle(allocs, i),
            Some(Msg::DnsUpdate(u)) => self.dns.update(&mut self.dns_feed, u),
            Some(Msg::ImagesRequest(r)) => images::answer(
                Arc::clone(allocs.runtime()),
                r.request_id,
                self.bulk_tx.clone(),
            ),
            None => {}
        }
        Ok(())
    }

    /// The full set of assignments after `a`: `a` itself, or when partial,
    /// what was assigned with its changes.
    fn merge(&mut self, a: pb::Assignments) -> Vec<pb::Assignment> {
        let id = |x: &pb::Assignment| x.allocation.as_ref().map(|a| a.id.clone());
        if !a.partial {
            self.assigned = a
                .allocations
                .iter()
                .filter_map(|x| Some((id(x)?, x.clone())))
                .collect();
            return a.allocations;
        }
        for x in a.allocations {
            if let Some(key) = id(&x) {
                self.assigned.insert(key, x);
            }
        }
        for gone in &a.removed {
            self.assigned.remove(gone);
        }
        self.assigned.values().cloned().collect()
    }

    async fn on_registered(&mut self, allocs: &mut Allocs, r: &pb::Registered) {
        self.away.back();
        self.peer_routes.set_own_subnet(&r.subnet);
        if r.heartbeat_interval_ms > 0 {
            let every = u64::try_from(r.heartbeat_interval_ms).unwrap_or(2000);
            let _ = self.heartbeat_every.send(Duration::from_millis(every));
        }
        tracing::info!(node_id = %r.node_id, "registered with scheduler");
        bootstrap::network_ready(self.config, &self.node.id, r, allocs).await;
        let bridge = allocs.network().map(|up| up.bridge().ip);
        self.dns.ensure(bridge, dns::zone_of(r));
        crate::memory::release_after_start();
    }

    async fn on_log_request(&mut self, allocs: &Allocs, req: pb::LogRequest) {
        let admitted = match self.log_streams.admit(self.shutdown, req.request_id) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(request_id = req.request_id, alloc_id = %req.alloc_id, %error, "log stream refused");
                let _ = self.tx.send(limit_msg(req.request_id, error)).await;
                return;
            }
        };
        match allocs.resolve_task(&req.alloc_id, &req.task) {
            Ok(task) => {
                let rt = Arc::clone(allocs.runtime());
                tokio::spawn(stream_log(rt, req, task, self.bulk_tx.clone(), admitted));
            }
            Err(error) => {
                admitted.cancel.cancel();
                let reply = log_msg(req.request_id, Vec::new(), true, error.to_string());
                let _ = self.tx.send(reply).await;
            }
        }
    }

    /// Watches the task directories now on disk (before reading, so that no
    /// change after the read goes unnoticed), reads the task states and
    /// sends the reports that changed.
    async fn poll_and_report(
        &mut self,
        allocs: &mut Allocs,
        checks: &mut Checks,
    ) -> Result<(), SessionError> {
        let rt = allocs.runtime();
        match rt.list() {
            Ok(tasks) => self
                .state_watch
                .sync(tasks.iter().filter_map(|(a, t)| rt.task_dir(a, t).ok())),
            Err(error) => tracing::debug!(%error, "listing task directories to watch"),
        }
        let changed = allocs.poll().await;
        self.report(allocs, checks, changed).await
    }

    /// Brings the health checks in line with the allocations, then sends
    /// `reports` (those that changed) and the reports of allocations whose
    /// check status changed, each with its check states.
    async fn report(
        &self,
        allocs: &Allocs,
        checks: &mut Checks,
        mut reports: Vec<AllocReport>,
    ) -> Result<(), SessionError> {
        checks.sync(allocs.check_targets());
        crate::metrics::observe(allocs, checks);
        for id in checks.changes().take() {
            if !reports.iter().any(|r| r.alloc_id == id) {
                reports.extend(allocs.report_of(&id));
            }
        }
        for r in &mut reports {
            r.checks = checks.states(&r.alloc_id);
            send(&self.tx, pb::agent_message::Msg::AllocStatus((&*r).into())).await?;
        }
        Ok(())
    }

    /// Takes in the last sweep's result and starts the next one.
    async fn collect_garbage(&mut self, allocs: &mut Allocs) {
        if let Some(done) = self.gc_running.take_if(|h| h.is_finished()) {
            match done.await {
                Ok(removed) => allocs.forget_collected(&removed).await,
                Err(error) => tracing::warn!(%error, "garbage collection task"),
            }
        }
        if self.gc_running.is_none() {
            let rt = Arc::clone(allocs.runtime());
            let (in_use, keep) = (allocs.in_use(), self.config.keep_finished);
            self.gc_running = Some(tokio::task::spawn_blocking(move || {
                let removed = collect_finished(&rt, &in_use, keep);
                // Unused image layers age out too, not only when a task
                // is removed (the node policy's `[images]`).
                if let Err(error) = rt.collect_image_garbage() {
                    tracing::warn!(%error, "image cache garbage collection");
                }
                removed
            }));
        }
    }
}

/// Starts [`forward_pull_events`] of `runtime` on `tx` until `stop`.
fn spawn_pull_forwarder(
    runtime: &Runtime,
    tx: &mpsc::Sender<pb::AgentMessage>,
    stop: &CancellationToken,
) {
    tokio::spawn(forward_pull_events(
        runtime.pull_events(),
        tx.clone(),
        stop.clone(),
    ));
}

/// Sends the runtime's image pull events as they happen (a start, and so
/// this loop, waits for the pull), until `stop` or the stream closes.
async fn forward_pull_events(
    mut events: tokio::sync::broadcast::Receiver<crate::runtime::PullEvent>,
    tx: mpsc::Sender<pb::AgentMessage>,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let e = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => e,
        };
        let e = match e {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(dropped = n, "pull events dropped (the stream was behind)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut msg = pb::AllocEvent::from(&e.event);
        msg.alloc_id = e.alloc_id;
        if send(&tx, pb::agent_message::Msg::AllocEvent(msg))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends a heartbeat every interval until `stop` or the stream closes.
async fn heartbeats(
    tx: mpsc::Sender<pb::AgentMessage>,
    mut every: watch::Receiver<Duration>,
    stop: CancellationToken,
) {
    loop {
        let wait = *every.borrow_and_update();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.changed() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let beat = pb::Heartbeat { unix_ms: now_ms() };
        if send(&tx, pb::agent_message::Msg::Heartbeat(beat))
            .await
            .is_err()
        {
            return;
        }
    }
}
