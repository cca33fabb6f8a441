//! Records the scheduler keeps in the store, and their wire forms.
//!
//! These are stored as JSON under `/drover/{jobs,allocs,nodes,subnets}/` (see
//! `drover_store::client`). They are the scheduler's own types; protobuf
//! is produced from them only at the gRPC edge. The allocation status and
//! desired state are the model's (`drover_model::wire`, shared with the
//! agent); a task's state is kept as the string its node reported.

use std::collections::BTreeMap;

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

pub use drover_model::{AllocStatus, DesiredState};

use crate::job::{JobSpec, Resources, Target};
use drover_model::Ipv4Net;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Its allocations are wanted.
    Running,
    /// Stopped by a user; allocations are being or have been stopped.
    Stopped,
    /// A batch job whose every allocation finished successfully.
    Complete,
    /// A batch job whose allocations all finished, at least one failing.
    Failed,
}

impl JobStatus {
    /// Name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Stopped => "stopped",
            JobStatus::Complete => "complete",
            JobStatus::Failed => "failed",
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The validated spec.
    pub spec: JobSpec,
    /// Lifecycle.
    pub status: JobStatus,
    /// Bumped on every accepted submission that changes the spec.
    pub version: u64,
    /// When the current version was submitted.
    pub submitted_unix_ms: i64,
    /// Instances no node could take at the last plan, per group: what
    /// waits for capacity and why (see [`crate::queue`]). Empty once all
    /// are placed, and when the job is not running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingGroup>,
}

/// Instances of one group waiting for a node able to take them. One per
/// group, however many instances wait, so a job's record stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingGroup {
    /// Group name.
    pub group: String,
    /// Instances of the group not placed.
    pub count: u32,
    /// Why the last plan placed them nowhere (bounded in length).
    pub reason: String,
    /// Since when the group has had instances waiting without a break.
    pub since_unix_ms: i64,
}

impl From<&PendingGroup> for pb::PendingPlacement {
    fn from(p: &PendingGroup) -> pb::PendingPlacement {
        pb::PendingPlacement {
            group: p.group.clone(),
            count: p.count,
            reason: p.reason.clone(),
            since_unix_ms: p.since_unix_ms,
        }
    }
}

/// A task's state within an allocation, as reported by its node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateRecord {
    /// Task name.
    pub name: String,
    /// `pending`, `running`, `exited` or `failed`.
    pub state: String,
    /// Host PID of the task, 0 when not running.
    pub pid: i32,
    /// Exit code once exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// Human-readable detail (e.g. why it failed to start).
    pub message: String,
    /// Restarts so far.
    pub restarts: u32,
    /// For an image pulled from a registry: the pinned reference the node
    /// resolved (`reg/web@sha256:...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_digest: String,
}

/// An instance of a group bound to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocRecord {
    /// Unique id (also its store key).
    pub id: String,
    /// `<job>.<group>[<index>]`, for people.
    pub name: String,
    /// Job name.
    pub job: String,
    /// Group name.
    pub group: String,
    /// Instance index within the group.
    pub index: u32,
    /// Node it is placed on.
    pub node_id: String,
    /// What the scheduler wants.
    pub desired: DesiredState,
    /// What the node reports.
    pub status: AllocStatus,
    /// Per-task detail.
    pub tasks: Vec<TaskStateRecord>,
    /// Job version it was placed for.
    pub job_version: u64,
    /// Reserved on the node while not terminal.
    pub resources: Resources,
    /// Creation time.
    pub created_unix_ms: i64,
    /// Last change.
    pub modified_unix_ms: i64,
    /// The allocation's address on its node, as the agent reports it
    /// (empty until its network is up, and for host networking).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Its services' health checks as its node last reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<drover_model::CheckState>,
    /// Rescheduling: when it failed, what it replaces, what replaced it.
    #[serde(default, skip_serializing_if = "AllocReschedule::is_empty")]
    pub reschedule: AllocReschedule,
}

/// An allocation's part in rescheduling ([`crate::reschedule`]), kept on
/// its record. Empty for
/// most allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocReschedule {
    /// When it last became failed, as its node's report arrived (ms since
    /// the epoch): where its delay counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_unix_ms: Option<i64>,
    /// On a replacement: the failed allocation it replaces and the run of
    /// attempts it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Box<Lineage>>,
    /// On a failed allocation that was replaced: the replacement's id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replaced_by: String,
    /// While it runs with a health check critical: since when, without a
    /// break (ms since the epoch, as its node's report arrived). Past the
    /// group's healthy deadline it is unhealthy and replaced like a failed
    /// one ([`crate::reschedule::unhealthy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_unix_ms: Option<i64>,
}

