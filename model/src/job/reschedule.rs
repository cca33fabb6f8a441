//! A group's reschedule policy: when an allocation that failed on its node
//! (its restart policy exhausted) is replaced by a new one, placed anew.
//!
//! The delay before a replacement starts at `delay_ms` and doubles with
//! each attempt up to `max_delay_ms`; `attempts` replacements are allowed
//! within any `interval_ms` (or any number with `unlimited`). Defaults
//! follow Nomad's: services 30 s doubling up to 1 h, unlimited; batch
//! jobs one attempt per 24 h after 5 s. System jobs are not rescheduled:
//! their instances belong to their node. The decision itself is the
//! scheduler's (`drover_scheduler::reschedule`); this is the validated
//! policy and its wire form.

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::JobKind;

/// Upper bound on `reschedule.attempts` (each attempt within the interval
/// is remembered on the replacement's record).
pub const MAX_RESCHEDULE_ATTEMPTS: i64 = 100;
/// Lower bound on `reschedule.delay_ms`: a failing command is never
/// replaced in a tight loop.
pub const MIN_RESCHEDULE_DELAY_MS: i64 = 100;
/// Upper bound on `reschedule.delay_ms` and `reschedule.max_delay_ms` (1 day).
pub const MAX_RESCHEDULE_DELAY_MS: i64 = 86_400_000;
/// Upper bound on `reschedule.interval_ms` (30 days).
pub const MAX_RESCHEDULE_INTERVAL_MS: i64 = 30 * 86_400_000;

/// How a group's failed allocations are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReschedulePolicy {
    /// Replacements allowed within `interval_ms` (ignored when
    /// `unlimited`); 0 with `unlimited = false` turns rescheduling off.
    pub attempts: u32,
    /// The window `attempts` is counted in, ms.
    pub interval_ms: u64,
    /// Delay before the first replacement, ms; doubles per attempt.
    pub delay_ms: u64,
    /// Ceiling of the delay, ms.
    pub max_delay_ms: u64,
    /// Replace without limit.
    pub unlimited: bool,
}

impl ReschedulePolicy {
    /// The policy a group gets when its job names none; `None` for system
    /// jobs, which are not rescheduled.
    pub fn default_for(kind: JobKind) -> Option<ReschedulePolicy> {
        match kind {
            JobKind::Service => Some(ReschedulePolicy {
                attempts: 0,
                interval_ms: 0,
                delay_ms: 30_000,
                max_delay_ms: 3_600_000,
                unlimited: true,
            }),
            JobKind::Batch => Some(ReschedulePolicy {
                attempts: 1,
                interval_ms: 86_400_000,
                delay_ms: 5_000,
                max_delay_ms: 5_000,
                unlimited: false,
            }),
            JobKind::System => None,
        }
    }

    /// Whether failed allocations are replaced at all.
    pub fn enabled(&self) -> bool {
        self.unlimited || self.attempts > 0
    }

    /// The delay before replacement number `attempt` (from 1) of an
    /// unbroken run of failures: `delay_ms` doubled `attempt - 1` times,
    /// at most `max_delay_ms`.
    pub fn delay(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(63);
        self.delay_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay_ms)
    }

    /// The sum of the delays of the first `attempts` replacements: the
    /// least time they take, which must fit in `interval_ms` for the limit
    /// to ever be reached.
    pub fn delays_total(&self) -> u64 {
        (1..=self.attempts).fold(0u64, |t, n| t.saturating_add(self.delay(n)))
    }
}

impl From<&ReschedulePolicy> for pb::ReschedulePolicy {
    fn from(p: &ReschedulePolicy) -> pb::ReschedulePolicy {
        let ms = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
        pb::ReschedulePolicy {
            attempts: Some(i64::from(p.attempts)),
            interval_ms: ms(p.interval_ms),
            delay_ms: ms(p.delay_ms),
            max_delay_ms: ms(p.max_delay_ms),
            unlimited: Some(p.unlimited),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn service_delays_double_from_30_s_up_to_one_hour() {
        let p = ReschedulePolicy::default_for(JobKind::Service).unwrap();
        let delays: Vec<u64> = (1..=9).map(|n| p.delay(n)).collect();
        assert_eq!(
            delays,
            [30_000, 60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000]
        );
        assert_eq!(p.delay(u32::MAX), 3_600_000, "no overflow far out");
        assert!(p.enabled());
    }

    #[test]
    fn batch_is_one_attempt_a_day_and_system_is_never_rescheduled() {
        let p = ReschedulePolicy::default_for(JobKind::Batch).unwrap();
        assert_eq!((p.attempts, p.unlimited), (1, false));
        assert_eq!((p.delay(1), p.delay(2)), (5_000, 5_000));
        assert!(p.delays_total() <= p.interval_ms);
        assert_eq!(ReschedulePolicy::default_for(JobKind::System), None);
        let off = ReschedulePolicy { attempts: 0, ..p };
        assert!(!off.enabled());
    }
}
