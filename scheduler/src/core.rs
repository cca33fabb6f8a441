//! The scheduler process's shared state, composed: the cluster as stored
//! ([`Cluster`]), the connected agents (`Registry`), the log and exec
//! relays, the peer view, the timings and the agent certificate policy.
//!
//! Its methods are the few operations that need more than one of them:
//! a write to the cluster followed by waking the agents it concerns, a
//! registration that links the agent before recording the node, the end of
//! a session, and the reconcile pass. Each change that can alter the
//! service-discovery records (a status report, a submission, a stop, a
//! registration, a node going down) is followed at once by the
//! registrar's pass over what it touched, and every reconcile pass ends
//! with a full one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_store::Store;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, Submitted};
pub use crate::discovery::Discovery;
use crate::events::{EventLimits, EventLog};
use crate::job::JobSpec;
use crate::load::Load;
use crate::peers::Peers;
use crate::placement::PlanConfig;
use crate::queue::{trigger, Capacity, Trigger};
use crate::registrar::Registrar;
use crate::registry::{Outbound, Registry, Session};
use crate::relay::dns::{DnsRelay, RelaySink, PREFIX as DNS_PREFIX};
use crate::relay::exec::ExecRelay;
use crate::relay::images::ImagesRelay;
use crate::relay::logs::LogRelay;
use crate::state::{DesiredState, NodeRecord, NodeStatus};
use crate::subnet::SubnetConfig;
use crate::timers::DeployTimers;
use crate::transitions::StatusReport;
use wake::Alarm;

mod returning;
mod wake;

/// How often agents heartbeat, and how long silence is tolerated.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Interval agents are told to heartbeat at.
    pub heartbeat: Duration,
    /// Silence after which a node is down and its allocations are lost.
    pub node_grace: Duration,
    /// Period of the background reconcile pass.
    pub reconcile: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            // See the README, "Node failures", for why these.
            heartbeat: Duration::from_secs(1),
            node_grace: Duration::from_secs(5),
            reconcile: Duration::from_secs(5),
        }
    }
}

/// Shared state of one scheduler process.
pub struct Core {
    cluster: Arc<Cluster>,
    registry: Registry,
    logs: LogRelay,
    execs: ExecRelay,
    images: ImagesRelay,
    dns: Arc<DnsRelay>,
    peers: Peers,
    timing: Timing,
    discovery: Discovery,
    registrar: Arc<Registrar>,
    /// Refuse agent certificates not bound to one node
    /// ([`Core::require_node_certs`]).
    node_certs_required: AtomicBool,
    /// When to plan again: capacity events in, passes out (see
    /// [`crate::queue`]); run by [`Core::run_passes`].
    trigger: Mutex<Trigger>,
    /// Wakes [`Core::run_passes`] when the trigger was fed.
    nudge: tokio::sync::Notify,
    /// Passes over the waiting jobs run so far.
    waiting_passes: AtomicU64,
    /// When due reschedules should be looked for ([`wake`]).
    alarm: Alarm,
    /// When running deployments want another look.
    deploy_timers: DeployTimers,
    /// What clients may hold open ([`crate::load`]).
    load: Load,
    /// The allocation events ([`crate::events`]).
    events: Arc<EventLog>,
    /// The returning nodes waited on ([`crate::returning`]).
    returns: Mutex<crate::returning::Returns>,
}

mod passes;

impl Core {
    /// A core over `store`, cutting node subnets from the default cluster
    /// CIDR ([`crate::subnet::DEFAULT_CLUSTER_CIDR`]).
    pub fn new(store: Store, timing: Timing) -> Arc<Core> {
        Core::with_subnets(store, timing, SubnetConfig::default())
    }

    /// A core over `store` that gives nodes subnets as `subnets` says.
    pub fn with_subnets(store: Store, timing: Timing, subnets: SubnetConfig) -> Arc<Core> {
        Core::with_discovery(store, timing, subnets, Discovery::default())
    }

    /// A core that also registers services under `discovery`'s zone.
    pub fn with_discovery(
        store: Store,
        timing: Timing,
        subnets: SubnetConfig,
        discovery: Discovery,
    ) -> Arc<Core> {
        Core::with_placement(store, timing, subnets, discovery, PlanConfig::default())
    }