impl AllocReschedule {
    /// Whether there is nothing to keep (the stored JSON leaves it out).
    pub fn is_empty(&self) -> bool {
        self == &AllocReschedule::default()
    }
}

/// Where a replacement comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Id of the failed allocation it replaces.
    pub previous: String,
    /// Its attempt number: 1 for the first replacement of the instance.
    pub attempt: u32,
    /// When it became due: the failure plus `delay_ms`.
    pub eligible_unix_ms: i64,
    /// The delay it waited, ms; the next one doubles it.
    pub delay_ms: u64,
    /// Due times of the attempts of this run within the policy's interval,
    /// oldest first, its own last; empty for unlimited policies. Bounded by
    /// the policy's `attempts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_unix_ms: Vec<i64>,
    /// The allocation it replaces was unhealthy (running, a check critical
    /// past its deadline), not failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unhealthy: bool,
}

impl AllocRecord {
    /// Whether it still holds resources on its node.
    pub fn is_live(&self) -> bool {
        !self.status.is_terminal()
    }
}

/// Job `job`'s allocations among `allocs`, by group, index and age.
pub fn job_allocs(allocs: &[AllocRecord], job: &str) -> Vec<AllocRecord> {
    let mut v: Vec<AllocRecord> = allocs.iter().filter(|a| a.job == job).cloned().collect();
    v.sort_by(|a, b| {
        (&a.group, a.index, a.created_unix_ms).cmp(&(&b.group, b.index, b.created_unix_ms))
    });
    v
}

/// Whether a node's agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Agent connected and heartbeating.
    Ready,
    /// Agent connected again after the node was down, still running
    /// copies the cluster replaced: not placeable and out of service
    /// discovery until it reports them stopped (see
    /// [`crate::returning`]). Named as Nomad's.
    Initializing,
    /// Agent silent past its grace period.
    Down,
}

impl NodeStatus {
    /// Name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Initializing => "initializing",
            NodeStatus::Down => "down",
        }
    }
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Stable id, chosen by the agent and kept in its data dir.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Address other nodes reach it at.
    pub address: String,
    /// Connected or not.
    pub status: NodeStatus,
    /// No new allocations while draining.
    pub draining: bool,
    /// Capacity.
    pub resources: Resources,
    /// Attributes the agent found (`arch`, `kernel.version`, ...), for
    /// constraints on `${attr.NAME}`.
    pub attributes: BTreeMap<String, String>,
    /// Operator metadata (`drover agent --meta rack=r1`), for constraints on
    /// `${meta.NAME}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// When its agent last registered (opened its stream to a scheduler),
    /// in ms since the Unix epoch. Heartbeats do not move it: they are
    /// not written to the store, and the node's liveness is its `status`.
    pub last_seen_unix_ms: i64,
    /// Agent build.
    pub agent_version: String,
    /// Task subnet cut from the cluster CIDR at first registration and kept
    /// for good; `None` only in records written before subnets existed.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
}

/// Who holds a node subnet, stored under `subnets/<cidr>`. Created in the
/// same transaction as the node record that names the subnet, and only if
/// absent, so two schedulers can never hand one subnet to two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetClaim {
    /// The node holding it.
    pub node_id: String,
}

impl From<&AllocRecord> for pb::Allocation {
    fn from(a: &AllocRecord) -> pb::Allocation {
        pb::Allocation {
            id: a.id.clone(),
            name: a.name.clone(),
            job: a.job.clone(),
            group: a.group.clone(),
            index: a.index,
            node_id: a.node_id.clone(),
            desired: a.desired.as_str().into(),
            status: a.status.as_str().into(),
            tasks: a.tasks.iter().map(pb::TaskState::from).collect(),
            job_version: a.job_version,
            created_unix_ms: a.created_unix_ms,
            modified_unix_ms: a.modified_unix_ms,
            ip: a.ip.clone(),
            checks: a.checks.iter().map(pb::CheckState::from).collect(),
            ..lineage_pb(&a.reschedule)
        }
    }
}

