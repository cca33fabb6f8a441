//! Health checks of the allocations' services, run by the agent.
//!
//! [`Checks`] holds, for every allocation whose services declare checks,
//! one state per check ([`CheckState`], in service then check order) and,
//! while the allocation runs, one async loop per check ([`runner`]). The
//! session tells it what the node holds with [`Checks::sync`] after every
//! poll of the allocations, and reads the states into each report it
//! sends ([`Checks::states`]). When a check's *status* changes, the loop
//! marks its allocation in [`Changes`] and wakes the session, which sends
//! that allocation's report at once; output and time ride along with the
//! next report.
//!
//! - [`state`]: the verdict from run results (pure);
//! - [`runner`]: one check's loop: jitter, interval, timeout, the node-wide
//!   bound on probes running at once;
//! - [`probe`]: the node's [`Prober`]: tcp and http from inside the
//!   allocation's network namespace, exec through the `drover exec`
//!   helper ([`command`]);
//! - [`http`]: the request and the status line (pure).
//!
//! Checks start once all of an allocation's tasks run and stop when it is
//! stopped, stops running or is gone; a check that is not running reports
//! `pending`. After an agent restart, re-adopted allocations' checks start
//! again from `pending`.

mod command;
pub mod http;
pub mod probe;
pub mod runner;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use drover_model::job::{CheckSpec, ServiceSpec};
use drover_model::{CheckState, CheckStatus};
use futures::future::BoxFuture;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use crate::allocs::services::{AllocChecks, Target};
pub use probe::NodeProber;

/// Probes running at once on a node, all allocations together.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// It passed.
    pub passed: bool,
    /// What it printed or why it failed (truncated when stored).
    pub output: String,
}

impl Outcome {
    /// A run that passed.
    pub fn pass(output: impl Into<String>) -> Outcome {
        Outcome {
            passed: true,
            output: output.into(),
        }
    }

    /// A run that failed.
    pub fn fail(output: impl Into<String>) -> Outcome {
        Outcome {
            passed: false,
            output: output.into(),
        }
    }
}

/// Runs one check once: the side effect behind [`runner`]. The future
/// may be dropped at any point (timeout, stop) and must then leave
/// nothing running.
pub trait Prober: Send + Sync + 'static {
    /// One run of `check` against `target`.
    fn probe(&self, target: &Target, check: &CheckSpec) -> BoxFuture<'static, Outcome>;
}

/// The allocations whose check status changed since the session last
/// looked, and the wake-up that tells it: bounded (one entry per
/// allocation) and never losing a wake-up (a [`Notify`] permit is kept
/// until the session waits again).
#[derive(Debug, Default)]
pub struct Changes {
    dirty: Mutex<BTreeSet<String>>,
    notify: Notify,
}

impl Changes {
    /// Notes that a check status of `alloc_id` changed.
    pub fn mark(&self, alloc_id: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(alloc_id.to_owned());
        self.notify.notify_one();
    }

    /// Waits until [`Changes::mark`] was called since the last wait.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// The allocations marked since the last call.
    pub fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One allocation's checks.
struct Entry {
    want: AllocChecks,
    states: Arc<Mutex<Vec<CheckState>>>,
    /// Cancels its loops when dropped; `None` while they do not run.
    running: Option<DropGuard>,
}

/// What every check loop shares.
struct Spawn {
    prober: Arc<dyn Prober>,
    limit: Arc<Semaphore>,
    changes: Arc<Changes>,
}

/// The health checks of the node's allocations.
pub struct Checks {
    spawn: Spawn,
    allocs: BTreeMap<String, Entry>,
}

impl Checks {
    /// Checks run by `prober`, at most [`DEFAULT_CONCURRENCY`] at once.
    pub fn new(prober: Arc<dyn Prober>) -> Checks {
        Checks::with_limit(prober, DEFAULT_CONCURRENCY)
    }

