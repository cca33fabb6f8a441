//! A validated group, its restart policy and limits, and its wire form.

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    Affinity, Constraint, DisconnectPolicy, JobKind, ReschedulePolicy, Resources, ServiceSpec,
    SpreadSpec, TaskSpec, UpdateSpec,
};

/// Upper bound on a group's `count`; more is almost surely a typo.
pub const MAX_COUNT: i64 = 10_000;
/// Upper bound on restart attempts per allocation.
pub const MAX_RESTART_ATTEMPTS: i64 = 1_000;
/// Upper bound on the delay between restarts (1 hour).
pub const MAX_RESTART_DELAY_MS: i64 = 3_600_000;

/// A validated group: `count` instances, each one allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// DNS label, unique within the job.
    pub name: String,
    /// Instances wanted (ignored for system jobs: one per eligible node).
    pub count: u32,
    /// At least one task, names unique.
    pub tasks: Vec<TaskSpec>,
    /// How the node restarts a failed task.
    pub restart: RestartPolicy,
    /// How its allocations are networked (a [`NetworkMode`](crate::wire::NetworkMode),
    /// kept as submitted so that the stored form stays): empty or
    /// `"bridge"` (own
    /// namespace, veth on the node bridge, an address from the node
    /// subnet), `"host"` (the node's network; only where the node's policy
    /// allows it, checked on the node) or `"none"` (only `lo`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Services its allocations offer, names unique within the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Placement rules of its allocations, besides the job's and its
    /// tasks'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Placement preferences of its allocations, besides the job's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinities: Vec<Affinity>,
    /// How its allocations that failed on their node are replaced; `None`
    /// never (system jobs, and jobs stored before rescheduling existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule: Option<ReschedulePolicy>,
    /// Spreads of its instances over node properties (the job's apply too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spreads: Vec<SpreadSpec>,
    /// How a change of its instances is rolled out; `None`: all at once,
    /// without a deployment (see [`UpdateSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// What a node cut off from its scheduler does with the group's
    /// allocations; `None`: they keep running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<DisconnectPolicy>,
}

impl GroupSpec {
    /// Resources one instance of the group reserves: the sum of its tasks.
    pub fn resources(&self) -> Resources {
        self.tasks
            .iter()
            .fold(Resources::default(), |acc, t| acc.plus(t.resources))
    }
}

/// How a node restarts a task that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Restarts allowed before the allocation is failed.
    pub attempts: u32,
    /// Delay before each restart, in milliseconds.
    pub delay_ms: u64,
}

impl RestartPolicy {
    /// The policy a group gets when its job file names none: services retry
    /// a few times with a short delay, batch jobs not at all.
    pub fn default_for(kind: JobKind) -> RestartPolicy {
        match kind {
            JobKind::Service | JobKind::System => RestartPolicy {
                attempts: 3,
                delay_ms: 1_000,
            },
            JobKind::Batch => RestartPolicy {
                attempts: 0,
                delay_ms: 0,
            },
        }
    }
}

impl From<&GroupSpec> for pb::Group {
    fn from(g: &GroupSpec) -> pb::Group {
        pb::Group {
            name: g.name.clone(),
            count: i64::from(g.count),
            tasks: g.tasks.iter().map(pb::Task::from).collect(),
            restart: Some(pb::RestartPolicy {
                attempts: i64::from(g.restart.attempts),
                delay_ms: i64::try_from(g.restart.delay_ms).unwrap_or(i64::MAX),
            }),
            network: g.network.clone(),
            services: g.services.iter().map(pb::Service::from).collect(),
            constraints: g.constraints.iter().map(pb::Constraint::from).collect(),
            affinities: g.affinities.iter().map(pb::Affinity::from).collect(),
            reschedule: g.reschedule.as_ref().map(pb::ReschedulePolicy::from),
            spreads: g.spreads.iter().map(pb::Spread::from).collect(),
            update: g.update.as_ref().map(pb::UpdateStrategy::from),
            disconnect: g.disconnect.as_ref().map(pb::DisconnectPolicy::from),
        }
    }
}
