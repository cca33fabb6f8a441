//! `drover-sim`: simulated nodes. Each one registers with a scheduler over
//! the real agent stream (`AgentService.Connect`, the messages of
//! `drover_agent::session`) with the resources, attributes and metadata it
//! is given, heartbeats at the interval the scheduler asks for,
//! acknowledges every assignment and reports it running, and stopped ones
//! complete, without running anything. On command an allocation is
//! reported failed ([`Sim::fail`]) or healthy with every check passing
//! ([`Sim::healthy`]).
//!
//! Many nodes live on one tokio runtime; they share a few HTTP/2
//! connections ([`NodeSpec::nodes_per_connection`]), one stream per node
//! as a real agent holds. On loopback the scheduler takes plaintext, as it
//! does from `drover dev`'s agent; off loopback give [`NodeSpec::tls`]
//! (the agent's certificate, as `drover agent --tls-*` loads it).
//!
//! [`Sim::counts`] sums what the nodes reported; [`Sim::received`] what
//! each node was sent (encoded bytes, assignment messages and entries),
//! which is how the benchmark sees whether the cost per node grows with
//! its allocations or with their square.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use drover_proto::v1 as pb;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// What every simulated node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node ids are `<prefix><index, 5 digits>`: `sim-00042`.
    pub id_prefix: String,
    /// CPU capacity.
    pub cpu_millis: i64,
    /// Memory capacity.
    pub memory_mb: i64,
    /// Attributes (`${attr.X}`); `hostname` and `os` are added when absent.
    pub attributes: BTreeMap<String, String>,
    /// Operator metadata (`${meta.X}`).
    pub meta: BTreeMap<String, String>,
    /// Report checks passing as soon as an allocation runs, rather than
    /// pending until [`Sim::healthy`].
    pub checks_pass: bool,
    /// How many nodes share one HTTP/2 connection (each has its own stream).
    pub nodes_per_connection: usize,
    /// Client TLS for a scheduler off loopback.
    pub tls: Option<ClientTlsConfig>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            id_prefix: "sim-".into(),
            cpu_millis: 4000,
            memory_mb: 8192,
            attributes: BTreeMap::new(),
            meta: BTreeMap::new(),
            checks_pass: false,
            nodes_per_connection: 16,
            tls: None,
        }
    }
}

/// What the simulated nodes last reported, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nodes whose registration the scheduler acknowledged.
    pub registered: usize,
    /// Allocations reported running.
    pub running: usize,
    /// Of those, with every check passing (or no checks).
    pub healthy: usize,
    /// Allocations reported failed.
    pub failed: usize,
    /// Allocations reported complete (stopped).
    pub complete: usize,
}

/// What one node was sent by the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Encoded bytes of every message.
    pub bytes: u64,
    /// `Assignments` messages.
    pub assignment_messages: u64,
    /// Entries over all `Assignments` messages.
    pub assignment_entries: u64,
    /// `DnsUpdate` messages (the relayed service-discovery records).
    pub dns_messages: u64,
    /// Records over all `DnsUpdate` messages.
    pub dns_records: u64,
}

/// How an allocation is to be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Running { healthy: bool },
    Failed,
    Complete,
}

/// One allocation as its node reported it.
#[derive(Debug, Clone, Copy)]
struct Reported {
    node: usize,
    outcome: Outcome,
}

/// State shared by the nodes and the handle.
#[derive(Debug, Default)]
struct Shared {
    allocs: Mutex<HashMap<String, Reported>>,
    registered: AtomicU64,
    received: Vec<[AtomicU64; 5]>,
}

/// A command to one node about one of its allocations.
#[derive(Debug)]
enum Command {
    Fail(String),
    Healthy(String),
}

