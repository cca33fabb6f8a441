//! What the agent knows of the allocations it holds: the state that
//! [`super::plan`] reads and `executor` changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::assignment::{AllocReport, Assignment};
use crate::net::wiring::AllocNetwork;
use crate::runtime::TaskState;

use super::status;

/// One task of a tracked allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Its state as last observed.
    pub state: TaskState,
    /// How often it was restarted.
    pub restarts: u32,
    /// When a pending restart is due.
    pub restart_at: Option<Instant>,
    /// The pinned registry image it runs (`Some("")`: none); `None` until
    /// looked up once it started.
    pub image: Option<String>,
}

impl Track {
    /// A task seen in `state`, never restarted.
    pub fn new(state: TaskState) -> Track {
        Track {
            state,
            restarts: 0,
            restart_at: None,
            image: None,
        }
    }
}

/// One allocation the node holds.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The scheduler's latest word on it.
    pub assignment: Assignment,
    /// Task name -> tracking.
    pub tasks: BTreeMap<String, Track>,
    /// Last report sent up, to send only changes.
    pub reported: Option<AllocReport>,
    /// Its stop was asked for (and done, or being retried).
    pub stopping: bool,
    /// Its network, while set up.
    pub net: Option<AllocNetwork>,
    /// The address it had, reported even after its network is removed.
    pub ip: Option<Ipv4Addr>,
}

impl Tracked {
    /// Every task has ended and none waits for a restart.
    pub fn finished(&self) -> bool {
        status::finished(&self.tasks)
    }

    /// Its report now.
    pub fn report(&self) -> AllocReport {
        status::report(
            &self.assignment.alloc.id,
            &self.tasks,
            self.stopping,
            self.ip,
        )
    }

    /// Whether its last report is its current one.
    pub fn reported_as_is(&self) -> bool {
        self.reported.as_ref() == Some(&self.report())
    }

    /// Whether all of its tasks have ended.
    pub fn all_terminal(&self) -> bool {
        self.tasks.values().all(|t| t.state.is_terminal())
    }
}

/// The allocations this node holds, and the refused assignments it has
/// reported.
#[derive(Debug, Default)]
pub struct State {
    /// Allocation id -> what is known of it.
    pub allocs: BTreeMap<String, Tracked>,
    /// Refused assignments already reported failed (reported once per
    /// session while the scheduler keeps listing them).
    pub refused: BTreeSet<String>,
}

/// What is on disk, read before planning on new assignments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Allocation id -> its tasks with a directory (and spec) on disk.
    pub tasks: BTreeMap<String, Vec<String>>,
    /// Assigned allocations none of whose group's tasks has a directory:
    /// never started here, or finished and collected.
    pub no_dirs: BTreeSet<String>,
}
