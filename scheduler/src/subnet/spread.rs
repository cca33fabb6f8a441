//! Where a registration that lost a race for a subnet looks next.
//!
//! A node seen for the first time gets the lowest free node subnet
//! ([`super::next_free`]). Two schedulers registering nodes at once (or one
//! whose cache of claims is stale) then all reach for the same lowest
//! subnet: one claim wins, every other registration's create-if-absent
//! guard fails, and on the retry they reach for the *next* lowest one
//! together again, so a registration can lose every round. After a lost
//! race the node therefore starts its search at a place of its own, given
//! by a hash of its id: two registrations then collide again only when
//! their nodes hash to the same free subnet, which is what truly collides.
//! Pure and deterministic (the same id always starts at the same place).

use std::net::Ipv4Addr;

use drover_model::ipnet::mask;

use super::{Ipv4Net, SubnetConfig};

/// At most this many candidates are looked at; past it the caller falls
/// back to the lowest free subnet (a nearly exhausted cluster CIDR).
const MAX_PROBES: u64 = 4096;

/// A stable 64-bit FNV-1a hash of `s` (std's hasher may change between
/// releases; this one never does).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `taken` as sorted, merged, disjoint address ranges.
fn merged<'a>(taken: impl IntoIterator<Item = &'a Ipv4Net>) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = taken.into_iter().map(Ipv4Net::range).collect();
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether `[start, end]` overlaps one of the disjoint sorted `ranges`.
fn overlaps(ranges: &[(u32, u32)], start: u32, end: u32) -> bool {
    let n = ranges.partition_point(|r| r.0 <= end);
    n > 0 && ranges[n - 1].1 >= start
}

/// A free node subnet of `config` for node `node_id` after it lost a race:
/// the first one, from a start given by the node's id and wrapping round,
/// that overlaps none of `taken`. `None` when none is found within
/// [`MAX_PROBES`] candidates: the caller takes the lowest free one (or
/// refuses, when there is none).
pub fn after_conflict<'a>(
    config: &SubnetConfig,
    node_id: &str,
    taken: impl IntoIterator<Item = &'a Ipv4Net>,
) -> Option<Ipv4Net> {
    let ranges = merged(taken);
    let total = config.total();
    let step = u64::from(!mask(config.node_prefix())) + 1;
    let base = u64::from(u32::from(config.cluster().network()));
    let first = fnv1a(node_id) % total;
    for k in 0..total.min(MAX_PROBES) {
        let start = base + ((first + k) % total) * step;
        let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(start + step - 1)) else {
            continue;
        };
        if !overlaps(&ranges, s, e) {
            return Ipv4Net::new(Ipv4Addr::from(s), config.node_prefix()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    #[test]
    fn different_nodes_start_apart_and_skip_what_is_taken() {
        let config = SubnetConfig::default();
        let taken = [c("10.89.0.0/24"), c("10.89.1.0/24")];
        let picks: std::collections::BTreeSet<Ipv4Net> = (0..24)
            .filter_map(|i| after_conflict(&config, &format!("n{i:02}"), &taken))
            .collect();
        // 24 nodes racing land on (nearly) 24 different subnets, none
        // taken, all node subnets of the cluster CIDR.
        assert!(picks.len() >= 20, "{picks:?}");
        for p in &picks {
            assert!(config.is_node_subnet(p) && !taken.contains(p), "{p}");
        }
        // The same node always starts at the same place.
        assert_eq!(
            after_conflict(&config, "n07", &taken),
            after_conflict(&config, "n07", &taken)
        );
    }

    #[test]
    fn it_wraps_round_and_gives_up_when_everything_is_taken() {
        let config = SubnetConfig::new(c("10.89.0.0/22"), 24).expect("valid config");
        // Only 10.89.0.0/24 is free: whatever the start, it is found.
        let taken = [c("10.89.1.0/24"), c("10.89.2.0/23")];
        for id in ["a", "b", "c", "d", "e"] {
            assert_eq!(
                after_conflict(&config, id, &taken),
                Some(c("10.89.0.0/24")),
                "{id}"
            );
        }
        assert_eq!(after_conflict(&config, "a", &[c("10.89.0.0/22")]), None);
        // A claim of another size (kept across a configuration change)
        // is skipped as a whole.
        let odd = [c("10.89.0.0/23"), c("10.89.3.0/25")];
        assert_eq!(after_conflict(&config, "x", &odd), Some(c("10.89.2.0/24")));
    }
}
