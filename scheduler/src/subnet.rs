//! Node task subnets: each node gets its own slice of the cluster CIDR
//! (e.g. a `/24` of `10.89.0.0/16`) the first time it registers, and keeps it.
//!
//! Everything here is pure: [`next_free`] takes the cluster CIDR, the node
//! prefix and the subnets already taken, and returns the first free one;
//! [`assign`] decides which subnet a registering node gets and which claims
//! that takes. The store side (claiming it race-free) is in
//! [`crate::cluster`].

use std::net::Ipv4Addr;

use drover_model::ipnet::mask;
pub use drover_model::{InvalidNet, Ipv4Net};

pub mod spread;

/// Why a CIDR or a subnet request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// The text is not a CIDR.
    #[error("invalid CIDR {value:?}: {reason}")]
    Parse {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The node prefix does not fit the cluster CIDR.
    #[error(
        "node prefix /{node_prefix} does not fit cluster CIDR {cluster}: it must be \
         between /{} and /30",
        cluster.prefix()
    )]
    BadPrefix {
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// The node prefix asked for.
        node_prefix: u8,
    },
    /// Every node subnet of the cluster CIDR is taken.
    #[error(
        "cluster CIDR {cluster} has no free /{node_prefix} subnet left ({total} taken); \
         widen --cluster-cidr or lengthen --node-prefix"
    )]
    Exhausted {
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// The node prefix.
        node_prefix: u8,
        /// How many node subnets it holds.
        total: u64,
    },
}

impl From<InvalidNet> for SubnetError {
    fn from(e: InvalidNet) -> SubnetError {
        SubnetError::Parse {
            value: e.value,
            reason: e.reason,
        }
    }
}

/// Parses a CIDR given by a user (`--cluster-cidr`, `--subnet`).
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, SubnetError> {
    Ok(s.parse::<Ipv4Net>()?)
}

/// How node subnets are cut: `--cluster-cidr` and `--node-prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetConfig {
    cluster: Ipv4Net,
    node_prefix: u8,
}

/// The default cluster CIDR.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.89.0.0/16";
/// The default node subnet prefix length.
pub const DEFAULT_NODE_PREFIX: u8 = 24;

impl SubnetConfig {
    /// Checks that `/node_prefix` subnets fit `cluster` and leave room for
    /// a gateway and tasks (at most `/30`).
    pub fn new(cluster: Ipv4Net, node_prefix: u8) -> Result<SubnetConfig, SubnetError> {
        if node_prefix < cluster.prefix() || node_prefix > 30 {
            return Err(SubnetError::BadPrefix {
                cluster,
                node_prefix,
            });
        }
        Ok(SubnetConfig {
            cluster,
            node_prefix,
        })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    /// The node subnet prefix length.
    pub fn node_prefix(&self) -> u8 {
        self.node_prefix
    }

    /// How many node subnets the cluster CIDR holds.
    pub fn total(&self) -> u64 {
        1u64 << (self.node_prefix - self.cluster.prefix())
    }

    /// Whether `subnet` is a node subnet of this configuration.
    pub fn is_node_subnet(&self, subnet: &Ipv4Net) -> bool {
        subnet.prefix() == self.node_prefix && self.cluster.contains_net(subnet)
    }
}

impl Default for SubnetConfig {
    fn default() -> SubnetConfig {
        SubnetConfig {
            cluster: Ipv4Net::new(Ipv4Addr::new(10, 89, 0, 0), 16)
                .expect("16 is a valid prefix length"),
            node_prefix: DEFAULT_NODE_PREFIX,
        }
    }
}

/// The lowest node subnet of `config` that overlaps none of `taken`.
/// `taken` may hold subnets of any size, also outside the cluster CIDR (a
/// node that kept its subnet across a configuration change).
pub fn next_free<'a>(
    config: &SubnetConfig,
    taken: impl IntoIterator<Item = &'a Ipv4Net>,
) -> Result<Ipv4Net, SubnetError> {
    let mut ranges: Vec<(u32, u32)> = taken.into_iter().map(Ipv4Net::range).collect();
    ranges.sort_unstable();
    let (_, last) = config.cluster.range();
    let step = u64::from(!mask(config.node_prefix)) + 1;
    let mut candidate = u64::from(u32::from(config.cluster.network()));
    let mut i = 0;
    while candidate <= u64::from(last) {
        let start = candidate;
        let end = start + step - 1;
        // Skip what lies wholly before this candidate.
        while i < ranges.len() && u64::from(ranges[i].1) < start {
            i += 1;
        }
        match ranges.get(i) {
            Some(&(t0, t1)) if u64::from(t0) <= end => {
                // Overlaps: jump to the first aligned subnet past it.
                let past = u64::from(t1) + 1;
                candidate = past.div_ceil(step) * step;
            }
            _ => {
                let network = u32::try_from(start).map_err(|_| exhausted(config))?;
                return Ok(Ipv4Net::new(Ipv4Addr::from(network), config.node_prefix)?);
            }
        }
    }
    Err(exhausted(config))
}

