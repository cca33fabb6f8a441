//! The wall clock as records carry it: milliseconds since the Unix epoch.
//!
//! Stored records (`created_unix_ms`, `last_seen_unix_ms`, ...) and
//! heartbeats use it. Pure code takes the time as an argument instead of
//! calling this (style habit 7).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970, and
/// `i64::MAX` past the year 292 million.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_after_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }
}
