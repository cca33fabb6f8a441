//! The agent's Prometheus metrics.
//!
//! Counted where they happen: task restarts and task start latency (by
//! the executor, in [`crate::counters`]), OOM kills (seen once per task end). Set each time the
//! session reports ([`observe`]): allocations and tasks by state, checks
//! by status. Read at scrape time ([`AgentSampler`]): each live
//! allocation's CPU time and memory from its cgroup, and the node DNS
//! index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use drover_metrics::prometheus::{CounterVec, IntCounter, IntGaugeVec, Registry};
use drover_metrics::{MetricsError, Sampler};
use drover_model::{AllocStatus, CheckStatus, TaskStatus};

use crate::allocs::Allocs;
use crate::checks::Checks;
use crate::runtime::TaskState;

struct Metrics {
    oom_kills: IntCounter,
    allocations: IntGaugeVec,
    tasks: IntGaugeVec,
    checks: IntGaugeVec,
    cpu: CounterVec,
    memory: IntGaugeVec,
    /// The allocations whose cgroups the sampler reads: id, job, group.
    live: Mutex<Vec<[String; 3]>>,
    /// Task ends already counted as OOM kills: (alloc, task, end time).
    ooms_seen: Mutex<BTreeSet<(String, String, i64)>>,
    /// The node DNS server's index, once it exists.
    node_dns: Mutex<Option<drover_dns::metrics::IndexSampler>>,
}

/// `drover_job`, not `job`: Prometheus gives each target a `job` label of
/// its own.
const ALLOC_LABELS: [&str; 3] = ["alloc_id", "drover_job", "group"];

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    oom_kills: drover_metrics::counter(
        "drover_agent_oom_kills_total",
        "Tasks the kernel's OOM killer ended (their cgroup's memory limit).",
    ),
    allocations: drover_metrics::gauge_vec(
        "drover_agent_allocations",
        "Allocations this node holds, by status.",
        &["status"],
    ),
    tasks: drover_metrics::gauge_vec(
        "drover_agent_tasks",
        "Tasks of the allocations this node holds, by state.",
        &["state"],
    ),
    checks: drover_metrics::gauge_vec(
        "drover_agent_checks",
        "Health checks this node runs, by status.",
        &["status"],
    ),
    cpu: drover_metrics::float_counter_vec(
        "drover_agent_allocation_cpu_seconds_total",
        "CPU time an allocation's tasks used (its cgroup's).",
        &ALLOC_LABELS,
    ),
    memory: drover_metrics::gauge_vec(
        "drover_agent_allocation_memory_bytes",
        "Memory an allocation's cgroup is charged now (page cache included).",
        &ALLOC_LABELS,
    ),
    live: Mutex::new(Vec::new()),
    ooms_seen: Mutex::new(BTreeSet::new()),
    node_dns: Mutex::new(None),
});

/// Registers the agent's metrics; the sampler returned reads the cgroups
/// below `cgroup_root` (`/sys/fs/cgroup`) and `cgroup_parent` at scrape
/// time and is to be added to the exporter.
pub fn register(
    registry: &Registry,
    cgroup_root: PathBuf,
    cgroup_parent: PathBuf,
) -> Result<AgentSampler, MetricsError> {
    let m = &*METRICS;
    drover_metrics::register(registry, crate::counters::RESTARTS.clone())?;
    drover_metrics::register(registry, m.oom_kills.clone())?;
    drover_metrics::register(registry, crate::counters::START_SECONDS.clone())?;
    drover_metrics::register(registry, m.allocations.clone())?;
    drover_metrics::register(registry, m.tasks.clone())?;
    drover_metrics::register(registry, m.checks.clone())?;
    drover_metrics::register(registry, m.cpu.clone())?;
    drover_metrics::register(registry, m.memory.clone())?;
    Ok(AgentSampler {
        cgroup_root,
        cgroup_parent,
    })
}

/// The node DNS server answers from `index` (relayed records, no watch).
pub(crate) fn node_dns(index: drover_dns::SharedIndex) {
    let sampler = drover_dns::metrics::IndexSampler::new("node", index, None);
    *lock(&METRICS.node_dns) = Some(sampler);
}

/// Sets the gauges of allocations, tasks and checks from what the agent
/// holds now, and counts the OOM kills not counted yet.
pub(crate) fn observe(allocs: &Allocs, checks: &Checks) {
    let m = &*METRICS;
    let (mut by_status, mut by_task, mut by_check) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut live = Vec::new();
    let mut ends = BTreeSet::new();
    for t in allocs.tracked() {
        let report = t.report();
        *by_status
            .entry(report.status.as_str().to_string())
            .or_insert(0) += 1;
        for task in &report.tasks {
            *by_task.entry(task.status.as_str().to_string()).or_insert(0) += 1;
        }
        let alloc = &t.assignment.alloc;
        for c in checks.states(&alloc.id) {
            *by_check.entry(c.status.as_str().to_string()).or_insert(0) += 1;
        }
        if !report.status.is_terminal() {
            live.push([alloc.id.clone(), alloc.job.clone(), alloc.group.clone()]);
        }
        for (name, track) in &t.tasks {
            if let TaskState::Exited {
                oom_killed: true,
                finished_unix_ms,
                ..
            } = &track.state
            {
                ends.insert((alloc.id.clone(), name.clone(), *finished_unix_ms));
            }
        }
    }
    drover_metrics::set_counts(
        &m.allocations,
        AllocStatus::ALL.iter().map(|s| s.as_str()),
        &by_status,
    );
    drover_metrics::set_counts(
        &m.tasks,
        TaskStatus::ALL.iter().map(|s| s.as_str()),
        &by_task,
    );
    drover_metrics::set_counts(
        &m.checks,
        CheckStatus::ALL.iter().map(|s| s.as_str()),
        &by_check,
    );
    *lock(&m.live) = live;
    let mut seen = lock(&m.ooms_seen);
    let new = ends.difference(&seen).count();
    m.oom_kills.inc_by(new as u64);
    // Only ends still held are kept: the set stays as small as the node.
    *seen = ends;
}

/// Reads each live allocation's cgroup usage when Prometheus scrapes.
pub struct AgentSampler {
    cgroup_root: PathBuf,
    cgroup_parent: PathBuf,
}

#[async_trait::async_trait]
impl Sampler for AgentSampler {
    async fn sample(&self) {
        let m = &*METRICS;
        let live = lock(&m.live).clone();
        m.cpu.reset();
        m.memory.reset();
        if !live.is_empty() {
            match crate::cgroup::detect(&self.cgroup_root) {
                Ok(cgroups) => {
                    for labels in &live {
                        let path = self.cgroup_parent.join(&labels[0]);
                        let labels = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
                        match cgroups.usage(&path) {
                            Ok(u) => {
                                m.cpu.with_label_values(&labels).inc_by(u.cpu_seconds);
                                let bytes = i64::try_from(u.memory_bytes).unwrap_or(i64::MAX);
                                m.memory.with_label_values(&labels).set(bytes);
                            }
                            Err(error) => {
                                tracing::debug!(alloc_id = labels[0], %error, "metrics: no cgroup usage")
                            }
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "metrics: no cgroups to read"),
            }
        }
        let dns = lock(&m.node_dns).clone();
        if let Some(s) = dns {
            s.sample().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
