//! Whether this scheduler may serve: only the leader of the replicas
//! answers the API and the agents' streams; a follower refuses them with
//! `UNAVAILABLE`, the message `not the leader; the leader is at ADDR` and
//! the metadata `drover-leader: ADDR` (the leader's advertised address),
//! so that clients and agents go there instead. [`crate::leader`] moves
//! the [`Gate`] between the roles; a scheduler without an election (tests,
//! one replica) is always [`Gate::open`].

use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The response metadata key naming the leader's address on a refusal.
pub const LEADER_METADATA: &str = "drover-leader";

/// What this scheduler is in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It leads: it serves.
    Leading,
    /// Another replica leads (at this advertised address), or none yet.
    Following {
        /// The leader's advertised address, when one is known.
        leader: Option<String>,
    },
}

/// A cheap, shared view of this scheduler's [`Role`], checked on every
/// call.
#[derive(Debug, Clone)]
pub struct Gate {
    role: watch::Receiver<Role>,
}

impl Gate {
    /// A gate that always admits (no election).
    pub fn open() -> Gate {
        let (_tx, role) = watch::channel(Role::Leading);
        Gate { role }
    }

    /// A gate following `role`.
    pub fn new(role: watch::Receiver<Role>) -> Gate {
        Gate { role }
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver that changes with the role.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Admits a call while leading; a follower's refusal otherwise.
    pub fn check(&self) -> Result<(), Status> {
        match &*self.role.borrow() {
            Role::Leading => Ok(()),
            Role::Following { leader } => Err(refusal(leader.as_deref())),
        }
    }
}

/// A follower's refusal: `UNAVAILABLE`, naming the leader when known.
pub fn refusal(leader: Option<&str>) -> Status {
    let Some(addr) = leader else {
        return Status::unavailable(
            "not the leader; no leader is elected yet (an election is under way, or the replicas cannot reach etcd): retry, and check the etcd members (etcdctl endpoint health) if it lasts",
        );
    };
    let mut status = Status::unavailable(format!("not the leader; the leader is at {addr}"));
    if let Ok(value) = MetadataValue::try_from(addr) {
        status.metadata_mut().insert(LEADER_METADATA, value);
    }
    status
}

/// An interceptor that runs `inner` (the role check of [`crate::auth`])
/// and then admits the call only through `gate`.
pub fn guard<F>(
    gate: Gate,
    mut inner: F,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone
where
    F: FnMut(Request<()>) -> Result<Request<()>, Status> + Clone,
{
    move |req: Request<()>| {
        let req = inner(req)?;
        gate.check()?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_follower_names_the_leader_in_message_and_metadata() {
        let (tx, rx) = watch::channel(Role::Following {
            leader: Some("10.0.0.1:4680".into()),
        });
        let gate = Gate::new(rx);
        let refused = gate.check().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert_eq!(
            refused.message(),
            "not the leader; the leader is at 10.0.0.1:4680"
        );
        assert_eq!(
            refused
                .metadata()
                .get(LEADER_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("10.0.0.1:4680")
        );
        tx.send(Role::Leading).unwrap();
        assert!(gate.check().is_ok());
        tx.send(Role::Following { leader: None }).unwrap();
        let refused = gate.check().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.metadata().get(LEADER_METADATA).is_none());
    }

    #[test]
    fn an_open_gate_admits() {
        assert!(Gate::open().check().is_ok());
    }
}
