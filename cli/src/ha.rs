//! Flags of scheduler replicas (`drover scheduler`): the address this
//! replica is reached at, which the leader publishes in the store, and the
//! leader lease's TTL.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use drover_scheduler::leader::{Candidacy, DEFAULT_LEADER_TTL};

/// How this scheduler takes part in the leader election.
#[derive(Args, Debug)]
pub struct HaArgs {
    /// Address (HOST:PORT) clients and agents reach this scheduler at: the
    /// value of the leader key (`<prefix>leader`) while it leads, and what
    /// followers name in their refusals. Default: the bound --listen
    /// address, unless it is unspecified (0.0.0.0, ::).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// TTL of the leader's lease, in milliseconds (etcd counts whole
    /// seconds: rounded up): how long after a leader dies (SIGKILL, cut
    /// off) another replica takes over.
    #[arg(long = "leader-ttl-ms", value_name = "MS", default_value_t = DEFAULT_LEADER_TTL.as_millis() as u64)]
    leader_ttl_ms: u64,
}

impl HaArgs {
    /// The candidacy of a scheduler bound to `bound`.
    pub fn candidacy(&self, bound: SocketAddr) -> Result<Candidacy> {
        if self.leader_ttl_ms == 0 {
            bail!("--leader-ttl-ms must be > 0");
        }
        Ok(Candidacy {
            advertise: advertise(self.advertise.as_deref(), bound)?,
            ttl: Duration::from_millis(self.leader_ttl_ms),
        })
    }
}

/// The address to advertise: `given` (checked), or `bound` when it is a
/// specific address.
pub fn advertise(given: Option<&str>, bound: SocketAddr) -> Result<String> {
    let Some(given) = given else {
        if bound.ip().is_unspecified() {
            bail!(
                "--listen {bound} is not an address others can reach: give --advertise HOST:PORT, \
                 the address clients and agents reach this scheduler at"
            );
        }
        return Ok(bound.to_string());
    };
    let bad = |why: &str| anyhow::anyhow!("--advertise {given:?}: {why}; give HOST:PORT");
    if given.contains("://") || given.contains(',') || given.chars().any(char::is_whitespace) {
        return Err(bad("not a plain address"));
    }
    let (host, port) = given.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(given.to_string()),
        _ => Err(bad("the port is not a number in 1..=65535")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_bound_address_is_advertised_unless_unspecified() {
        let bound: SocketAddr = "10.0.0.1:4680".parse().unwrap();
        assert_eq!(advertise(None, bound).unwrap(), "10.0.0.1:4680");
        let any: SocketAddr = "0.0.0.0:4680".parse().unwrap();
        let e = advertise(None, any).unwrap_err().to_string();
        assert!(e.contains("--advertise"), "{e}");
        assert_eq!(
            advertise(Some("sched-1.example:4680"), any).unwrap(),
            "sched-1.example:4680"
        );
        assert_eq!(advertise(Some("[::1]:4680"), any).unwrap(), "[::1]:4680");
        for bad in ["http://a:1", "a", ":4680", "a:0", "a:x", "a:1,b:2"] {
            assert!(advertise(Some(bad), any).is_err(), "{bad}");
        }
    }
}
