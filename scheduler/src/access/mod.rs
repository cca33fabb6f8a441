//! Roles for people: who is calling (from the client certificate) and
//! whether that caller may call a method.
//!
//! A person's certificate (`drover tls issue --role ROLE --name NAME`)
//! carries its role as a subject alternative name URI
//! `urn:drover:role:<role>` and the person's name as its common name.
//! A URI rather than a subject field: an organisation's own CA may stamp
//! organisational units for its own purposes, while this URI can only mean
//! Drover's role. The roles are ordered, each may do what the one before
//! may:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | list and read jobs, allocations, nodes, deployments, history; read logs |
//! | `operator` | also run (submit, plan), stop and revert jobs, force periodic jobs, promote and fail deployments |
//! | `admin` | also exec into allocations, drain nodes and manage them, read the audit trail |
//!
//! The CLI certificate of `drover tls init` (common name `drover-cli`) is
//! an admin: the cluster's bootstrap credential, as it has always been.
//! Without a role URI it is still one, so clusters set up before roles
//! existed keep working unchanged; any other certificate without a role is
//! refused. Agents (common name `drover-agent`) may only hold their
//! stream. Without mutual TLS the scheduler serves loopback only (`drover
//! dev`), and every caller is `loopback`, who may call anything (people as
//! admins, and the local agent), as before roles existed; but only root
//! and the scheduler's own user may call at all (other users of the
//! machine share loopback: see `drover_store::local_peer`).
//!
//! Every method the scheduler serves has a rule in [`rules::RULES`]; a
//! method without one is refused (and the table test fails).

use std::fmt;

use tonic::Status;

mod layer;
pub mod rules;

pub use layer::AccessLayer;
pub use rules::{rule_of, Need, Rule};

/// Prefix of the subject alternative name URI that carries a role.
pub const ROLE_URI_PREFIX: &str = "urn:drover:role:";

/// Common name of the CLI certificate of `drover tls init` (an admin).
pub const BOOTSTRAP_CLI_NAME: &str = "drover-cli";
/// Common name of agent certificates.
pub const AGENT_NAME: &str = "drover-agent";

/// A person's role, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Lists and reads status and logs.
    Viewer,
    /// Also runs, stops and reverts jobs, promotes and fails deployments.
    Operator,
    /// Also execs, drains and manages nodes, reads the audit trail.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name, as `--role` and the certificate spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The subject alternative name URI that grants this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A person or automation with a role.
    Person(Role),
    /// A node agent.
    Agent,
    /// Any caller of a scheduler serving loopback without mutual TLS
    /// (`drover dev`): people with the admin role and the local agent
    /// alike, as before roles existed.
    Loopback,
}

/// Who is calling: put into each request's extensions by the
/// [`AccessLayer`], read by the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's common name, or `loopback` without mutual TLS.
    pub name: String,
    /// What the caller may be.
    pub kind: Kind,
}

impl Caller {
    /// The caller on a loopback listener without mutual TLS (`drover dev`).
    pub fn loopback() -> Caller {
        Caller {
            name: "loopback".into(),
            kind: Kind::Loopback,
        }
    }

    /// The role's name, or `agent` (`admin` on loopback).
    pub fn role_name(&self) -> &'static str {
        match self.kind {
            Kind::Person(r) => r.as_str(),
            Kind::Agent => "agent",
            Kind::Loopback => "admin",
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role_name())
    }
}

/// The caller a DER client certificate names, or why it names none.
pub fn identify(der: &[u8]) -> Result<Caller, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Status::unauthenticated(format!("client certificate unreadable: {e}")))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Status::unauthenticated("client certificate has no common name"))?;
    let mut roles: Vec<&str> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = general {
                if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    roles.push(role);
                }
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();
    let kind = match (roles.as_slice(), name.as_str()) {
        (_, AGENT_NAME) if roles.is_empty() => Kind::Agent,
        ([], BOOTSTRAP_CLI_NAME) => Kind::Person(Role::Admin),
        ([one], n) if n != AGENT_NAME => Kind::Person(Role::parse(one).ok_or_else(|| {
            Status::permission_denied(format!(
                "certificate {name:?} names role {one:?}, which is none of viewer, operator, admin"
            ))
        })?),
        ([], _) => {
            return Err(Status::permission_denied(format!(
                "certificate {name:?} carries no Drover role; issue one with \
                 `drover tls issue --role viewer|operator|admin --name {name}`"
            )))
        }
        _ => {
            return Err(Status::permission_denied(format!(
                "certificate {name:?} names roles {roles:?}: a certificate has one role, \
                 and an agent's none"
            )))
        }
    };
    Ok(Caller { name, kind })
}

/// Whether `caller` may call the method at `path` (`/pkg.Service/Method`):
/// its rule, or a `PERMISSION_DENIED` naming the method, the role it
/// needs and the caller's.
pub fn authorize(path: &str, caller: &Caller) -> Result<&'static Rule, Status> {
    let method = path.trim_start_matches('/');
    let Some(rule) = rule_of(path) else {
        return Err(Status::permission_denied(format!(
            "{method} has no access rule in this scheduler, so nobody may call it"
        )));
    };
    let allowed = match (rule.need, caller.kind) {
        (Need::Anyone, _) | (_, Kind::Loopback) => true,
        (Need::Role(need), Kind::Person(has)) => has >= need,
        (Need::Agent, Kind::Agent) => true,
        (Need::Role(_), Kind::Agent) | (Need::Agent, Kind::Person(_)) => false,
    };
    if allowed {
        return Ok(rule);
    }
    let needed = needed(rule.need);
    let has = match caller.kind {
        Kind::Person(r) => format!("{} has the {r} role", caller.name),
        Kind::Agent => format!(
            "{} is an agent certificate, which may only hold an agent's stream",
            caller.name
        ),
        Kind::Loopback => format!("{} may call anything", caller.name),
    };
    Err(Status::permission_denied(format!(
        "{method} needs {needed}; {has}"
    )))
}

/// What `need` asks of a caller, for refusals: `the operator role`.
pub fn needed(need: Need) -> String {
    match need {
        Need::Role(r) => format!("the {r} role"),
        Need::Agent => "an agent certificate".to_owned(),
        Need::Anyone => "any certificate of the cluster".to_owned(),
    }
}

#[cfg(test)]
mod tests;
