//! A group's services and their health checks, and their wire form.

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::wire::{CheckKind, Protocol};

/// Upper bound on services per group.
pub const MAX_SERVICES: usize = 32;
/// Upper bound on checks per service.
pub const MAX_CHECKS: usize = 8;
/// Upper bound on tags per service.
pub const MAX_TAGS: usize = 16;
/// Shortest check interval: more often is load, not information.
pub const MIN_CHECK_INTERVAL_MS: i64 = 100;
/// Longest check interval (1 hour).
pub const MAX_CHECK_INTERVAL_MS: i64 = 3_600_000;
/// Shortest check timeout.
pub const MIN_CHECK_TIMEOUT_MS: i64 = 10;
/// Upper bound on `success_before_passing` and `failures_before_critical`.
pub const MAX_CHECK_THRESHOLD: i64 = 100;

/// A validated service: an endpoint of every allocation of its group,
/// `<name>.service.<zone>` in DNS while its checks pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// DNS label, unique within the job.
    pub name: String,
    /// The port inside the allocation.
    pub port: u16,
    /// Which `_<proto>` SRV name lists it.
    pub protocol: Protocol,
    /// DNS labels, unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// All must pass for an instance to be registered; none means healthy
    /// while the allocation runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// How it probes.
    pub kind: CheckKind,
    /// For http: the request path (starts with `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// For exec: argv.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// For exec: the task whose container runs the command (always set
    /// after validation: the group's first task when the file names none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// For tcp and http: the port probed (the service's unless the file
    /// names another).
    pub port: u16,
    /// Time between the starts of two runs.
    pub interval_ms: u64,
    /// A run longer than this fails.
    pub timeout_ms: u64,
    /// Consecutive successes before the check passes.
    pub success_before_passing: u32,
    /// Consecutive failures before a passing check is critical.
    pub failures_before_critical: u32,
}

impl From<&ServiceSpec> for pb::Service {
    fn from(s: &ServiceSpec) -> pb::Service {
        pb::Service {
            name: s.name.clone(),
            port: i64::from(s.port),
            protocol: s.protocol.as_str().to_owned(),
            tags: s.tags.clone(),
            checks: s.checks.iter().map(pb::Check::from).collect(),
        }
    }
}

impl From<&CheckSpec> for pb::Check {
    fn from(c: &CheckSpec) -> pb::Check {
        pb::Check {
            r#type: c.kind.as_str().to_owned(),
            path: c.path.clone(),
            command: c.command.clone(),
            interval_ms: i64::try_from(c.interval_ms).unwrap_or(i64::MAX),
            timeout_ms: i64::try_from(c.timeout_ms).unwrap_or(i64::MAX),
            success_before_passing: i64::from(c.success_before_passing),
            failures_before_critical: i64::from(c.failures_before_critical),
            task: c.task.clone(),
            port: i64::from(c.port),
        }
    }
}
