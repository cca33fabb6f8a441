//! What `container-bench` and `image-bench` (bench/image) share: the
//! statistics of a list of wall times.

use std::time::Duration;

/// The median of `t` (sorted in place).
pub fn median(t: &mut [Duration]) -> Duration {
    percentile(t, 50)
}

/// The `p`th percentile of `t` (nearest rank; sorted in place).
///
/// # Panics
///
/// When `t` is empty.
pub fn percentile(t: &mut [Duration], p: usize) -> Duration {
    t.sort_unstable();
    let idx = (t.len() * p).div_ceil(100).saturating_sub(1);
    t[idx.min(t.len() - 1)]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