fn exhausted(config: &SubnetConfig) -> SubnetError {
    SubnetError::Exhausted {
        cluster: config.cluster,
        node_prefix: config.node_prefix,
        total: config.total(),
    }
}

/// A stored claim on a subnet: who holds it, at which revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The node holding it.
    pub node_id: &'a str,
    /// The claim record's revision.
    pub mod_revision: i64,
}

/// What a registration does to one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOp {
    /// The node's own claim: it must still be there, unchanged.
    Keep {
        /// The subnet.
        subnet: Ipv4Net,
        /// The revision read.
        mod_revision: i64,
    },
    /// A new claim, created only if absent.
    Create(Ipv4Net),
}

/// The subnet a registering node gets and the claims that takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The node's subnet.
    pub subnet: Ipv4Net,
    /// Claims to keep or create, in one transaction with the node record.
    pub claims: Vec<ClaimOp>,
    /// The subnet the node held, and the node whose claim took it (which
    /// should never happen): the node gets a fresh subnet instead.
    pub lost: Option<(Ipv4Net, String)>,
}

/// Why a registering node gets no subnet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The subnet it asks for cannot be its.
    #[error("subnet {wanted} refused: {reason}")]
    Wanted {
        /// The subnet asked for.
        wanted: Ipv4Net,
        /// Why not.
        reason: String,
    },
    /// No subnet is left to cut.
    #[error(transparent)]
    Exhausted(SubnetError),
}