/// The rescheduling fields a record gives (lineage, replacement, why it
/// is desired stop), the rest defaulted: spread into the wire form.
fn lineage_pb(r: &AllocReschedule) -> pb::Allocation {
    let mut out = pb::Allocation {
        replaced_by: r.replaced_by.clone(),
        ..Default::default()
    };
    if !r.replaced_by.is_empty() {
        let why = if r.critical_unix_ms.is_some() {
            "unhealthy"
        } else {
            "failed"
        };
        out.desired_reason = format!("rescheduled: {why}, replaced by {}", r.replaced_by);
    }
    if let Some(l) = &r.lineage {
        out.previous_alloc = l.previous.clone();
        out.reschedule_attempt = l.attempt;
        out.reschedule_eligible_unix_ms = l.eligible_unix_ms;
    }
    out
}

/// A task's state as the other form: both carry the same fields, the
/// wire form as reported by the node, the record as stored.
macro_rules! copy_task_state {
    ($t:expr, $($to:ident)::+) => {
        $($to)::+ {
            name: $t.name.clone(),
            state: $t.state.clone(),
            pid: $t.pid,
            exit_code: $t.exit_code,
            signal: $t.signal,
            message: $t.message.clone(),
            restarts: $t.restarts,
            image_digest: $t.image_digest.clone(),
        }
    };
}

impl From<&TaskStateRecord> for pb::TaskState {
    fn from(t: &TaskStateRecord) -> pb::TaskState {
        copy_task_state!(t, pb::TaskState)
    }
}

impl From<&pb::TaskState> for TaskStateRecord {
    fn from(t: &pb::TaskState) -> TaskStateRecord {
        copy_task_state!(t, TaskStateRecord)
    }
}

impl NodeRecord {
    /// The value of `target` on this node, if it has one.
    pub fn property(&self, target: &Target) -> Option<&str> {
        match target {
            Target::Attr(name) => self.attributes.get(name).map(String::as_str),
            Target::Meta(name) => self.meta.get(name).map(String::as_str),
            Target::NodeId => Some(&self.id),
        }
    }

    /// Wire form, with the usage the caller computed from allocations.
    pub fn to_pb(&self, used: Resources, allocations: u32) -> pb::Node {
        pb::Node {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            address: self.address.clone(),
            status: self.status.as_str().into(),
            draining: self.draining,
            cpu_millis: i64::try_from(self.resources.cpu_millis).unwrap_or(i64::MAX),
            memory_mb: i64::try_from(self.resources.memory_mb).unwrap_or(i64::MAX),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            meta: self
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            last_seen_unix_ms: self.last_seen_unix_ms,
            agent_version: self.agent_version.clone(),
            used_cpu_millis: i64::try_from(used.cpu_millis).unwrap_or(i64::MAX),
            used_memory_mb: i64::try_from(used.memory_mb).unwrap_or(i64::MAX),
            allocations,
            subnet: self.subnet.map(|s| s.to_string()).unwrap_or_default(),
        }
    }
}

impl JobRecord {
    /// Wire form.
    pub fn to_pb(&self) -> pb::JobInfo {
        pb::JobInfo {
            job: Some(pb::Job::from(&self.spec)),
            status: self.status.as_str().into(),
            version: self.version,
            submitted_unix_ms: self.submitted_unix_ms,
            parent: crate::job::parent_of(&self.spec.name)
                .unwrap_or_default()
                .to_string(),
            pending: self.pending.iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::testkit::{alloc, job, node};

    /// The JSON stored in etcd keeps its form: the enums shared with the
    /// agent serialize as their wire names, the subnet as its CIDR text.
    #[test]
    fn stored_json_keeps_its_form() {
        let mut a = alloc("a1", 0, "n1", AllocStatus::Lost);
        a.desired = DesiredState::Stop;
        let v = serde_json::to_value(&a).expect("alloc json");
        assert_eq!(
            (&v["desired"], &v["status"]),
            (&"stop".into(), &"lost".into())
        );
        let back: AllocRecord = serde_json::from_value(v).expect("alloc back");
        assert_eq!(back, a);
        let j = JobRecord {
            spec: job("batch", 1, "true"),
            status: JobStatus::Running,
            version: 1,
            submitted_unix_ms: 0,
            pending: Vec::new(),
        };
        let v = serde_json::to_value(&j).expect("job json");
        assert_eq!(v["spec"]["kind"], "batch");
        assert!(
            v.get("pending").is_none(),
            "nothing pending, nothing stored"
        );
        let mut n = node("n1", "192.0.2.1", NodeStatus::Ready);
        n.subnet = Some("10.89.3.0/24".parse().expect("cidr"));
        let v = serde_json::to_value(&n).expect("node json");
        assert_eq!(v["subnet"], "10.89.3.0/24");
    }
}