/// Simulated nodes, stopped on drop.
#[derive(Debug)]
pub struct Sim {
    ids: Vec<String>,
    shared: Arc<Shared>,
    commands: Vec<mpsc::UnboundedSender<Command>>,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sim {
    /// Starts `n` nodes of `spec` against the scheduler at `addr`
    /// (`http://127.0.0.1:4680`). Returns once their streams are open;
    /// [`Counts::registered`] says when the scheduler has taken them.
    ///
    /// # Errors
    ///
    /// When the address is malformed or a connection fails.
    pub async fn start(addr: &str, n: usize, spec: NodeSpec) -> Result<Sim> {
        let shared = Arc::new(Shared {
            received: (0..n).map(|_| Default::default()).collect(),
            ..Default::default()
        });
        let stop = CancellationToken::new();
        let mut ids = Vec::with_capacity(n);
        let mut commands = Vec::with_capacity(n);
        let spec = Arc::new(spec);
        let mut channel = None;
        for i in 0..n {
            if i % spec.nodes_per_connection.max(1) == 0 {
                channel = Some(connect(addr, spec.tls.clone()).await?);
            }
            let channel = channel.clone().ok_or_else(|| anyhow!("no channel"))?;
            let id = format!("{}{i:05}", spec.id_prefix);
            let (tx, rx) = mpsc::unbounded_channel();
            let node = SimNode {
                index: i,
                id: id.clone(),
                spec: spec.clone(),
                shared: shared.clone(),
                said: HashMap::new(),
                checks: HashMap::new(),
            };
            tokio::spawn(node.run(channel, rx, stop.clone()));
            ids.push(id);
            commands.push(tx);
        }
        Ok(Sim {
            ids,
            shared,
            commands,
            stop,
        })
    }

    /// The nodes' ids, by index.
    pub fn node_ids(&self) -> &[String] {
        &self.ids
    }

    /// Reports allocation `alloc_id` failed (its task exited 1) from now
    /// on. False when no node holds it.
    pub fn fail(&self, alloc_id: &str) -> bool {
        self.command(alloc_id, Command::Fail(alloc_id.into()))
    }

    /// Reports allocation `alloc_id` running with every check passing.
    /// False when no node holds it.
    pub fn healthy(&self, alloc_id: &str) -> bool {
        self.command(alloc_id, Command::Healthy(alloc_id.into()))
    }

    fn command(&self, alloc_id: &str, c: Command) -> bool {
        let node = lock(&self.shared.allocs).get(alloc_id).map(|r| r.node);
        node.and_then(|i| self.commands.get(i))
            .is_some_and(|tx| tx.send(c).is_ok())
    }

    /// What the nodes last reported, summed.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            registered: self.shared.registered.load(Ordering::Relaxed) as usize,
            ..Counts::default()
        };
        for r in lock(&self.shared.allocs).values() {
            match r.outcome {
                Outcome::Running { healthy } => {
                    c.running += 1;
                    c.healthy += usize::from(healthy);
                }
                Outcome::Failed => c.failed += 1,
                Outcome::Complete => c.complete += 1,
            }
        }
        c
    }

    /// Ids of the allocations reported with status `status` ("running",
    /// "failed", "complete"), sorted.
    pub fn allocs(&self, status: &str) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.shared.allocs)
            .iter()
            .filter(|(_, r)| outcome_status(r.outcome) == status)
            .map(|(id, _)| id.clone())
            .collect();
        v.sort();
        v
    }

    /// What each node was sent so far, by node index.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .iter()
            .map(|r| Received {
                bytes: r[0].load(Ordering::Relaxed),
                assignment_messages: r[1].load(Ordering::Relaxed),
                assignment_entries: r[2].load(Ordering::Relaxed),
                dns_messages: r[3].load(Ordering::Relaxed),
                dns_records: r[4].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Ends every node's stream (the scheduler sees them go silent).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Locks `m`, also when a panicking holder poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn outcome_status(o: Outcome) -> &'static str {
    match o {
        Outcome::Running { .. } => "running",
        Outcome::Failed => "failed",
        Outcome::Complete => "complete",
    }
}

async fn connect(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("scheduler address {addr:?}"))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).context("client TLS")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// One simulated node.
struct SimNode {
    index: usize,
    id: String,
    spec: Arc<NodeSpec>,
    shared: Arc<Shared>,
    /// What was last reported per allocation, so unchanged ones are not
    /// reported again when the scheduler resends them.
    said: HashMap<String, Outcome>,
    /// The checks of each allocation's group, as reported states.
    checks: HashMap<String, Vec<pb::CheckState>>,
}

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl SimNode {
    /// Holds a stream open until `stop`, reconnecting when it breaks.
    async fn run(
        mut self,
        channel: Channel,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut backoff = BACKOFF;
        while !stop.is_cancelled() {
            match self.session(channel.clone(), &mut commands, &stop).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(node_id = %self.id, %error, "simulated node reconnects");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn node(&self) -> pb::Node {
        let mut attributes = self.spec.attributes.clone();
        attributes
            .entry("hostname".into())
            .or_insert_with(|| self.id.clone());
        attributes
            .entry("os".into())
            .or_insert_with(|| "linux".into());
        pb::Node {
            id: self.id.clone(),
            hostname: self.id.clone(),
            address: "127.0.0.1".into(),
            cpu_millis: self.spec.cpu_millis,
            memory_mb: self.spec.memory_mb,
            attributes: attributes.into_iter().collect(),
            meta: self.spec.meta.clone().into_iter().collect(),
            agent_version: "sim".into(),
            ..Default::default()
        }
    }

    /// One stream: register (with what it holds), then heartbeat, answer
    /// assignments and commands. Ok when stopped.
    async fn session(
        &mut self,
        channel: Channel,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(1024);
        let running = self
            .said
            .iter()
            .map(|(id, o)| self.status(id, *o))
            .collect();
        let register = pb::Register {
            node: Some(self.node()),
            running,
            partial_assignments: true,
            partial_peers: true,
        };
        send(&tx, pb::agent_message::Msg::Register(register)).await?;
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow!("registration refused: {}", s.message()))?
            .into_inner();
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut registered = false;
        let result = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = beat.tick() => {
                    let hb = pb::Heartbeat { unix_ms: now_ms() };
                    send(&tx, pb::agent_message::Msg::Heartbeat(hb)).await?;
                }
                Some(c) = commands.recv() => self.command(&tx, c).await?,
                m = inbound.next() => {
                    let m = match m {
                        None => break Err(anyhow!("stream closed")),
                        Some(Err(s)) => break Err(anyhow!("stream failed: {}", s.message())),
                        Some(Ok(m)) => m,
                    };
                    self.count(&m);
                    match m.msg {
                        Some(pb::scheduler_message::Msg::Registered(r)) => {
                            let every = u64::try_from(r.heartbeat_interval_ms).unwrap_or(0).max(10);
                            beat = tokio::time::interval(Duration::from_millis(every));
                            if !registered {
                                registered = true;
                                self.shared.registered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(pb::scheduler_message::Msg::Assignments(a)) => self.assigned(&tx, a).await?,
                        _ => {}
                    }
                }
            }
        };
        if registered {
            self.shared.registered.fetch_sub(1, Ordering::Relaxed);
        }
        result
    }

    fn count(&self, m: &pb::SchedulerMessage) {
        let Some(r) = self.shared.received.get(self.index) else {
            return;
        };
        r[0].fetch_add(m.encoded_len() as u64, Ordering::Relaxed);
        if let Some(pb::scheduler_message::Msg::Assignments(a)) = &m.msg {
            r[1].fetch_add(1, Ordering::Relaxed);
            r[2].fetch_add(a.allocations.len() as u64, Ordering::Relaxed);
        }
        if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = &m.msg {
            r[3].fetch_add(1, Ordering::Relaxed);
            r[4].fetch_add(u.records.len() as u64, Ordering::Relaxed);
        }
    }

    /// Acknowledges assignments: new ones run, stopped ones complete; a
    /// failed one stays failed.
    async fn assigned(
        &mut self,
        tx: &mpsc::Sender<pb::AgentMessage>,
        a: pb::Assignments,
    ) -> Result<()> {
        for asg in a.allocations {
            let Some(alloc) = asg.allocation else {
                continue;
            };
            if !self.checks.contains_key(&alloc.id) {
                let checks = asg.group.as_ref().map(group_checks).unwrap_or_default();
                self.checks.insert(alloc.id.clone(), checks);
            }
            let previous = self.said.get(&alloc.id).copied();
            let outcome = if alloc.desired == "stop" {
                match previous {
                    Some(Outcome::Failed) => Outcome::Failed,
                    _ => Outcome::Complete,
                }
            } else {
                match previous {
                    Some(o) => o,
                    None => Outcome::Running {
                        healthy: self.spec.checks_pass,
                    },
                }
            };
            if previous != Some(outcome) || alloc.status != outcome_status(outcome) {
                self.report(tx, &alloc.id, outcome).await?;
            }
        }
        Ok(())
    }

    async fn command(&mut self, tx: &mpsc::Sender<pb::AgentMessage>, c: Command) -> Result<()> {
        let (id, outcome) = match c {
            Command::Fail(id) => (id, Outcome::Failed),
            Command::Healthy(id) => (id, Outcome::Running { healthy: true }),
        };
        if self.said.contains_key(&id) {
            self.report(tx, &id, outcome).await?;
        }
        Ok(())
    }

    /// Sends the status of `id` and records it, unless it was said already.
    async fn report(
        &mut self,
        tx: &mpsc::Sender<pb::AgentMessage>,
        id: &str,
        o: Outcome,
    ) -> Result<()> {
        let st = self.status(id, o);
        self.said.insert(id.to_string(), o);
        lock(&self.shared.allocs).insert(
            id.to_string(),
            Reported {
                node: self.index,
                outcome: o,
            },
        );
        send(tx, pb::agent_message::Msg::AllocStatus(st)).await
    }

    /// The status message of allocation `id` as `o`.
    fn status(&self, id: &str, o: Outcome) -> pb::AllocStatus {
        let (state, exit_code) = match o {
            Outcome::Running { .. } => ("running", None),
            Outcome::Failed => ("failed", Some(1)),
            Outcome::Complete => ("exited", Some(0)),
        };
        let check = match o {
            Outcome::Running { healthy: true } => "passing",
            Outcome::Running { healthy: false } => "pending",
            Outcome::Failed | Outcome::Complete => "critical",
        };
        let checks = self
            .checks
            .get(id)
            .map(|cs| {
                cs.iter()
                    .map(|c| pb::CheckState {
                        status: check.into(),
                        last_unix_ms: now_ms(),
                        ..c.clone()
                    })
                    .collect()
            })
            .unwrap_or_default();
        pb::AllocStatus {
            alloc_id: id.to_string(),
            status: outcome_status(o).into(),
            tasks: vec![pb::TaskState {
                name: "sim".into(),
                state: state.into(),
                exit_code,
                ..Default::default()
            }],
            ip: String::new(),
            checks,
            events: Vec::new(),
        }
    }
}

/// Every check of a group's services, as states to fill in.
fn group_checks(g: &pb::Group) -> Vec<pb::CheckState> {
    g.services
        .iter()
        .flat_map(|s| {
            s.checks.iter().enumerate().map(|(i, c)| pb::CheckState {
                service: s.name.clone(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                r#type: c.r#type.clone(),
                ..Default::default()
            })
        })
        .collect()
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, msg: pb::agent_message::Msg) -> Result<()> {
    tx.send(pb::AgentMessage { msg: Some(msg) })
        .await
        .map_err(|_| anyhow!("agent stream closed"))
}
