//! The store-backed cluster state: jobs, allocations, nodes and subnet
//! claims as kept in etcd, read and written only here.
//!
//! Each operation reads what it needs, asks the pure rules
//! ([`crate::placement`], [`crate::transitions`], [`crate::subnet`]) what
//! changes, and writes the result through `Cluster::write` (in `commit`),
//! one guarded transaction tried again on conflict. A write larger than one
//! store transaction may hold (128 operations, 1.5 MiB) is cut into
//! batches (`batch`), each guarded by the record it hangs on (the job, the
//! node) and ordered so that a write cut short leaves a state that record
//! explains and the next pass completes: for a job, stops of replaced
//! instances, then the job, then new allocations, which reconcile places
//! again if they never land; for a stop or a lost node, the allocations
//! first and the job or node last. A record too large for any request is
//! refused ([`ClusterError::TooLarge`]) before anything is written. All durable state is in
//! the store, so a restarted scheduler resumes from it. Who is connected,
//! and telling agents, is not this module's business: operations return the
//! nodes whose assignments changed and the caller wakes them.

use drover_model::now_ms;
use drover_store::{Kind, Store, StoreError, Versioned, WatchEvent};
use tokio::sync::mpsc;

use crate::job::JobSpec;
use crate::placement::{Plan, PlanConfig};
use crate::state::{AllocRecord, JobRecord, JobStatus, NodeRecord};
use crate::subnet::{Ipv4Net, SubnetConfig, SubnetError};

mod batch;
mod commit;
mod conflicts;
mod deploy;
mod fence;
mod jobs;
pub mod limits;
mod nodes;

pub use commit::{Step, Txn, Written, MAX_ATTEMPTS};
pub use conflicts::{most_attempts, write_conflicts, RECORDS as CONFLICT_RECORDS};

/// The conflicting-writes counter, for the metrics registry.
pub(crate) fn conflicts_counter() -> &'static drover_metrics::prometheus::IntCounterVec {
    &conflicts::CONFLICTS
}
pub use deploy::DeployError;
pub use jobs::Submitted;

