//! The image cache in the node policy: how long an unpacked layer that no
//! task uses stays cached, and how much disk the cache may take before the
//! least recently used unused layers go. A layer that a task directory on
//! the node names (running, or ended but still restartable until its
//! allocation is garbage-collected) is never removed, whatever the budget.
//!
//! ```toml
//! [images]
//! # Unused layers are removed once unused this long ("0s": as soon as
//! # the last task using them is removed; units s, m, h, d).
//! gc_unused_after = "24h"
//! # Above this many MiB of unpacked layers, the least recently used
//! # unused ones are removed until the cache fits.
//! max_cache_mb = 10240
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The image cache's bounds (`[images]` in the policy file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePolicy {
    /// How long an unused layer stays; zero (the default, as before this
    /// setting existed): it goes with the last task directory naming it.
    #[serde(deserialize_with = "duration")]
    pub gc_unused_after: Duration,
    /// The budget of unpacked layers in MiB; `None`: no budget.
    pub max_cache_mb: Option<u64>,
}

impl ImagePolicy {
    /// Checks the settings: a budget of zero would leave nothing cached
    /// between two starts.
    pub fn check(&self) -> Result<(), String> {
        if self.max_cache_mb == Some(0) {
            return Err("images.max_cache_mb must be at least 1 (omit it for no budget)".into());
        }
        Ok(())
    }

    /// The budget in bytes.
    pub fn max_cache_bytes(&self) -> Option<u64> {
        self.max_cache_mb.map(|mb| mb.saturating_mul(1 << 20))
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `"90s"`, `"30m"`, `"24h"`, `"7d"` (a whole number and one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"90s\", \"30m\", \"24h\" or \"7d\""))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?}: unit {unit:?} is not one of s, m, h, d (e.g. \"24h\")"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_budget() {
        let p: ImagePolicy = toml::from_str("gc_unused_after = \"24h\"\nmax_cache_mb = 5").unwrap();
        assert_eq!(p.gc_unused_after, Duration::from_secs(86_400));
        assert_eq!(p.max_cache_bytes(), Some(5 << 20));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("24").unwrap_err().contains("unit"));
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
        assert!(toml::from_str::<ImagePolicy>("gc_unused_after = \"1y\"").is_err());
        let zero = ImagePolicy {
            max_cache_mb: Some(0),
            ..ImagePolicy::default()
        };
        assert!(zero.check().unwrap_err().contains("max_cache_mb"));
    }
}
