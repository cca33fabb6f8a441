//! Service discovery's rules on the scheduler's side: agents report their
//! allocations' addresses and health checks on their stream, and the
//! scheduler writes the SkyDNS records of healthy instances into the store
//! (agents need no write access to etcd). Everything here is pure; the
//! writing is [`crate::registrar`]'s.
//!
//! - [`admit`]: what a node may report (its own allocations, at an
//!   address of its subnet no other live allocation holds, checks of
//!   declared services only); pure.
//! - [`desired`]: the records the state calls for, and the healthy counts
//!   `drover job status` shows; pure.
//! - [`plan`]: the writes from what the keys hold to what is desired; pure.

pub mod admit;
pub mod desired;
pub mod plan;

#[cfg(test)]
mod tests;

pub use admit::Refusal;

/// Where service-discovery records go: the DNS zone their keys spell and
/// the TTL they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The zone, lowercase, without the final dot (`drover.internal`);
    /// keys are `/skydns/` + its labels reversed + `/service/...`.
    pub zone: String,
    /// TTL of every record, in seconds (the SkyDNS `ttl` field).
    pub ttl: u32,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            zone: drover_model::skydns::DEFAULT_ZONE.to_owned(),
            ttl: 5,
        }
    }
}