/// Decides the subnet of node `node_id`, which `held` one (from its record)
/// and asks for `wanted` (`drover agent --subnet`), given every stored
/// claim. A node keeps what it holds; a subnet it asks for must be a whole
/// node subnet of `config` that overlaps no other node's claim (then two
/// claims overlap exactly when they are the same key, which the claim's
/// create-if-absent guard settles even between two schedulers); a node with
/// neither gets the lowest free one. A held subnet whose claim is missing (a
/// record from before claims existed) is claimed again.
pub fn assign(
    config: &SubnetConfig,
    node_id: &str,
    held: Option<Ipv4Net>,
    wanted: Option<Ipv4Net>,
    claims: &[Claim<'_>],
) -> Result<Assignment, Refusal> {
    let mut ops = Vec::new();
    let mut lost = None;
    let mut subnet = held;
    if let Some(s) = held {
        match claims.iter().find(|c| c.subnet == s) {
            Some(c) if c.node_id == node_id => ops.push(ClaimOp::Keep {
                subnet: s,
                mod_revision: c.mod_revision,
            }),
            Some(c) => {
                lost = Some((s, c.node_id.to_string()));
                subnet = None;
            }
            None => ops.push(ClaimOp::Create(s)),
        }
    }
    if let Some(wanted) = wanted {
        let refuse = |reason: String| Refusal::Wanted { wanted, reason };
        match subnet {
            Some(have) if have == wanted => {}
            Some(have) => {
                return Err(refuse(format!(
                    "the node already has subnet {have}; start the agent with --subnet {have} \
                     or without --subnet"
                )))
            }
            None => {
                if !config.is_node_subnet(&wanted) {
                    return Err(refuse(format!(
                        "it is not a /{} subnet inside the cluster CIDR {} (--cluster-cidr, \
                         --node-prefix)",
                        config.node_prefix(),
                        config.cluster()
                    )));
                }
                if let Some(c) = claims
                    .iter()
                    .find(|c| c.subnet.overlaps(&wanted) && c.node_id != node_id)
                {
                    return Err(refuse(format!(
                        "it overlaps {}, the subnet of node {}",
                        c.subnet, c.node_id
                    )));
                }
                ops.push(ClaimOp::Create(wanted));
                subnet = Some(wanted);
            }
        }
    }
    let subnet = match subnet {
        Some(s) => s,
        None => {
            let s =
                next_free(config, claims.iter().map(|c| &c.subnet)).map_err(Refusal::Exhausted)?;
            ops.push(ClaimOp::Create(s));
            s
        }
    };
    Ok(Assignment {
        subnet,
        claims: ops,
        lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    fn cfg(cluster: &str, prefix: u8) -> SubnetConfig {
        SubnetConfig::new(c(cluster), prefix).expect("valid config")
    }

    #[test]
    fn user_cidrs_are_parsed_with_the_flag_wording() {
        assert_eq!(parse_cidr("10.89.3.0/24"), Ok(c("10.89.3.0/24")));
        let err = parse_cidr("10.89.3.1/24").expect_err("host bits set");
        assert_eq!(
            err.to_string(),
            "invalid CIDR \"10.89.3.1/24\": host bits are set (not a network address)"
        );
    }

    #[test]
    fn first_free_in_order_and_gaps_are_reused() {
        let config = cfg("10.89.0.0/16", 24);
        assert_eq!(next_free(&config, &[]), Ok(c("10.89.0.0/24")));
        let taken = [c("10.89.0.0/24"), c("10.89.2.0/24")];
        assert_eq!(next_free(&config, &taken), Ok(c("10.89.1.0/24")));
        let taken = [c("10.89.1.0/24"), c("10.89.0.0/24")];
        assert_eq!(next_free(&config, &taken), Ok(c("10.89.2.0/24")));
    }

    #[test]
    fn taken_subnets_of_other_sizes_are_avoided() {
        let config = cfg("10.89.0.0/16", 24);
        // A /23 from an older configuration covers two /24s; a /25 one.
        let taken = [c("10.89.0.0/23"), c("10.89.2.128/25")];
        assert_eq!(next_free(&config, &taken), Ok(c("10.89.3.0/24")));
        // Outside the cluster CIDR: irrelevant.
        let taken = [c("192.0.2.0/24")];
        assert_eq!(next_free(&config, &taken), Ok(c("10.89.0.0/24")));
    }

    #[test]
    fn exhaustion_names_the_cidr() {
        let config = cfg("10.89.0.0/23", 24);
        let taken = [c("10.89.0.0/24"), c("10.89.1.0/24")];
        let err = next_free(&config, &taken).expect_err("no room");
        assert!(matches!(err, SubnetError::Exhausted { total: 2, .. }));
        assert!(err.to_string().contains("10.89.0.0/23"), "{err}");
        // The very end of the address space does not overflow.
        let config = cfg("255.255.255.0/24", 30);
        let all: Vec<Ipv4Net> = (0..64u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0xffff_ff00 + i * 4), 30).expect("valid"))
            .collect();
        assert_eq!(next_free(&config, &all[..63]), Ok(c("255.255.255.252/30")));
        assert!(next_free(&config, &all).is_err());
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(SubnetConfig::new(c("10.89.0.0/16"), 15).is_err());
        assert!(SubnetConfig::new(c("10.89.0.0/16"), 31).is_err());
        assert_eq!(cfg("10.89.0.0/16", 24).total(), 256);
        assert!(cfg("10.89.0.0/16", 24).is_node_subnet(&c("10.89.7.0/24")));
        assert!(!cfg("10.89.0.0/16", 24).is_node_subnet(&c("10.89.7.0/25")));
        assert!(!cfg("10.89.0.0/16", 24).is_node_subnet(&c("10.90.7.0/24")));
    }

    #[test]
    fn many_nodes_get_distinct_subnets() {
        let config = cfg("10.0.0.0/8", 24);
        let mut taken = Vec::new();
        for _ in 0..2000 {
            let next = next_free(&config, &taken).expect("room");
            assert!(taken.iter().all(|t: &Ipv4Net| !t.overlaps(&next)));
            taken.push(next);
        }
    }

    fn claim(subnet: &str, node_id: &'static str) -> Claim<'static> {
        Claim {
            subnet: c(subnet),
            node_id,
            mod_revision: 7,
        }
    }

    #[test]
    fn a_node_keeps_its_subnet_and_a_new_one_gets_the_lowest_free() {
        let config = cfg("10.89.0.0/16", 24);
        let claims = [claim("10.89.0.0/24", "a"), claim("10.89.2.0/24", "b")];
        let kept = assign(&config, "a", Some(c("10.89.0.0/24")), None, &claims).expect("kept");
        assert_eq!(kept.subnet, c("10.89.0.0/24"));
        assert_eq!(
            kept.claims,
            [ClaimOp::Keep {
                subnet: c("10.89.0.0/24"),
                mod_revision: 7
            }]
        );
        let new = assign(&config, "n", None, None, &claims).expect("free");
        assert_eq!(new.claims, [ClaimOp::Create(c("10.89.1.0/24"))]);
        // A record from before claims existed: claimed again.
        let old = assign(&config, "z", Some(c("10.89.9.0/24")), None, &claims).expect("old");
        assert_eq!(old.claims, [ClaimOp::Create(c("10.89.9.0/24"))]);
        // Taken by another node meanwhile: a fresh one, and it says so.
        let lost = assign(&config, "z", Some(c("10.89.2.0/24")), None, &claims).expect("lost");
        assert_eq!(lost.subnet, c("10.89.1.0/24"));
        assert_eq!(lost.lost, Some((c("10.89.2.0/24"), "b".to_string())));
    }

    #[test]
    fn a_wanted_subnet_must_be_a_free_node_subnet_or_the_one_held() {
        let config = cfg("10.89.0.0/16", 24);
        let claims = [claim("10.89.2.0/24", "b")];
        let wanted =
            |node, held: Option<&str>, w| assign(&config, node, held.map(c), Some(c(w)), &claims);
        let ok = wanted("n", None, "10.89.5.0/24").expect("free");
        assert_eq!(ok.claims, [ClaimOp::Create(c("10.89.5.0/24"))]);
        assert!(wanted("b", Some("10.89.2.0/24"), "10.89.2.0/24").is_ok());
        for (node, held, w, why) in [
            (
                "n",
                None,
                "10.89.2.0/24",
                "overlaps 10.89.2.0/24, the subnet of node b",
            ),
            (
                "n",
                None,
                "10.89.5.0/25",
                "not a /24 subnet inside the cluster CIDR",
            ),
            (
                "b",
                Some("10.89.2.0/24"),
                "10.89.5.0/24",
                "already has subnet 10.89.2.0/24",
            ),
        ] {
            match wanted(node, held, w) {
                Err(Refusal::Wanted { reason, .. }) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{w} for {node}: {other:?}"),
            }
        }
        let full = cfg("10.89.0.0/24", 24);
        let err = assign(&full, "n", None, None, &[claim("10.89.0.0/24", "a")]);
        assert!(matches!(err, Err(Refusal::Exhausted(_))), "{err:?}");
    }
}