    /// A core that also places every job with the operator's `placement`
    /// settings (`drover scheduler --algorithm`).
    pub fn with_placement(
        store: Store,
        timing: Timing,
        subnets: SubnetConfig,
        discovery: Discovery,
        placement: PlanConfig,
    ) -> Arc<Core> {
        let events = EventLog::new(store.clone(), EventLimits::default());
        let cluster = Arc::new(Cluster::new(store, subnets).with_placement(placement));
        let registrar = Registrar::new(cluster.clone(), discovery.clone(), timing.node_grace);
        Arc::new(Core {
            cluster,
            registry: Registry::default(),
            logs: LogRelay::default(),
            execs: ExecRelay::default(),
            images: ImagesRelay::default(),
            dns: Arc::default(),
            peers: Peers::default(),
            timing,
            discovery,
            registrar: Arc::new(registrar),
            node_certs_required: AtomicBool::new(false),
            trigger: Mutex::new(Trigger::new(
                tokio::time::Instant::now().into_std(),
                timing.reconcile,
                trigger::DEBOUNCE,
            )),
            nudge: tokio::sync::Notify::new(),
            waiting_passes: AtomicU64::new(0),
            alarm: Alarm::default(),
            deploy_timers: DeployTimers::default(),
            load: Load::default(),
            events,
            returns: Mutex::default(),
        })
    }

    /// Under mutual TLS, accept only agent certificates bound to the node
    /// that registers with them (`drover tls agent --node ID`), not the
    /// shared one of `drover tls init`. Bound certificates are always
    /// checked against the node they name.
    pub fn require_node_certs(&self, on: bool) {
        self.node_certs_required.store(on, Ordering::Relaxed);
    }

    /// Whether agents must present a certificate bound to their node.
    pub(crate) fn node_certs_required(&self) -> bool {
        self.node_certs_required.load(Ordering::Relaxed)
    }