    /// Checks run by `prober`, at most `limit` (at least 1) at once.
    pub fn with_limit(prober: Arc<dyn Prober>, limit: usize) -> Checks {
        Checks {
            spawn: Spawn {
                prober,
                limit: Arc::new(Semaphore::new(limit.max(1))),
                changes: Arc::default(),
            },
            allocs: BTreeMap::new(),
        }
    }

    /// Where status changes are marked, for the session to wait on.
    pub fn changes(&self) -> Arc<Changes> {
        Arc::clone(&self.spawn.changes)
    }

    /// Converges on `list`, every allocation of the node with checks:
    /// starts the checks of those ready and live, stops those no longer
    /// live (their states go back to pending, a change that is marked),
    /// restarts those whose services or target changed, and forgets the
    /// allocations not listed. Must run inside the tokio runtime.
    pub fn sync(&mut self, list: Vec<AllocChecks>) {
        let listed: BTreeSet<&str> = list.iter().map(|a| a.target.alloc_id.as_str()).collect();
        self.allocs.retain(|id, _| listed.contains(id.as_str()));
        for want in list {
            let id = want.target.alloc_id.clone();
            let entry = self.allocs.entry(id.clone()).or_insert_with(|| Entry {
                states: Arc::new(Mutex::new(pending(&want.services))),
                want: want.clone(),
                running: None,
            });
            let changed = entry.want.services != want.services || entry.want.target != want.target;
            if entry.running.is_some() && (changed || !want.live) {
                tracing::info!(alloc_id = %id, live = want.live, "health checks stopped");
                entry.running = None;
            }
            if changed || entry.running.is_none() {
                let fresh = pending(&want.services);
                let before = std::mem::replace(&mut *lock(&entry.states), fresh.clone());
                let status = |v: &[CheckState]| v.iter().map(|c| c.status).collect::<Vec<_>>();
                if status(&before) != status(&fresh) {
                    self.spawn.changes.mark(&id);
                }
            }
            entry.want = want;
            if entry.running.is_none() && entry.want.ready && entry.want.live {
                entry.running = Some(start(&self.spawn, entry));
            }
        }
    }

    /// The states of `alloc_id`'s checks, in service then check order;
    /// empty for an allocation without checks.
    pub fn states(&self, alloc_id: &str) -> Vec<CheckState> {
        self.allocs
            .get(alloc_id)
            .map(|e| lock(&e.states).clone())
            .unwrap_or_default()
    }

    /// Whether `alloc_id`'s checks are running.
    pub fn is_running(&self, alloc_id: &str) -> bool {
        self.allocs
            .get(alloc_id)
            .is_some_and(|e| e.running.is_some())
    }
}

/// Spawns the loops of `entry`'s checks, writing into a fresh state list
/// (a stopped loop's late write lands in the old one).
fn start(with: &Spawn, entry: &mut Entry) -> DropGuard {
    let cancel = CancellationToken::new();
    entry.states = Arc::new(Mutex::new(pending(&entry.want.services)));
    let mut slot = 0;
    for service in &entry.want.services {
        for (index, check) in service.checks.iter().enumerate() {
            tokio::spawn(runner::run(runner::CheckRun {
                service: service.name.clone(),
                index,
                slot,
                spec: check.clone(),
                target: entry.want.target.clone(),
                states: Arc::clone(&entry.states),
                changes: Arc::clone(&with.changes),
                prober: Arc::clone(&with.prober),
                limit: Arc::clone(&with.limit),
                cancel: cancel.clone(),
            }));
            slot += 1;
        }
    }
    tracing::info!(alloc_id = %entry.want.target.alloc_id, checks = slot, "health checks started");
    cancel.drop_guard()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pending state for every check of `services`.
fn pending(services: &[ServiceSpec]) -> Vec<CheckState> {
    services
        .iter()
        .flat_map(|s| {
            s.checks.iter().enumerate().map(|(i, c)| CheckState {
                service: s.name.clone(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                kind: c.kind,
                status: CheckStatus::Pending,
                output: String::new(),
                last_unix_ms: 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