/// Errors of the cluster state, mapped to gRPC statuses at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The subnet a node asks for cannot be its.
    #[error("node {node_id} asks for subnet {wanted} (agent --subnet): {reason}")]
    SubnetRefused {
        /// The registering node.
        node_id: String,
        /// The subnet it asked for.
        wanted: Ipv4Net,
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
    /// A record is larger than one store request may carry.
    #[error("record {key:?} would take {bytes} bytes, over the state store's request limit of {max} bytes (etcd --max-request-bytes, 1.5 MiB by default, less what the rest of the request takes); make it smaller")]
    TooLarge {
        /// The record's store key.
        key: String,
        /// Its size in a request.
        bytes: usize,
        /// What a request may hold besides the rest of it.
        max: usize,
    },
    /// A job whose record cannot fit in one store request.
    #[error("job {job:?} is {}; the largest job the state store accepts is {} (etcd --max-request-bytes, 1.5 MiB by default, less 16 KiB for the rest of the request): split it into smaller jobs", limits::size(*bytes), limits::size(*max))]
    JobTooLarge {
        /// The job's name.
        job: String,
        /// What it takes.
        bytes: usize,
        /// What a store request may hold of it.
        max: usize,
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

/// The cluster as stored.
#[derive(Debug)]
pub struct Cluster {
    store: Store,
    /// How node task subnets are cut from the cluster CIDR.
    subnets: SubnetConfig,
    /// Serialises plan-and-commit passes, registrations, drains and node
    /// losses in this process; the store's revision guards protect against
    /// other processes.
    planning: tokio::sync::Mutex<()>,
    /// The operator's placement settings, passed to every plan.
    placement: PlanConfig,
    /// Jobs whose deployment was running when last placed (see
    /// `deploy.rs`): their allocations' status reports step it.
    deploying: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The subnet claims as this process last read or wrote them (see
    /// `nodes.rs`); `None` until the first registration reads them.
    claims: std::sync::Mutex<Option<nodes::Claims>>,
    /// A registration of this process lost a race for a subnet: another
    /// writer claims too, so new nodes start their search at a subnet of
    /// their own (`subnet::spread`) rather than the lowest free one.
    claims_contended: std::sync::atomic::AtomicBool,
    /// The leader term every write is fenced on (`fence.rs`); `None`:
    /// unfenced (one scheduler, tests).
    fence: std::sync::RwLock<Option<drover_store::election::Fence>>,
}

impl Cluster {
    /// The cluster kept in `store`, giving nodes subnets as `subnets` says.
    pub fn new(store: Store, subnets: SubnetConfig) -> Cluster {
        Cluster {
            store,
            subnets,
            planning: tokio::sync::Mutex::new(()),
            placement: PlanConfig::default(),
            deploying: std::sync::Mutex::default(),
            claims: std::sync::Mutex::default(),
            claims_contended: std::sync::atomic::AtomicBool::new(false),
            fence: std::sync::RwLock::new(None),
        }
    }

    /// The same cluster, planning with `placement` (the scheduler-wide
    /// default algorithm).
    pub fn with_placement(self, placement: PlanConfig) -> Cluster {
        Cluster { placement, ..self }
    }

    /// The operator's placement settings.
    pub fn placement(&self) -> &PlanConfig {
        &self.placement
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How node subnets are cut.
    pub fn subnets(&self) -> &SubnetConfig {
        &self.subnets
    }

    /// Lists nodes, sorted by id (placement relies on the order for ties).
    pub async fn nodes(&self) -> Result<Vec<Versioned<NodeRecord>>, ClusterError> {
        Ok(self.store.list::<NodeRecord>(Kind::Node).await?.items)
    }

    /// Lists every allocation.
    pub async fn allocs(&self) -> Result<Vec<Versioned<AllocRecord>>, ClusterError> {
        Ok(self.store.list::<AllocRecord>(Kind::Alloc).await?.items)
    }

    /// Every allocation's record.
    pub async fn alloc_records(&self) -> Result<Vec<AllocRecord>, ClusterError> {
        Ok(values(self.allocs().await?))
    }

    /// Lists every job, sorted by name.
    pub async fn jobs(&self) -> Result<Vec<Versioned<JobRecord>>, ClusterError> {
        Ok(self.store.list::<JobRecord>(Kind::Job).await?.items)
    }

    /// Reads job `name`.
    pub async fn job(&self, name: &str) -> Result<Option<Versioned<JobRecord>>, ClusterError> {
        Ok(self.store.get::<JobRecord>(Kind::Job, name).await?)
    }

    /// Watches every change to records of `kind` from now on.
    pub async fn watch(&self, kind: Kind) -> Result<mpsc::Receiver<WatchEvent>, ClusterError> {
        Ok(self.store.watch(kind, 0).await?)
    }

    /// Refuses `spec` if its record would not fit in one store request
    /// ([`ClusterError::JobTooLarge`]).
    pub fn check_job_size(&self, spec: &JobSpec) -> Result<(), ClusterError> {
        limits::check_record_size(&self.store.key(Kind::Job, &spec.name), spec)
    }

    /// What submitting `spec` would do, changing nothing, and whether the
    /// job exists.
    pub async fn plan(&self, spec: &JobSpec) -> Result<(Plan, bool), ClusterError> {
        let job = self.job(&spec.name).await?;
        let nodes = values(self.nodes().await?);
        let allocs = values(self.allocs().await?);
        let current = job.as_ref().map(|j| &j.value);
        let previous = current
            .filter(|j| j.status == JobStatus::Running)
            .map(|j| &j.spec);
        // As a submission would: under the job's deployment.
        let now = now_ms();
        let (record, changed) = crate::transitions::submit(current, spec, now);
        let mine: Vec<AllocRecord> = allocs
            .iter()
            .filter(|a| a.job == spec.name)
            .cloned()
            .collect();
        let outcome = self
            .history(&spec.name)
            .await?
            .outcome(&record, changed, false, &mine, now);
        let managed = deploy::managed(&outcome);
        let planned = crate::reschedule::plan(
            &self.placement,
            &nodes,
            &allocs,
            spec,
            previous,
            now,
            &managed,
        );
        Ok((planned.plan, job.is_some()))
    }
}

fn values<T>(v: Vec<Versioned<T>>) -> Vec<T> {
    v.into_iter().map(|x| x.value).collect()
}