    /// What clients may hold open: streams per client and per connection
    /// ([`crate::load`]); set before serving.
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.cluster.store()
    }

    /// The allocation events: [`EventLog::recent`] gives the newest of
    /// the cluster (for the status page).
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// The cluster as stored.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The timings.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The service-discovery zone and TTL.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    pub(crate) fn alarm(&self) -> &Alarm {
        &self.alarm
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn logs(&self) -> &LogRelay {
        &self.logs
    }

    pub(crate) fn execs(&self) -> &ExecRelay {
        &self.execs
    }

    pub(crate) fn images(&self) -> &ImagesRelay {
        &self.images
    }

    /// The relay of the service-discovery records to the agents.
    pub(crate) fn dns_relay(&self) -> &Arc<DnsRelay> {
        &self.dns
    }

    /// Keeps the DNS relay's copy of the store's `/skydns/` records current
    /// until `shutdown` (one watch for every agent; see
    /// [`crate::relay::dns`]).
    pub(crate) async fn relay_dns_records(self: Arc<Self>, shutdown: CancellationToken) {
        let sink = RelaySink(self.dns.clone());
        self.store()
            .mirror(DNS_PREFIX, "the DNS records relayed to agents", sink)
            .run(shutdown)
            .await;
    }

    /// Registers or updates a job, places it, and tells the nodes.
    pub async fn submit(&self, spec: &JobSpec) -> Result<Submitted, ClusterError> {
        let done = match self.cluster.submit(spec).await {
            Ok(done) => done,
            Err(e) => {
                // A write in several transactions may have stored part of
                // the job: its nodes learn of it now, and reconcile places
                // the rest.
                self.wake_job(&spec.name).await;
                return Err(e);
            }
        };
        self.registry.wake(&done.touched);
        self.planned(&spec.name, &done.pending);
        if done.stopped > 0 {
            self.capacity(Capacity::Stopped);
        }
        self.deploy_later(&spec.name, &done);
        // Its services may have changed (port, tags, protocol, checks).
        let ids: Vec<String> = done.allocations.iter().map(|a| a.id.clone()).collect();
        self.sync_records(&ids).await;
        Ok(done)
    }

    /// Wakes the nodes holding live allocations of job `name` (best effort:
    /// a failure is logged).
    async fn wake_job(&self, name: &str) {
        match self.cluster.alloc_records().await {
            Ok(allocs) => {
                let nodes = allocs
                    .iter()
                    .filter(|a| a.job == name && a.is_live())
                    .map(|a| a.node_id.clone())
                    .collect();
                self.registry.wake(&nodes);
            }
            Err(error) => {
                tracing::warn!(job = %name, %error, "cannot read the job's allocations to wake their nodes")
            }
        }
    }

    /// Stops a job and tells the nodes. Returns the ids of the allocations
    /// asked to stop, or `None` if there is no such job.
    pub async fn stop(&self, name: &str) -> Result<Option<Vec<String>>, ClusterError> {
        let stopped = match self.cluster.stop(name).await {
            Ok(stopped) => stopped,
            Err(e) => {
                self.wake_job(name).await;
                return Err(e);
            }
        };
        let Some((stopped, touched)) = stopped else {
            return Ok(None);
        };
        if let Err(error) = self
            .cluster
            .cancel_deployment(name, "the job was stopped")
            .await
        {
            tracing::warn!(job = %name, %error, "cannot cancel the stopped job's deployment");
        }
        self.registry.wake(&touched);
        self.planned(name, &[]);
        self.capacity(Capacity::Stopped);
        self.sync_records(&stopped).await;
        Ok(Some(stopped))
    }

    /// Records what an agent reports about one of its allocations.
    pub async fn report(&self, node_id: &str, report: &StatusReport) -> Result<(), ClusterError> {
        let Some(r) = self.cluster.report(node_id, report).await? else {
            // A stale copy (another node's, or unknown) counts all the same.
            self.returned_report(node_id, report).await;
            return Ok(());
        };
        self.sync_records(std::slice::from_ref(&r.id)).await;
        self.reported_for_reschedule(&r).await;
        if self.cluster.is_deploying(&r.job) {
            self.step_deployment(&r.job).await;
        }
        if r.status.is_terminal() {
            // It no longer needs to be in the node's assignments.
            self.registry.wake(&[node_id.to_string()].into());
            // Its resources are free: waiting jobs may fit.
            self.capacity(Capacity::AllocEnded);
            if r.desired == DesiredState::Run {
                self.cluster.finish_batch(&r.job).await?;
            }
        }
        self.returned_report(node_id, report).await;
        Ok(())
    }

    /// Marks a node down and its live allocations lost, unless its agent
    /// is connected.
    pub async fn node_down(&self, node_id: &str) -> Result<(), ClusterError> {
        let down = self
            .cluster
            .node_down(node_id, || self.registry.is_connected(node_id))
            .await?;
        if down {
            crate::sync::lock(&self.returns).forget(node_id);
            self.peers.notify();
            // Its lease goes, and every record of the node with it.
            if let Err(error) = self.registrar.node_down(node_id).await {
                tracing::warn!(node_id, %error, "cannot revoke the node's discovery lease; its records expire with it");
            }
        }
        Ok(())
    }

    /// Brings the discovery records of allocations `ids` to what their
    /// state now calls for. A failure is logged: the state change stands,
    /// and the next reconcile pass's full resync repairs the records.
    async fn sync_records(&self, ids: &[String]) {
        if let Err(error) = self.registrar.sync_allocs(ids).await {
            tracing::warn!(allocations = ids.len(), %error, "cannot update discovery records; the next reconcile pass retries");
        }
    }

    /// Node `node_id` sent a message on its stream: it is alive (its
    /// discovery lease is renewed).
    pub(crate) fn heard(&self, node_id: &str) {
        self.registrar.heard(node_id);
    }

    /// One reconcile pass: nodes silent past their grace period are marked
    /// down, and every running job is planned again, so allocations lost
    /// with a node are replaced and jobs submitted before any node could
    /// take them get placed once one can (the backstop of the passes over
    /// waiting jobs, [`Core::run_passes`]).
    pub async fn reconcile(&self) -> Result<(), ClusterError> {
        let grace = self.timing.node_grace;
        for n in self.cluster.nodes().await? {
            // An initializing node is connected: silence takes it down too.
            if n.value.status != NodeStatus::Down && self.registry.silent(&n.name, grace) {
                if let Err(error) = self.node_down(&n.name).await {
                    tracing::warn!(node_id = %n.name, %error, "cannot mark node down");
                }
            } else if n.value.status == NodeStatus::Initializing {
                self.initializing_due(&n.name).await;
            }
        }
        self.reconcile_jobs().await?;
        self.rearm_reschedule().await;
        if let Err(error) = self.registrar.sync_all().await {
            tracing::warn!(%error, "discovery records resync failed");
        }
        Ok(())
    }

    /// Submits job `name`'s kept version `version` again (a revert: no
    /// canary phase) and tells the nodes.
    pub async fn revert(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Submitted, crate::cluster::DeployError> {
        let done = self.cluster.revert(name, version).await?;
        self.registry.wake(&done.touched);
        self.deploy_later(name, &done);
        let ids: Vec<String> = done.allocations.iter().map(|a| a.id.clone()).collect();
        self.sync_records(&ids).await;
        Ok(done)
    }

    /// When running deployments want another look.
    pub(crate) fn deploy_timers(&self) -> &DeployTimers {
        &self.deploy_timers
    }

    /// Asks for another pass over job `name` when `done` says its
    /// deployment wants one.
    fn deploy_later(&self, name: &str, done: &Submitted) {
        if let Some(at) = done.wake_at {
            self.deploy_timers.at(name, at);
        }
    }

    /// Steps job `name`'s deployment: a placement pass of the job as
    /// stored, which places and stops what the deployment now allows. A
    /// failure is logged (the next report, timer or reconcile pass tries
    /// again).
    pub(crate) async fn step_deployment(&self, name: &str) {
        match self.cluster.replace(name).await {
            Ok(done) => {
                self.registry.wake(&done.touched);
                self.deploy_later(name, &done);
                let ids: Vec<String> = done.allocations.iter().map(|a| a.id.clone()).collect();
                self.sync_records(&ids).await;
            }
            Err(error) => tracing::warn!(job = %name, %error, "deployment step failed"),
        }
    }

    /// Registers an agent: links it first, then records its node (so that
    /// no concurrent node_down can see the node ready in the store without
    /// a stream, or overwrite the new registration), then what it reports
    /// running. Keeps what the operator set (drain) and the node's subnet
    /// across reconnects; a new node gets a subnet here. On failure the
    /// link is removed again.
    pub(crate) async fn register(
        &self,
        reported: &NodeRecord,
        running: &[StatusReport],
        tx: Outbound,
    ) -> Result<(NodeRecord, Session), ClusterError> {
        let session = self.registry.connect(&reported.id, tx);
        let recorded = async {
            // Initializing while it runs copies replaced meanwhile: its
            // peers and discovery learn of it once they are stopped.
            let reported = self.returning(reported, running).await?;
            let node = self.cluster.register_node(&reported).await?;
            if node.status == NodeStatus::Ready {
                self.peers.notify();
                if let Err(error) = self.registrar.node_up(&node).await {
                    tracing::warn!(node_id = %node.id, %error, "cannot write the node's discovery record; the next reconcile pass retries");
                }
            }
            self.record_running(&node, running).await?;
            Ok(node)
        };
        match recorded.await {
            Ok(node) => Ok((node, session)),
            Err(e) => {
                self.registry.abandon(&reported.id, session.id);
                Err(e)
            }
        }
    }

    /// Records what a registering agent reports running.
    async fn record_running(
        &self,
        node: &NodeRecord,
        running: &[StatusReport],
    ) -> Result<(), ClusterError> {
        tracing::info!(node_id = %node.id, hostname = %node.hostname, cpu_millis = node.resources.cpu_millis, memory_mb = node.resources.memory_mb, "agent registered");
        for report in running {
            self.report(&node.id, report).await?;
        }
        Ok(())
    }

    /// A receiver of the peer view, for one agent session.
    pub(crate) fn peer_view(&self) -> tokio::sync::watch::Receiver<crate::peers::View> {
        self.peers.subscribe(&self.cluster, self.timing.heartbeat)
    }

    /// The end of an agent session, whose node was last heard `silent_for`
    /// ago: if it was the node's current one, the log and exec streams it
    /// carried fail, and the node gets what is left of its grace period
    /// (counted from when it was last heard, so a stream closed for
    /// silence does not wait a second grace) to come back before it is
    /// declared down and its work replaced.
    pub(crate) async fn session_ended(&self, node_id: &str, session: u64, silent_for: Duration) {
        if !self.registry.disconnect(node_id, session, silent_for) {
            return;
        }
        self.execs.node_gone(node_id);
        self.logs.node_gone(node_id);
        self.images.node_gone(node_id);
        tokio::time::sleep(self.timing.node_grace.saturating_sub(silent_for)).await;
        // Down only if no later session came and went: each end waits a
        // whole grace period of its own.
        if self.registry.gone_for(node_id, self.timing.node_grace) {
            if let Err(error) = self.node_down(node_id).await {
                tracing::warn!(node_id = %node_id, %error, "cannot mark node down");
            }
            // Its allocations are replaced by a full pass, soon.
            self.full_pass_soon();
        }
    }
}
