//! A group's `disconnect` policy: what a node that has lost its scheduler
//! does with the group's allocations. Without one they keep running for
//! as long as the node is cut off (the scheduler replaces them elsewhere
//! once the node is down, and the node stops its copies when it comes
//! back). With `stop_after_ms`, the node stops its own copies once it has
//! been without a scheduler that long, so that a partitioned node does not
//! keep serving next to the replacements.

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// Shortest `stop_after_ms`: below a second, a scheduler restart or a
/// brief network hiccup would stop work.
pub const MIN_DISCONNECT_STOP_AFTER_MS: i64 = 1_000;
/// Longest `stop_after_ms`: a week.
pub const MAX_DISCONNECT_STOP_AFTER_MS: i64 = 7 * 24 * 3_600_000;

/// A validated disconnect policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectPolicy {
    /// A node without a scheduler for this long stops its copies.
    pub stop_after_ms: u64,
}

impl From<&DisconnectPolicy> for pb::DisconnectPolicy {
    fn from(d: &DisconnectPolicy) -> pb::DisconnectPolicy {
        pb::DisconnectPolicy {
            stop_after_ms: i64::try_from(d.stop_after_ms).unwrap_or(i64::MAX),
        }
    }
}
