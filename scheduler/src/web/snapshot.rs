//! What the status page shows, read from the store in one pass: the
//! records as the API lists them, with what the page computes from them
//! (each node's use, each service's healthy count, each job's latest
//! deployment) and the recent events.

use std::collections::BTreeMap;

use drover_store::{Kind, Store, StoreError};

use crate::audit::{AuditEntry, AuditLimits, AuditLog};
use crate::deploy::Deployment;
use crate::discovery::desired::{service_counts, ServiceCount};
use crate::discovery::Discovery;
use crate::job::Resources;
use crate::state::{AllocRecord, JobRecord, NodeRecord};

/// How many recent events the page shows.
pub const RECENT_EVENTS: usize = 25;

/// At most this many allocations are listed (live ones first); the page
/// says how many more there are.
pub const MAX_ALLOCS: usize = 500;

/// One node with what its live allocations claim.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node's record.
    pub node: NodeRecord,
    /// Resources its live allocations reserve.
    pub used: Resources,
    /// Its live allocations.
    pub allocations: u32,
}

/// One event of the cluster, newest first on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When, ms since the Unix epoch.
    pub time_unix_ms: i64,
    /// Where it comes from: `allocation` or `audit`.
    pub source: &'static str,
    /// Who did it (`ada (admin)`), when known.
    pub actor: String,
    /// What happened (`job run`).
    pub action: String,
    /// What it happened to (`job web`).
    pub target: String,
    /// How it ended (`ok`, or the refusal), or for an allocation's event
    /// what happened, in words.
    pub outcome: String,
}

impl From<crate::events::Event> for Event {
    fn from(e: crate::events::Event) -> Event {
        let mut target = e.alloc_name;
        if target.is_empty() {
            target = e.alloc_id;
        }
        if !e.task.is_empty() {
            target = format!("{target} task {}", e.task);
        }
        Event {
            time_unix_ms: e.time_unix_ms,
            source: "allocation",
            actor: if e.node_id.is_empty() {
                String::new()
            } else {
                format!("node {}", e.node_id)
            },
            action: e.kind,
            target,
            outcome: e.message,
        }
    }
}

impl From<AuditEntry> for Event {
    fn from(e: AuditEntry) -> Event {
        let actor = if e.role.is_empty() {
            e.caller
        } else {
            format!("{} ({})", e.caller, e.role)
        };
        Event {
            time_unix_ms: e.time_unix_ms,
            source: "audit",
            actor,
            action: if e.action.is_empty() {
                e.method
            } else {
                e.action
            },
            target: e.target,
            outcome: e.outcome,
        }
    }
}

/// Everything the page shows, as of one read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Nodes, by id.
    pub nodes: Vec<NodeView>,
    /// Jobs, by name.
    pub jobs: Vec<JobRecord>,
    /// Allocations: live ones first, then by job, group and index; at
    /// most [`MAX_ALLOCS`].
    pub allocs: Vec<AllocRecord>,
    /// Allocations left off the list.
    pub allocs_left_off: usize,
    /// Per service of every running job: healthy instances of those that
    /// should run.
    pub services: Vec<(String, ServiceCount)>,
    /// The latest deployment of each job that has one, by job.
    pub deployments: Vec<Deployment>,
    /// Recent events, newest first: what happened to allocations, and the
    /// audit trail's entries when the caller may read them.
    pub events: Vec<Event>,
    /// Whether the audit trail's entries are among them (only admins read
    /// the audit trail).
    pub audit_shown: bool,
}

impl Snapshot {
    /// Reads the state from `store` and computes the views (service
    /// health as `discovery` registers it), with the recent events (the
    /// audit trail's among them when `audit`).
    pub async fn load(
        store: &Store,
        discovery: &Discovery,
        audit: bool,
    ) -> Result<Snapshot, StoreError> {
        let nodes: Vec<NodeRecord> = values(store.list(Kind::Node).await?.items);
        let jobs: Vec<JobRecord> = values(store.list(Kind::Job).await?.items);
        let allocs: Vec<AllocRecord> = values(store.list(Kind::Alloc).await?.items);
        let deployments: Vec<Deployment> = values(store.list(Kind::Deployment).await?.items);
        let events = recent_events(store, RECENT_EVENTS, audit).await?;
        Ok(Snapshot::build(
            discovery,
            nodes,
            jobs,
            allocs,
            deployments,
            events,
            audit,
        ))
    }

    /// The views of the records: pure, for tests.
    pub fn build(
        discovery: &Discovery,
        nodes: Vec<NodeRecord>,
        jobs: Vec<JobRecord>,
        mut allocs: Vec<AllocRecord>,
        deployments: Vec<Deployment>,
        events: Vec<Event>,
        audit_shown: bool,
    ) -> Snapshot {
        let mut usage: BTreeMap<&str, (Resources, u32)> = BTreeMap::new();
        for a in allocs.iter().filter(|a| a.is_live()) {
            let e = usage.entry(a.node_id.as_str()).or_default();
            e.0 = e.0.plus(a.resources);
            e.1 += 1;
        }
        let node_views = nodes
            .iter()
            .map(|n| {
                let (used, allocations) = usage.get(n.id.as_str()).copied().unwrap_or_default();
                NodeView {
                    node: n.clone(),
                    used,
                    allocations,
                }
            })
            .collect();
        let services = jobs
            .iter()
            .filter(|j| j.status == crate::state::JobStatus::Running)
            .flat_map(|j| {
                service_counts(discovery, j, &allocs, &nodes)
                    .into_iter()
                    .map(|c| (j.spec.name.clone(), c))
            })
            .collect();
        let mut latest: BTreeMap<String, Deployment> = BTreeMap::new();
        for d in deployments {
            match latest.get(&d.job) {
                Some(have) if have.version >= d.version => {}
                _ => {
                    latest.insert(d.job.clone(), d);
                }
            }
        }
        allocs.sort_by(|a, b| {
            (!a.is_live(), &a.job, &a.group, a.index, a.created_unix_ms).cmp(&(
                !b.is_live(),
                &b.job,
                &b.group,
                b.index,
                b.created_unix_ms,
            ))
        });
        let allocs_left_off = allocs.len().saturating_sub(MAX_ALLOCS);
        allocs.truncate(MAX_ALLOCS);
        Snapshot {
            nodes: node_views,
            jobs,
            allocs,
            allocs_left_off,
            services,
            deployments: latest.into_values().collect(),
            events,
            audit_shown,
        }
    }
}

/// The newest `limit` events of the cluster, newest first: what happened
/// to allocations (placed, started, exited, restarted, rescheduled, see
/// [`crate::events`]) and, with `audit`, the audit trail's entries (who
/// ran, stopped, reverted or exec'd what).
pub async fn recent_events(
    store: &Store,
    limit: usize,
    audit: bool,
) -> Result<Vec<Event>, StoreError> {
    let mut events: Vec<Event> = crate::events::recent_events(store, limit)
        .await?
        .into_iter()
        .map(Event::from)
        .collect();
    if audit {
        // The limits only matter for writes (pruning); this log only reads.
        let log = AuditLog::new(store.clone(), AuditLimits::default());
        events.extend(log.list(0, limit).await?.into_iter().map(Event::from));
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.time_unix_ms));
    events.truncate(limit);
    Ok(events)
}

fn values<T>(items: Vec<drover_store::Versioned<T>>) -> Vec<T> {
    items.into_iter().map(|v| v.value).collect()
}
