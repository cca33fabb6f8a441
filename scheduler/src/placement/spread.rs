//! Spread: prefer the nodes whose value of a property (`${meta.rack}`,
//! `${attr.arch}`, `${node.id}`) holds the fewest of a group's instances
//! compared to the share it should get.
//!
//! What counts is only what will run: the group's allocations that are
//! still wanted (desired run, not terminal, not stopped or replaced by
//! this plan) and this plan's placements. An instance being stopped still
//! runs for its kill timeout but is gone for the purpose of balance
//! (kubernetes #98215 counted terminating pods and piled new ones on the
//! zone they were leaving).
//!
//! Shares: a spread with targets (`r1` 50%, `r2` 30%) wants that percent
//! of the group's count on each listed value; the values not listed that
//! are present share what is left, evenly (none when the targets sum to
//! 100). Without targets, every value present gets an even share. Present
//! means: on a node that could take the group when its placement starts,
//! or holding one of its counted instances. A node lacking the property is
//! its own "missing" bucket with no share, scored lowest.
//!
//! Cost: [`GroupSpread::new`] reads each node's property once per group
//! per plan (one hash lookup per node and spread); from then on, scoring a
//! node and counting a placement are array lookups, with no allocation.

use std::collections::HashMap;

use crate::job::SpreadSpec;
use crate::job::DEFAULT_SPREAD_WEIGHT;
use crate::state::NodeRecord;

/// Bucket of the nodes lacking the property.
const MISSING: u32 = u32::MAX;

/// The score of a node whose value should get no instance (or that lacks
/// the property): the lowest a spread gives.
pub const NO_SHARE: f64 = -1.0;

/// The spreads of one group while its instances are placed: per spread,
/// each node's value and each value's count and share.
#[derive(Debug, Default)]
pub struct GroupSpread {
    tallies: Vec<Tally>,
}

/// One spread's state.
#[derive(Debug)]
struct Tally {
    /// The spread's weight relative to the default (1.0 at weight 50).
    factor: f64,
    /// Per node position: the index of its value, or [`MISSING`].
    bucket: Vec<u32>,
    /// Per value: instances counted there.
    count: Vec<u32>,
    /// Per value: instances it should hold; 0 when it should hold none.
    desired: Vec<f64>,
}

impl GroupSpread {
    /// The spreads `specs` of a group of `total` instances over `nodes`.
    /// `counted` are the positions (in `nodes`) of the group's allocations
    /// that are still wanted; `feasible` says whether the node at a
    /// position could take an instance now. With no spread, nothing is
    /// computed and `feasible` is never called.
    pub fn new<'a>(
        nodes: &'a [NodeRecord],
        specs: impl IntoIterator<Item = &'a SpreadSpec>,
        total: u32,
        counted: &[usize],
        feasible: impl Fn(usize) -> bool,
    ) -> GroupSpread {
        let specs: Vec<&SpreadSpec> = specs.into_iter().collect();
        if specs.is_empty() {
            return GroupSpread::default();
        }
        let usable: Vec<bool> = (0..nodes.len()).map(feasible).collect();
        let tallies = specs
            .into_iter()
            .map(|s| Tally::new(nodes, s, f64::from(total), counted, &usable))
            .collect();
        GroupSpread { tallies }
    }

    /// Whether the group has any spread.
    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }

    /// The spread score of the node at `position`: per spread, from -1 (its
    /// value should hold no more, or it lacks the property) to 1 (its
    /// value holds none of its share yet), times the spread's weight / 50.
    pub fn score(&self, position: usize) -> f64 {
        self.tallies.iter().map(|t| t.score(position)).sum()
    }

    /// Counts an instance placed on the node at `position`.
    pub fn placed(&mut self, position: usize) {
        for t in &mut self.tallies {
            if let Some(&b) = t.bucket.get(position) {
                if b != MISSING {
                    t.count[b as usize] += 1;
                }
            }
        }
    }

    /// How many instances the value of spread `spread` (in order: the
    /// job's, then the group's) on the node at `position` holds, if the
    /// node has the property. For tests and explanations.
    pub fn count_at(&self, spread: usize, position: usize) -> Option<u32> {
        let t = self.tallies.get(spread)?;
        let b = *t.bucket.get(position)?;
        (b != MISSING).then(|| t.count[b as usize])
    }
}

impl Tally {
    fn new(
        nodes: &[NodeRecord],
        spec: &SpreadSpec,
        total: f64,
        counted: &[usize],
        usable: &[bool],
    ) -> Tally {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut values: Vec<&str> = Vec::new();
        let bucket: Vec<u32> = nodes
            .iter()
            .map(|n| match n.property(&spec.attribute) {
                None => MISSING,
                Some(v) => *index.entry(v).or_insert_with(|| {
                    values.push(v);
                    u32::try_from(values.len() - 1).unwrap_or(MISSING)
                }),
            })
            .collect();
        let mut count = vec![0u32; values.len()];
        for &i in counted {
            if let Some(&b) = bucket.get(i) {
                if b != MISSING {
                    count[b as usize] += 1;
                }
            }
        }
        let mut present = vec![false; values.len()];
        for (b, ok) in bucket.iter().zip(usable) {
            if *ok && *b != MISSING {
                present[*b as usize] = true;
            }
        }
        for (p, c) in present.iter_mut().zip(&count) {
            *p |= *c > 0;
        }
        let desired = shares(spec, &values, &present, total);
        Tally {
            factor: f64::from(spec.weight) / f64::from(DEFAULT_SPREAD_WEIGHT),
            bucket,
            count,
            desired,
        }
    }

    fn score(&self, position: usize) -> f64 {
        let Some(&b) = self.bucket.get(position) else {
            return 0.0;
        };
        if b == MISSING {
            return NO_SHARE * self.factor;
        }
        let desired = self.desired[b as usize];
        if desired <= 0.0 {
            return NO_SHARE * self.factor;
        }
        let count = f64::from(self.count[b as usize]);
        // How far below its share the value is, in instances, against its
        // share (or one instance, when the share is less than one: with
        // 10,000 values for 10 instances, an empty value still beats one
        // that holds an instance).
        let below = (desired - count) / desired.max(1.0);
        below.clamp(-1.0, 1.0) * self.factor
    }
}

/// Each value's share of `total` instances: its target's percent, or an
/// even part of what the targets leave among the present values not
/// listed.
fn shares(spec: &SpreadSpec, values: &[&str], present: &[bool], total: f64) -> Vec<f64> {
    if spec.targets.is_empty() {
        let n = present.iter().filter(|p| **p).count();
        let even = if n == 0 { 0.0 } else { total / n as f64 };
        return vec![even; values.len()];
    }
    let listed: HashMap<&str, u32> = spec
        .targets
        .iter()
        .map(|t| (t.value.as_str(), t.percent))
        .collect();
    let sum: u32 = spec.targets.iter().map(|t| t.percent).sum();
    let left = f64::from(100u32.saturating_sub(sum)) / 100.0 * total;
    let unlisted = values
        .iter()
        .zip(present)
        .filter(|(v, p)| **p && !listed.contains_key(**v))
        .count();
    let each = if unlisted == 0 {
        0.0
    } else {
        left / unlisted as f64
    };
    values
        .iter()
        .map(|v| match listed.get(v) {
            Some(p) => f64::from(*p) / 100.0 * total,
            None => each,
        })
        .collect()
}

#[cfg(test)]
mod tests;
