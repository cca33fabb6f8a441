//! The job model: validated domain types, their limits, and the conversion
//! back to the wire.
//!
//! A submission arrives as a protobuf [`pb::Job`] from any gRPC client; the
//! scheduler trusts nothing in it. [`JobSpec::try_from`] (in `validate`)
//! checks every field and reports *all* problems at once, each prefixed by
//! its path (`group "main" task "app": resources.memory_mb must be > 0`), so
//! a user fixes a file in one round trip.
//!
//! It lives in the shared model (moved from the scheduler) and is
//! re-exported as `drover_scheduler::job`, the path the CLI and the tests
//! use.
//!
//! By level: the job here, its groups in `group` (their reschedule policy
//! in `reschedule`), their services and
//! health checks in `service`, their tasks (with their
//! rootfs, volumes, logs and resources) in `task`; validation in
//! `validate`, split the same way.

pub use crate::wire::JobKind;
use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

mod constraint;
mod disconnect;
mod group;
mod periodic;
mod reschedule;
mod service;
mod spread;
mod target;
mod task;
#[cfg(test)]
mod tests;
mod update;
mod validate;
mod version;

pub use constraint::{
    Affinity, AffinityFields, Constraint, ConstraintError, ConstraintFields, Operator, Rule, Test,
    MAX_AFFINITY_WEIGHT, MAX_CONSTRAINTS, MAX_CONSTRAINT_VALUE, MAX_DISTINCT_PER_VALUE,
    MAX_REGEX_SIZE,
};
pub use disconnect::{
    DisconnectPolicy, MAX_DISCONNECT_STOP_AFTER_MS, MIN_DISCONNECT_STOP_AFTER_MS,
};
pub use group::{GroupSpec, RestartPolicy, MAX_COUNT, MAX_RESTART_ATTEMPTS, MAX_RESTART_DELAY_MS};
pub use periodic::{
    check_job_name, child_name, parent_of, PeriodicSpec, Schedule, ScheduleError, CHILD_INFIX,
    DEFAULT_TIME_ZONE, FIRE_HORIZON_SECS, INTERVAL_SAMPLES, MAX_CRON_LEN, MIN_INTERVAL_SECS,
};
pub use reschedule::{
    ReschedulePolicy, MAX_RESCHEDULE_ATTEMPTS, MAX_RESCHEDULE_DELAY_MS, MAX_RESCHEDULE_INTERVAL_MS,
    MIN_RESCHEDULE_DELAY_MS,
};
pub use service::{
    CheckSpec, ServiceSpec, MAX_CHECKS, MAX_CHECK_INTERVAL_MS, MAX_CHECK_THRESHOLD, MAX_SERVICES,
    MAX_TAGS, MIN_CHECK_INTERVAL_MS, MIN_CHECK_TIMEOUT_MS,
};
pub use spread::{
    Algorithm, SpreadSpec, SpreadTarget, DEFAULT_SPREAD_WEIGHT, MAX_SPREADS, MAX_SPREAD_TARGETS,
    MAX_SPREAD_VALUE, MAX_SPREAD_WEIGHT,
};
pub use target::{
    check_meta, check_property_name, Target, TargetError, MAX_META_VALUE, MAX_TARGET_NAME,
};
pub use task::{
    LogSpec, Resources, RootfsSpec, SeccompMode, TaskSpec, VolumeSpec, MAX_ARGS, MAX_CPU_MILLIS,
    MAX_KILL_TIMEOUT_MS, MAX_LOG_FILES, MAX_LOG_SIZE_MB, MAX_MEMORY_MB, MAX_TMPFS_MB,
    RESERVED_VOLUME_TARGETS,
};
pub use update::{
    UpdateSpec, DEFAULT_HEALTHY_DEADLINE_MS, DEFAULT_MAX_PARALLEL, DEFAULT_MIN_HEALTHY_TIME_MS,
    DEFAULT_PROGRESS_DEADLINE_MS, MAX_UPDATE_DURATION_MS,
};
pub use version::{Version, VersionReq, MAX_VERSION_CLAUSES, MAX_VERSION_PARTS};

/// A validated job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// DNS label naming the job.
    pub name: String,
    /// Service, batch or system.
    pub kind: JobKind,
    /// At least one group, names unique.
    pub groups: Vec<GroupSpec>,
    /// Placement rules of every group's allocations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Placement preferences of every group's allocations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinities: Vec<Affinity>,
    /// Batch jobs only: launch a child per tick of this schedule instead
    /// of placing the job itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic: Option<PeriodicSpec>,
    /// How nodes are scored; `None` means the scheduler's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// Spreads applied to every group (before the group's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spreads: Vec<SpreadSpec>,
}

impl JobSpec {
    /// The group named `name`, if any.
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// A submission that failed validation: every problem, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job: {}", .problems.join("; "))]
pub struct InvalidJob {
    /// One entry per problem, e.g. `group "main": count must be >= 1, got 0`.
    pub problems: Vec<String>,
}

/// Checks that `s` is a DNS label as Drover uses them in names: 1 to 63
/// lowercase ASCII letters, digits or '-', not starting or ending with '-'.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "{s:?} is {} characters, at most 63 allowed",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{s:?} contains {c:?}; only lowercase letters, digits and '-' are allowed (it becomes a DNS name)"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("{s:?} must start and end with a letter or digit"));
    }
    Ok(())
}

impl From<&JobSpec> for pb::Job {
    fn from(j: &JobSpec) -> pb::Job {
        pb::Job {
            name: j.name.clone(),
            kind: j.kind.as_str().to_string(),
            groups: j.groups.iter().map(pb::Group::from).collect(),
            constraints: j.constraints.iter().map(pb::Constraint::from).collect(),
            affinities: j.affinities.iter().map(pb::Affinity::from).collect(),
            periodic: j.periodic.as_ref().map(|p| pb::Periodic {
                cron: p.cron.clone(),
                time_zone: p.time_zone.clone(),
                prohibit_overlap: p.prohibit_overlap,
            }),
            algorithm: j
                .algorithm
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            spreads: j.spreads.iter().map(pb::Spread::from).collect(),
        }
    }
}
