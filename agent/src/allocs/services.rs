//! What the health checks ([`crate::checks`]) need to know of the
//! allocations: which have checks, where they run, and whether they may
//! run now. Derived here, where the allocations' tasks and networks are
//! known; the types live here so that the checks depend on the
//! allocations and not the other way round.

use std::path::PathBuf;

use drover_model::job::ServiceSpec;

use super::state::Tracked;
use super::status;
use crate::assignment::{AllocStatus, DesiredState, NetworkMode};
use crate::runtime::TaskState;

/// Where an allocation's checks run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The allocation.
    pub alloc_id: String,
    /// Its network namespace (a bind mount the node network keeps), in
    /// which tcp and http checks connect to `127.0.0.1`; `None` for an
    /// allocation on the host's network, which is the agent's own.
    pub netns: Option<PathBuf>,
}

/// One allocation whose services have checks, as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocChecks {
    /// Where its checks run.
    pub target: Target,
    /// Its services (with their checks), in job order.
    pub services: Vec<ServiceSpec>,
    /// All its tasks run: its checks may start.
    pub ready: bool,
    /// It runs and is not being stopped: started checks go on.
    pub live: bool,
}

/// The [`AllocChecks`] of `a` (id `id`), or `None` when its services have
/// no check. Ready once all its tasks run, live while it runs and no stop
/// was asked for. One in a network namespace of its own is neither while
/// that namespace is not set up: its checks must never probe the agent's
/// namespace instead.
pub fn alloc_checks(id: &str, a: &Tracked) -> Option<AllocChecks> {
    let services = &a.assignment.group.services;
    if services.iter().all(|s| s.checks.is_empty()) {
        return None;
    }
    let netns = match a.assignment.group.network {
        NetworkMode::Host => Some(None),
        _ => a.net.as_ref().and_then(|n| n.task.netns.clone()).map(Some),
    };
    let reachable = netns.is_some();
    let ready = reachable
        && !a.tasks.is_empty()
        && a.tasks
            .values()
            .all(|t| matches!(t.state, TaskState::Running { .. }));
    let live = reachable
        && !a.stopping
        && a.assignment.alloc.desired == DesiredState::Run
        && status::derive(&a.tasks, a.stopping) == AllocStatus::Running;
    Some(AllocChecks {
        target: Target {
            alloc_id: id.to_owned(),
            netns: netns.flatten(),
        },
        services: services.clone(),
        ready,
        live,
    })
}
