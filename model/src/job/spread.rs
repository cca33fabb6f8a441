//! Spreading a group's instances over the values of a node property, and
//! the scoring algorithm a job asks for: the validated types, their limits
//! and their wire form. Validation is in `validate::spread`; the scoring in
//! the scheduler's `placement::spread`.

use std::fmt;

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::Target;

/// Weight of a spread whose job file names none.
pub const DEFAULT_SPREAD_WEIGHT: u32 = 50;
/// Largest weight of a spread.
pub const MAX_SPREAD_WEIGHT: i64 = 100;
/// Most spreads at one level (job or group).
pub const MAX_SPREADS: usize = 8;
/// Most targets of one spread.
pub const MAX_SPREAD_TARGETS: usize = 128;
/// Longest target value, in bytes.
pub const MAX_SPREAD_VALUE: usize = 256;

/// How instances are spread over the values of one node property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadSpec {
    /// The node property.
    pub attribute: Target,
    /// 1..=100: how much this spread counts; 50 counts as much as
    /// bin-packing.
    pub weight: u32,
    /// Wanted shares per value (percentages summing to at most 100);
    /// empty means an even share for every value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<SpreadTarget>,
}

/// The share of a group one value of a spread's property should get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadTarget {
    /// The property's value.
    pub value: String,
    /// 0..=100, percent of the group's count.
    pub percent: u32,
}

/// How a job's nodes are scored beyond its spreads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Prefer the fullest node that fits, keeping whole nodes free for
    /// large instances (the default).
    #[default]
    #[serde(rename = "binpack")]
    BinPack,
    /// Prefer the emptiest node, spreading load over the cluster.
    Spread,
}

impl Algorithm {
    /// Its name in job files, flags and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::BinPack => "binpack",
            Algorithm::Spread => "spread",
        }
    }

    /// Parses a name as [`Algorithm::as_str`] gives it.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "binpack" => Some(Algorithm::BinPack),
            "spread" => Some(Algorithm::Spread),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Algorithm, String> {
        Algorithm::parse(s).ok_or_else(|| format!("{s:?} is not one of \"binpack\", \"spread\""))
    }
}

impl From<&SpreadSpec> for pb::Spread {
    fn from(s: &SpreadSpec) -> pb::Spread {
        pb::Spread {
            attribute: s.attribute.to_string(),
            weight: i64::from(s.weight),
            targets: s
                .targets
                .iter()
                .map(|t| pb::SpreadTarget {
                    value: t.value.clone(),
                    percent: i64::from(t.percent),
                })
                .collect(),
        }
    }
}
