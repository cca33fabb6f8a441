//! The access rule of every gRPC method the scheduler serves: who may
//! call it, and whether the call goes into the audit trail.
//!
//! A method missing here is refused to everyone; the table test in
//! `access::tests` fails for any method of the served services that has no
//! rule, so a new method cannot ship without one.

use super::Role;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any caller the TLS handshake admitted (health, reflection).
    Anyone,
    /// A person with at least this role.
    Role(Role),
    /// A node agent.
    Agent,
}

/// The rule of one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `/package.Service/Method`, as the request path names it.
    pub path: &'static str,
    /// Who may call it.
    pub need: Need,
    /// What the audit trail calls it (`job stop`); `None` for a call that
    /// changes nothing and runs nothing, which is not audited.
    pub audit: Option<&'static str>,
}

const fn rule(path: &'static str, need: Need, audit: Option<&'static str>) -> Rule {
    Rule { path, need, audit }
}

const VIEWER: Need = Need::Role(Role::Viewer);
const OPERATOR: Need = Need::Role(Role::Operator);
const ADMIN: Need = Need::Role(Role::Admin);

/// Every method's rule.
pub const RULES: &[Rule] = &[
    // Jobs.
    rule("/drover.v1.JobService/Submit", OPERATOR, Some("job run")),
    // A dry run changes nothing, but only those who may run jobs need it
    // (as Nomad's submit-job capability covers plan).
    rule("/drover.v1.JobService/Plan", OPERATOR, None),
    rule("/drover.v1.JobService/Get", VIEWER, None),
    rule("/drover.v1.JobService/List", VIEWER, None),
    rule("/drover.v1.JobService/Stop", OPERATOR, Some("job stop")),
    rule("/drover.v1.JobService/Watch", VIEWER, None),
    rule(
        "/drover.v1.JobService/ForcePeriodic",
        OPERATOR,
        Some("periodic force"),
    ),
    // Deployments and versions.
    rule("/drover.v1.DeploymentService/Get", VIEWER, None),
    rule("/drover.v1.DeploymentService/Watch", VIEWER, None),
    rule(
        "/drover.v1.DeploymentService/Promote",
        OPERATOR,
        Some("deployment promote"),
    ),
    rule(
        "/drover.v1.DeploymentService/Fail",
        OPERATOR,
        Some("deployment fail"),
    ),
    rule("/drover.v1.DeploymentService/History", VIEWER, None),
    rule(
        "/drover.v1.DeploymentService/Revert",
        OPERATOR,
        Some("job revert"),
    ),
    // Nodes.
    rule("/drover.v1.NodeService/List", VIEWER, None),
    rule("/drover.v1.NodeService/Get", VIEWER, None),
    // What images a node caches: names, digests, sizes, like node status.
    rule("/drover.v1.NodeService/Images", VIEWER, None),
    rule("/drover.v1.NodeService/Drain", ADMIN, Some("node drain")),
    // Allocations: exec runs a command as the task, on its node.
    rule("/drover.v1.AllocService/List", VIEWER, None),
    rule("/drover.v1.AllocService/Get", VIEWER, None),
    rule("/drover.v1.AllocService/Logs", VIEWER, None),
    rule("/drover.v1.AllocService/Exec", ADMIN, Some("exec")),
    // The audit trail holds exec command lines, which may carry secrets.
    rule("/drover.v1.AuditService/List", ADMIN, None),
    // Allocation events: what `alloc status` shows, for viewers too.
    rule("/drover.v1.EventService/List", VIEWER, None),
    rule("/drover.v1.EventService/Follow", VIEWER, None),
    // Agents.
    rule("/drover.v1.AgentService/Connect", Need::Agent, None),
    // Standard services: no cluster data.
    rule("/drover.v1.VersionService/Get", Need::Anyone, None),
    rule("/grpc.health.v1.Health/Check", Need::Anyone, None),
    rule("/grpc.health.v1.Health/Watch", Need::Anyone, None),
    rule(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Need::Anyone,
        None,
    ),
    rule(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Need::Anyone,
        None,
    ),
];

/// The rule of the method at `path`, if it has one.
pub fn rule_of(path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.path == path)
}
