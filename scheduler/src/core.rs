//! The scheduler's stateful core: reads the store, calls [`crate::placement`],
//! writes the result in guarded transactions, and tells connected agents.
//!
//! Everything here is a thin loop around pure functions; all durable state is
//! in the store, so a restarted scheduler resumes from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_proto::v1 as pb;
use drover_store::client::encode;
use drover_store::{Committed, Guard, Kind, Store, StoreError, Versioned, Write};
use tokio::sync::{mpsc, Notify};
use tonic::Status;

use crate::job::JobSpec;
use crate::placement::{self, Plan};
use crate::state::{
    AllocRecord, AllocStatus, Desired, JobRecord, JobStatus, NodeRecord, NodeStatus,
};
use crate::subnet::{SubnetConfig, SubnetError};

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
            heartbeat: Duration::from_secs(2),
            node_grace: Duration::from_secs(10),
            reconcile: Duration::from_secs(5),
        }
    }
}

/// Errors of the core, mapped to gRPC statuses at the edge.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No node subnet is left in the cluster CIDR (or the node prefix does
    /// not fit it).
    #[error("node {node_id} asks for subnet {wanted} (agent --subnet): {reason}")]
    SubnetRefused {
        /// The registering node.
        node_id: String,
        /// The subnet it asked for.
        wanted: crate::subnet::Cidr,
        /// Why it cannot have it.
        reason: String,
    },
    /// No node subnet is left in the cluster CIDR (or the node prefix does
    /// not fit it).
    #[error("cannot give node {node_id} a task subnet: {source}")]
    Subnet {
        /// The registering node.
        node_id: String,
        /// Why.
        #[source]
        source: SubnetError,
    },
    /// Too many concurrent writers won the race.
    #[error("gave up after {attempts} conflicting writes to {what}; retry")]
    Contended {
        /// What was being written.
        what: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl From<CoreError> for Status {
    fn from(e: CoreError) -> Status {
        match e {
            CoreError::Store(e) => Status::unavailable(format!("state store: {e}")),
            CoreError::Contended { .. } => Status::aborted(e.to_string()),
            CoreError::Subnet { .. } => Status::resource_exhausted(e.to_string()),
            CoreError::SubnetRefused { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}

/// A connected agent's outbound stream.
pub(crate) struct AgentLink {
    pub(crate) session: u64,
    pub(crate) tx: mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
    pub(crate) dirty: Arc<Notify>,
}

/// Shared state of one scheduler process.
pub struct Core {
    pub(crate) store: Store,
    pub(crate) timing: Timing,
    pub(crate) agents: Mutex<HashMap<String, AgentLink>>,
    pub(crate) sessions: AtomicU64,
    /// Serialises plan-and-commit passes in this process; the store's
    /// revision guards protect against other processes.
    pub(crate) planning: tokio::sync::Mutex<()>,
    pub(crate) logs: Mutex<HashMap<u64, LogSink>>,
    /// Open `drover exec` sessions by request id (see [`crate::exec`]).
    pub(crate) execs: Mutex<HashMap<u64, crate::exec::ExecSink>>,
    /// When this process started: a node with no stream to it is only
    /// declared down once it has had a full grace period to connect.
    pub(crate) started: tokio::time::Instant,
    /// When each node's stream last ended, for the grace period.
    pub(crate) disconnected: Mutex<HashMap<String, tokio::time::Instant>>,
    /// How node task subnets are cut from the cluster CIDR.
    pub(crate) subnets: SubnetConfig,
    /// The ready nodes' subnets and addresses, shared by every agent
    /// session (see [`crate::node_net`]).
    pub(crate) peers: crate::node_net::PeerState,
    /// Refuse agent certificates not bound to one node
    /// ([`Core::require_node_certs`]).
    pub(crate) node_certs_required: std::sync::atomic::AtomicBool,
}

/// Where an agent's log data for one request goes, the token that ends the
/// request's cancel-watcher once the agent has sent its last chunk, and the
/// node serving it.
pub(crate) type LogSink = (
    mpsc::Sender<Result<pb::LogChunk, Status>>,
    tokio_util::sync::CancellationToken,
    String,
);

pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn new_alloc_id() -> String {
    let v: u128 = rand::random();
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Result of a submission.
pub struct Submitted {
    /// Job version after the submission.
    pub version: u64,
    /// The job's allocations after the submission.
    pub allocations: Vec<AllocRecord>,
    /// Instances that could not be placed yet.
    pub warnings: Vec<String>,
}

impl Core {
    /// A core over `store`, cutting node subnets from the default cluster
    /// CIDR ([`crate::subnet::DEFAULT_CLUSTER_CIDR`]).
    pub fn new(store: Store, timing: Timing) -> Arc<Core> {
        Core::with_subnets(store, timing, SubnetConfig::default())
    }

    /// A core over `store` that gives nodes subnets as `subnets` says.
    pub fn with_subnets(store: Store, timing: Timing, subnets: SubnetConfig) -> Arc<Core> {
        Arc::new(Core {
            store,
            timing,
            agents: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(1),
            planning: tokio::sync::Mutex::new(()),
            logs: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            started: tokio::time::Instant::now(),
            disconnected: Mutex::new(HashMap::new()),
            subnets,
            peers: crate::node_net::PeerState::default(),
            node_certs_required: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Under mutual TLS, accept only agent certificates bound to the node
    /// that registers with them (`drover tls agent --node ID`), not the
    /// shared one of `drover tls init`. Bound certificates are always
    /// checked against the node they name.
    pub fn require_node_certs(&self, on: bool) {
        self.node_certs_required
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The stream down to `node_id`'s agent, while it is connected.
    pub(crate) fn agent_tx(
        &self,
        node_id: &str,
    ) -> Option<mpsc::Sender<Result<pb::SchedulerMessage, Status>>> {
        self.agents
            .lock()
            .ok()
            .and_then(|a| a.get(node_id).map(|l| l.tx.clone()))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Lists nodes, sorted by id (placement relies on the order for ties).
    pub async fn nodes(&self) -> Result<Vec<Versioned<NodeRecord>>, CoreError> {
        Ok(self.store.list::<NodeRecord>(Kind::Node).await?.items)
    }

    /// Lists every allocation.
    pub async fn allocs(&self) -> Result<Vec<Versioned<AllocRecord>>, CoreError> {
        Ok(self.store.list::<AllocRecord>(Kind::Alloc).await?.items)
    }

    /// What submitting `spec` would do, changing nothing.
    pub async fn plan(&self, spec: &JobSpec) -> Result<(Plan, bool), CoreError> {
        let job = self.store.get::<JobRecord>(Kind::Job, &spec.name).await?;
        let nodes = values(self.nodes().await?);
        let allocs = values(self.allocs().await?);
        let previous = job
            .as_ref()
            .filter(|j| j.value.status == JobStatus::Running)
            .map(|j| &j.value.spec);
        Ok((
            placement::plan(&nodes, &allocs, spec, previous),
            job.is_some(),
        ))
    }

    /// Registers or updates a job and places it. Idempotent: submitting the
    /// same spec twice changes nothing the second time.
    pub async fn submit(&self, spec: JobSpec) -> Result<Submitted, CoreError> {
        let _guard = self.planning.lock().await;
        self.place(Some(spec.clone()), &spec.name).await
    }

    /// Plans and commits job `name`. With `spec`, that spec is submitted;
    /// without, the job as stored is placed again, but only while it is
    /// still running (a reconcile must never revive a stopped job or undo a
    /// newer submission). Callers hold the planning lock.
    async fn place(&self, spec: Option<JobSpec>, name: &str) -> Result<Submitted, CoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let job = self.store.get::<JobRecord>(Kind::Job, name).await?;
            let spec = match (&spec, &job) {
                (Some(s), _) => s.clone(),
                (None, Some(j)) if j.value.status == JobStatus::Running => j.value.spec.clone(),
                (None, _) => {
                    return Ok(Submitted {
                        version: job.map(|j| j.value.version).unwrap_or(0),
                        allocations: Vec::new(),
                        warnings: Vec::new(),
                    })
                }
            };
            let nodes = self.nodes().await?;
            let allocs = self.allocs().await?;
            let running = job
                .as_ref()
                .filter(|j| j.value.status == JobStatus::Running);
            let previous = running.map(|j| &j.value.spec);
            let node_vals = values(nodes);
            let alloc_vals: Vec<AllocRecord> = allocs.iter().map(|a| a.value.clone()).collect();
            let plan = placement::plan(&node_vals, &alloc_vals, &spec, previous);
            let unchanged = previous == Some(&spec);
            let version = match (&job, unchanged) {
                (Some(j), true) => j.value.version,
                (Some(j), false) => j.value.version + 1,
                (None, _) => 1,
            };
            let record = JobRecord {
                spec: spec.clone(),
                status: JobStatus::Running,
                version,
                submitted_unix_ms: if unchanged {
                    running.map(|j| j.value.submitted_unix_ms).unwrap_or(0)
                } else {
                    now_ms()
                },
            };
            let mut guards = vec![Guard {
                kind: Kind::Job,
                name: spec.name.clone(),
                mod_revision: job.as_ref().map(|j| j.mod_revision).unwrap_or(0),
            }];
            let mut writes = Vec::new();
            if !unchanged {
                let key = self.store.key(Kind::Job, &spec.name);
                writes.push(Write::Put {
                    kind: Kind::Job,
                    name: spec.name.clone(),
                    value: encode(&key, &record)?,
                });
            }
            let touched =
                self.apply_plan(&plan, &spec, version, &allocs, &mut guards, &mut writes)?;
            if writes.is_empty() {
                return Ok(Submitted {
                    version,
                    allocations: job_allocs(&alloc_vals, &spec.name),
                    warnings: plan.failures,
                });
            }
            if let Committed::Yes(rev) = self.store.commit(&guards, &writes).await? {
                tracing::info!(job = %spec.name, version, revision = rev, placed = plan.place.len(), stopped = plan.stop.len(), "job submitted");
                self.wake(&touched);
                let allocs = values(self.allocs().await?);
                return Ok(Submitted {
                    version,
                    allocations: job_allocs(&allocs, &spec.name),
                    warnings: plan.failures,
                });
            }
        }
        Err(CoreError::Contended {
            what: format!("job {name:?}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Turns a plan into writes: new allocation records and stop marks.
    /// Returns the nodes whose assignments change.
    fn apply_plan(
        &self,
        plan: &Plan,
        spec: &JobSpec,
        version: u64,
        allocs: &[Versioned<AllocRecord>],
        guards: &mut Vec<Guard>,
        writes: &mut Vec<Write>,
    ) -> Result<BTreeSet<String>, CoreError> {
        let mut touched = BTreeSet::new();
        let now = now_ms();
        for p in &plan.place {
            let id = new_alloc_id();
            let rec = AllocRecord {
                id: id.clone(),
                name: format!("{}.{}[{}]", spec.name, p.group, p.index),
                job: spec.name.clone(),
                group: p.group.clone(),
                index: p.index,
                node_id: p.node_id.clone(),
                desired: Desired::Run,
                status: AllocStatus::Pending,
                tasks: Vec::new(),
                job_version: version,
                resources: p.resources,
                created_unix_ms: now,
                modified_unix_ms: now,
                ip: String::new(),
            };
            guards.push(Guard {
                kind: Kind::Alloc,
                name: id.clone(),
                mod_revision: 0,
            });
            writes.push(Write::Put {
                kind: Kind::Alloc,
                name: id.clone(),
                value: encode(&self.store.key(Kind::Alloc, &id), &rec)?,
            });
            touched.insert(p.node_id.clone());
        }
        for id in &plan.stop {
            let Some(a) = allocs.iter().find(|a| &a.name == id) else {
                continue;
            };
            let mut rec = a.value.clone();
            rec.desired = Desired::Stop;
            rec.modified_unix_ms = now;
            guards.push(Guard {
                kind: Kind::Alloc,
                name: id.clone(),
                mod_revision: a.mod_revision,
            });
            writes.push(Write::Put {
                kind: Kind::Alloc,
                name: id.clone(),
                value: encode(&self.store.key(Kind::Alloc, id), &rec)?,
            });
            touched.insert(rec.node_id.clone());
        }
        Ok(touched)
    }

    /// Stops a job: marks it stopped and every live allocation desired=stop.
    /// Returns the ids of the allocations asked to stop, or `None` if there
    /// is no such job.
    pub async fn stop(&self, name: &str) -> Result<Option<Vec<String>>, CoreError> {
        let _guard = self.planning.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let Some(job) = self.store.get::<JobRecord>(Kind::Job, name).await? else {
                return Ok(None);
            };
            let allocs = self.allocs().await?;
            let nodes = self.nodes().await?;
            let down: BTreeSet<&str> = nodes
                .iter()
                .filter(|n| n.value.status == NodeStatus::Down)
                .map(|n| n.name.as_str())
                .collect();
            let mut guards = vec![Guard {
                kind: Kind::Job,
                name: name.to_string(),
                mod_revision: job.mod_revision,
            }];
            let mut writes = Vec::new();
            let mut rec = job.value.clone();
            if rec.status != JobStatus::Stopped {
                rec.status = JobStatus::Stopped;
                writes.push(Write::Put {
                    kind: Kind::Job,
                    name: name.to_string(),
                    value: encode(&self.store.key(Kind::Job, name), &rec)?,
                });
            }
            let mut stopped = Vec::new();
            let mut touched = BTreeSet::new();
            for a in allocs.iter().filter(|a| a.value.job == name) {
                if a.value.desired == Desired::Stop && !a.value.is_live() {
                    continue;
                }
                let mut r = a.value.clone();
                let was_run = r.desired == Desired::Run;
                r.desired = Desired::Stop;
                if down.contains(r.node_id.as_str()) && r.is_live() {
                    r.status = AllocStatus::Lost;
                }
                if r == a.value {
                    if r.is_live() {
                        stopped.push(r.id.clone());
                    }
                    continue;
                }
                r.modified_unix_ms = now_ms();
                if was_run || r.is_live() {
                    stopped.push(r.id.clone());
                }
                touched.insert(r.node_id.clone());
                guards.push(Guard {
                    kind: Kind::Alloc,
                    name: r.id.clone(),
                    mod_revision: a.mod_revision,
                });
                writes.push(Write::Put {
                    kind: Kind::Alloc,
                    name: r.id.clone(),
                    value: encode(&self.store.key(Kind::Alloc, &r.id), &r)?,
                });
            }
            if writes.is_empty() {
                return Ok(Some(stopped));
            }
            if let Committed::Yes(rev) = self.store.commit(&guards, &writes).await? {
                tracing::info!(job = %name, revision = rev, allocations = stopped.len(), "job stopped");
                self.wake(&touched);
                return Ok(Some(stopped));
            }
        }
        Err(CoreError::Contended {
            what: format!("job {name:?}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Records what an agent reports about one of its allocations.
    pub async fn report(&self, node_id: &str, st: &pb::AllocStatus) -> Result<(), CoreError> {
        let Some(status) = AllocStatus::parse(&st.status) else {
            tracing::warn!(node_id, alloc_id = %st.alloc_id, status = %st.status, "agent reported an unknown status; ignored");
            return Ok(());
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some(a) = self
                .store
                .get::<AllocRecord>(Kind::Alloc, &st.alloc_id)
                .await?
            else {
                return Ok(());
            };
            if a.value.node_id != node_id {
                tracing::warn!(node_id, alloc_id = %st.alloc_id, owner = %a.value.node_id, "status for an allocation of another node; ignored");
                return Ok(());
            }
            let mut r = a.value.clone();
            r.status = status;
            r.tasks = st.tasks.iter().map(Into::into).collect();
            if !st.ip.is_empty() {
                r.ip = st.ip.clone();
            }
            if r == a.value {
                return Ok(());
            }
            r.modified_unix_ms = now_ms();
            let guards = [Guard {
                kind: Kind::Alloc,
                name: r.id.clone(),
                mod_revision: a.mod_revision,
            }];
            let writes = [Write::Put {
                kind: Kind::Alloc,
                name: r.id.clone(),
                value: encode(&self.store.key(Kind::Alloc, &r.id), &r)?,
            }];
            if let Committed::Yes(_) = self.store.commit(&guards, &writes).await? {
                tracing::info!(node_id, alloc_id = %r.id, alloc = %r.name, status = r.status.as_str(), "allocation status");
                if r.status.is_terminal() {
                    // It no longer needs to be in the node's assignments.
                    self.wake(&BTreeSet::from([node_id.to_string()]));
                    if r.desired == Desired::Run {
                        self.finish_batch(&r.job).await?;
                    }
                }
                return Ok(());
            }
        }
        Err(CoreError::Contended {
            what: format!("allocation {}", st.alloc_id),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Marks a running batch job complete (or failed) once every allocation
    /// it wants has finished.
    async fn finish_batch(&self, name: &str) -> Result<(), CoreError> {
        let _guard = self.planning.lock().await;
        let Some(job) = self.store.get::<JobRecord>(Kind::Job, name).await? else {
            return Ok(());
        };
        if job.value.spec.kind != crate::job::JobKind::Batch
            || job.value.status != JobStatus::Running
        {
            return Ok(());
        }
        let allocs: Vec<AllocRecord> = values(self.allocs().await?)
            .into_iter()
            .filter(|a| a.job == name && a.desired == Desired::Run)
            .collect();
        let wanted: u32 = job.value.spec.groups.iter().map(|g| g.count).sum();
        let done = allocs.iter().filter(|a| a.status.is_terminal()).count();
        if allocs.is_empty() || done < allocs.len() || (done as u64) < u64::from(wanted) {
            return Ok(());
        }
        let mut rec = job.value.clone();
        rec.status = if allocs.iter().all(|a| a.status == AllocStatus::Complete) {
            JobStatus::Complete
        } else {
            JobStatus::Failed
        };
        let guards = [Guard {
            kind: Kind::Job,
            name: name.to_string(),
            mod_revision: job.mod_revision,
        }];
        let writes = [Write::Put {
            kind: Kind::Job,
            name: name.to_string(),
            value: encode(&self.store.key(Kind::Job, name), &rec)?,
        }];
        if let Committed::Yes(_) = self.store.commit(&guards, &writes).await? {
            tracing::info!(job = %name, status = rec.status.as_str(), "batch job finished");
        }
        Ok(())
    }

    /// Marks the node's assignments as changed so its link resends them.
    pub(crate) fn wake(&self, nodes: &BTreeSet<String>) {
        let agents = lock(&self.agents);
        for n in nodes {
            if let Some(link) = agents.get(n) {
                link.dirty.notify_one();
            }
        }
    }

    /// The assignments a node should hold right now.
    pub(crate) async fn assignments(&self, node_id: &str) -> Result<pb::Assignments, CoreError> {
        let allocs = self.allocs().await?;
        let jobs: BTreeMap<String, JobRecord> = self
            .store
            .list::<JobRecord>(Kind::Job)
            .await?
            .items
            .into_iter()
            .map(|j| (j.name, j.value))
            .collect();
        let mut out = Vec::new();
        for a in allocs.iter().map(|a| &a.value) {
            // A finished allocation the job still wants stays assigned (its
            // status may be a node's early guess, e.g. right after an
            // agent restart, and the node settles it); the agent starts
            // nothing for one it has no files of (collected after
            // `--keep-finished`).
            if a.node_id != node_id || (a.desired == Desired::Stop && !a.is_live()) {
                continue;
            }
            let Some(job) = jobs.get(&a.job) else {
                continue;
            };
            let Some(group) = job.spec.group(&a.group) else {
                continue;
            };
            out.push(pb::Assignment {
                allocation: Some(pb::Allocation::from(a)),
                group: Some(pb::Group::from(group)),
                job_kind: job.spec.kind.as_str().into(),
            });
        }
        Ok(pb::Assignments { allocations: out })
    }

    /// One reconcile pass: every running job is planned again, so
    /// allocations lost with a node are replaced and jobs submitted before
    /// any node could take them get placed once one can.
    pub async fn reconcile(&self) -> Result<(), CoreError> {
        if self.started.elapsed() > self.timing.node_grace {
            // Nodes without a stream for longer than the grace period:
            // disconnected long enough ago, or ready under a previous
            // scheduler process and never connected to this one.
            let connected: BTreeSet<String> = lock(&self.agents).keys().cloned().collect();
            let gone: HashMap<String, tokio::time::Instant> = lock(&self.disconnected).clone();
            for n in self.nodes().await? {
                if n.value.status != NodeStatus::Ready || connected.contains(&n.name) {
                    continue;
                }
                let silent_long = gone
                    .get(&n.name)
                    .is_none_or(|t| t.elapsed() > self.timing.node_grace);
                if silent_long {
                    if let Err(error) = self.node_down(&n.name).await {
                        tracing::warn!(node_id = %n.name, %error, "cannot mark node down");
                    }
                }
            }
        }
        let jobs = self.store.list::<JobRecord>(Kind::Job).await?.items;
        for j in jobs {
            if j.value.status != JobStatus::Running {
                continue;
            }
            let (plan, _) = self.plan(&j.value.spec).await?;
            if !plan.place.is_empty() || !plan.stop.is_empty() {
                tracing::info!(job = %j.name, place = plan.place.len(), stop = plan.stop.len(), "reconcile");
                let _guard = self.planning.lock().await;
                if let Err(error) = self.place(None, &j.name).await {
                    tracing::warn!(job = %j.name, %error, "reconcile of job failed");
                }
            }
        }
        Ok(())
    }

    /// Marks a node down and its live allocations lost.
    pub async fn node_down(&self, node_id: &str) -> Result<(), CoreError> {
        let _guard = self.planning.lock().await;
        if lock(&self.agents).contains_key(node_id) {
            return Ok(());
        }
        let Some(n) = self.store.get::<NodeRecord>(Kind::Node, node_id).await? else {
            return Ok(());
        };
        if n.value.status == NodeStatus::Down {
            return Ok(());
        }
        let mut rec = n.value.clone();
        rec.status = NodeStatus::Down;
        let mut guards = vec![Guard {
            kind: Kind::Node,
            name: node_id.to_string(),
            mod_revision: n.mod_revision,
        }];
        let mut writes = vec![Write::Put {
            kind: Kind::Node,
            name: node_id.to_string(),
            value: encode(&self.store.key(Kind::Node, node_id), &rec)?,
        }];
        for a in self.allocs().await? {
            if a.value.node_id != node_id || !a.value.is_live() {
                continue;
            }
            let mut r = a.value.clone();
            r.status = AllocStatus::Lost;
            // Replacements take over; if the node comes back, its copy is
            // stopped rather than run next to them.
            r.desired = Desired::Stop;
            r.modified_unix_ms = now_ms();
            guards.push(Guard {
                kind: Kind::Alloc,
                name: r.id.clone(),
                mod_revision: a.mod_revision,
            });
            writes.push(Write::Put {
                kind: Kind::Alloc,
                name: r.id.clone(),
                value: encode(&self.store.key(Kind::Alloc, &r.id), &r)?,
            });
        }
        if let Committed::Yes(_) = self.store.commit(&guards, &writes).await? {
            tracing::warn!(node_id, lost = writes.len() - 1, "node down");
            self.notify_peers();
        }
        Ok(())
    }

    pub(crate) fn next_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed)
    }
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned
/// it: these maps hold no invariant a panic could break half-way.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn values<T>(v: Vec<Versioned<T>>) -> Vec<T> {
    v.into_iter().map(|x| x.value).collect()
}

fn job_allocs(allocs: &[AllocRecord], job: &str) -> Vec<AllocRecord> {
    let mut v: Vec<AllocRecord> = allocs.iter().filter(|a| a.job == job).cloned().collect();
    v.sort_by(|a, b| {
        (&a.group, a.index, a.created_unix_ms).cmp(&(&b.group, b.index, b.created_unix_ms))
    });
    v
}

/// Summary counts for `job list`.
pub fn job_counts(spec: &JobSpec, allocs: &[AllocRecord]) -> (u32, u32) {
    let running = allocs
        .iter()
        .filter(|a| a.job == spec.name && a.status == AllocStatus::Running)
        .count();
    let desired: u32 = spec.groups.iter().map(|g| g.count).sum();
    (u32::try_from(running).unwrap_or(u32::MAX), desired)
}
