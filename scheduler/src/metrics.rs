//! The scheduler's Prometheus metrics.
//!
//! Counted where they happen: placement passes (instances placed and left
//! unplaced, and each pass's latency). Read from the cluster when
//! Prometheus scrapes ([`SchedulerSampler`]): leadership, jobs, allocations
//! by status, instances waiting for capacity, running deployments and
//! connected agents. Only the leader reports the cluster's gauges (a
//! follower's are empty), so that summing over replicas counts each
//! allocation once. The store's latency and errors are the store
//! client's (`drover_store_client_*`, see `drover_store::metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use drover_metrics::prometheus::{IntGauge, IntGaugeVec, Registry};
use drover_metrics::MetricsError;
use drover_model::{AllocStatus, JobKind};
use tokio::sync::watch;

use crate::core::Core;
use crate::counters::METRICS;
use crate::gate::Role;

/// The gauges read from the cluster at scrape time, and where from.
pub struct SchedulerSampler {
    /// The current term's core (a replica starts a fresh one per term).
    core: Mutex<Weak<Core>>,
    /// This replica's role; none (one replica, `drover dev`) leads.
    role: Mutex<Option<watch::Receiver<Role>>>,
    leader: IntGauge,
    jobs: IntGaugeVec,
    allocations: IntGaugeVec,
    pending: IntGauge,
    deployments: IntGauge,
    agents: IntGauge,
}

/// Registers the scheduler's metrics; the sampler returned is to be told
/// of each term's core ([`SchedulerSampler::set_core`]) and added to the
/// exporter.
pub fn register(registry: &Registry) -> Result<Arc<SchedulerSampler>, MetricsError> {
    let m = &*METRICS;
    for result in ["placed", "unplaced"] {
        m.placements.with_label_values(&[result]);
    }
    drover_metrics::register(registry, m.placements.clone())?;
    drover_metrics::register(registry, m.placement_seconds.clone())?;
    let conflicts = crate::cluster::conflicts_counter();
    for record in crate::cluster::CONFLICT_RECORDS {
        conflicts.with_label_values(&[record]);
    }
    drover_metrics::register(registry, conflicts.clone())?;
    let s = SchedulerSampler {
        core: Mutex::new(Weak::new()),
        role: Mutex::new(None),
        leader: drover_metrics::gauge(
            "drover_scheduler_leader",
            "1 while this scheduler replica leads (and serves), else 0.",
        ),
        jobs: drover_metrics::gauge_vec(
            "drover_scheduler_jobs",
            "Jobs in the store, by kind and status (leader only).",
            &["kind", "status"],
        ),
        allocations: drover_metrics::gauge_vec(
            "drover_scheduler_allocations",
            "Allocations in the store, by status (leader only).",
            &["status"],
        ),
        pending: drover_metrics::gauge(
            "drover_scheduler_pending_placements",
            "Instances waiting for a node able to take them (leader only).",
        ),
        deployments: drover_metrics::gauge(
            "drover_scheduler_deployments_running",
            "Deployments in progress (leader only).",
        ),
        agents: drover_metrics::gauge(
            "drover_scheduler_connected_agents",
            "Agents holding a stream with this scheduler.",
        ),
    };
    drover_metrics::register(registry, s.leader.clone())?;
    drover_metrics::register(registry, s.jobs.clone())?;
    drover_metrics::register(registry, s.allocations.clone())?;
    drover_metrics::register(registry, s.pending.clone())?;
    drover_metrics::register(registry, s.deployments.clone())?;
    drover_metrics::register(registry, s.agents.clone())?;
    Ok(Arc::new(s))
}

impl SchedulerSampler {
    /// The core of the term now serving.
    pub fn set_core(&self, core: &Arc<Core>) {
        *lock(&self.core) = Arc::downgrade(core);
    }

    /// Reports leadership from `role` (without it, the replica leads
    /// whenever it has a core).
    pub fn set_role(&self, role: watch::Receiver<Role>) {
        *lock(&self.role) = Some(role);
    }

    fn leads(&self) -> bool {
        lock(&self.role)
            .as_ref()
            .is_none_or(|r| matches!(*r.borrow(), Role::Leading))
    }

    fn clear(&self) {
        self.jobs.reset();
        self.allocations.reset();
        self.pending.set(0);
        self.deployments.set(0);
        self.agents.set(0);
    }

    async fn read(&self, core: &Core) -> Result<(), crate::cluster::ClusterError> {
        let cluster = core.cluster();
        let jobs = cluster.jobs().await?;
        let allocs = cluster.alloc_records().await?;
        let nodes = cluster.nodes().await?;
        self.jobs.reset();
        for kind in JobKind::ALL {
            self.jobs
                .with_label_values(&[kind.as_str(), "running"])
                .set(0);
        }
        let mut pending = 0u64;
        for j in &jobs {
            let labels = [j.value.spec.kind.as_str(), j.value.status.as_str()];
            self.jobs.with_label_values(&labels).inc();
            pending += u64::from(crate::queue::total(&j.value.pending));
        }
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        for a in &allocs {
            *by_status.entry(a.status.as_str().to_string()).or_default() += 1;
        }
        let all = AllocStatus::ALL.iter().map(|s| s.as_str());
        drover_metrics::set_counts(&self.allocations, all, &by_status);
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        let deploying = cluster.deploying().len();
        self.deployments
            .set(i64::try_from(deploying).unwrap_or(i64::MAX));
        let connected = nodes
            .iter()
            .filter(|n| core.registry().is_connected(&n.name))
            .count();
        self.agents
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
        Ok(())
    }
}

#[async_trait::async_trait]
impl drover_metrics::Sampler for SchedulerSampler {
    async fn sample(&self) {
        let core = lock(&self.core).upgrade();
        let leads = core.is_some() && self.leads();
        self.leader.set(i64::from(leads));
        let Some(core) = core.filter(|_| leads) else {
            self.clear();
            return;
        };
        if let Err(error) = self.read(&core).await {
            tracing::warn!(%error, "metrics: cannot read the cluster; its gauges are cleared");
            self.clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
