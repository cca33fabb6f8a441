//! Ranking: the scorers that order the feasible nodes for one instance.
//! A node's score is the sum of every scorer's; the highest wins, and ties
//! go to the earlier node (nodes come sorted by id), so the same input
//! always gives the same plan.
//!
//! A new scorer (spread over an attribute, affinity, ...) is one more
//! [`Scorer`] in [`SCORERS`].

use super::{Ask, Candidate};
use crate::job::Algorithm;

/// One scoring rule; higher is better.
pub trait Scorer: Sync {
    /// The candidate's score for the ask.
    fn score(&self, candidate: &Candidate<'_>, ask: &Ask<'_>) -> f64;
}

/// The scorers whose sum ranks a node.
pub const SCORERS: &[&dyn Scorer] = &[
    &BinPack,
    &AntiAffinity,
    &Affinities,
    &Spread,
    &super::failed::FailedBefore,
];

/// The candidate's total score.
pub fn score(candidate: &Candidate<'_>, ask: &Ask<'_>) -> f64 {
    SCORERS
        .iter()
        .fold(0.0, |total, s| total + s.score(candidate, ask))
}

/// Bin-packing: prefer the node that is fullest after placing, as the mean
/// of its CPU and memory fill (0 to 1), so whole nodes stay free for large
/// instances. With [`Algorithm::Spread`] the score is inverted (1 - fill):
/// the emptiest node wins, spreading load over the cluster.
pub struct BinPack;

impl Scorer for BinPack {
    fn score(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> f64 {
        let frac = |used: u64, need: u64, cap: u64| {
            if cap == 0 {
                1.0
            } else {
                used.saturating_add(need) as f64 / cap as f64
            }
        };
        let fill = (frac(
            c.used.cpu_millis,
            ask.need.cpu_millis,
            c.node.resources.cpu_millis,
        ) + frac(
            c.used.memory_mb,
            ask.need.memory_mb,
            c.node.resources.memory_mb,
        )) / 2.0;
        match ask.algorithm {
            Algorithm::BinPack => fill,
            Algorithm::Spread => 1.0 - fill,
        }
    }
}

/// Penalty per instance of the same group already on the node.
pub const ANTI_AFFINITY_PENALTY: f64 = 0.5;

/// Anti-affinity: instances of one group spread over nodes, one losing a
/// node loses fewer of them.
pub struct AntiAffinity;

impl Scorer for AntiAffinity {
    fn score(&self, c: &Candidate<'_>, _: &Ask<'_>) -> f64 {
        -ANTI_AFFINITY_PENALTY * f64::from(c.instances)
    }
}

/// Affinities: a node matching the group's (and job's) affinities scores
/// their weights over 100 (over the sum of the weights' sizes when that is
/// larger), so the term stays within -1..=1 like bin-packing's: a
/// weight-100 affinity outweighs any packing difference, a weight-50 one a
/// difference of half a node. A preference only: it never turns a node
/// away.
pub struct Affinities;

impl Scorer for Affinities {
    fn score(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> f64 {
        ask.rules.affinity(c.node)
    }
}

/// The group's spreads over node properties ([`super::spread`]): from -1
/// to 1 per spread at the default weight, so a spread counts as much as
/// bin-packing.
pub struct Spread;

impl Scorer for Spread {
    fn score(&self, c: &Candidate<'_>, ask: &Ask<'_>) -> f64 {
        ask.spread.score(c.position)
    }
}
