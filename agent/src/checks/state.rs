//! The verdict of one health check from its run results: pure, no I/O.
//!
//! - A check starts [`CheckStatus::Pending`] (no verdict yet).
//! - `success_before_passing` successes in a row make it
//!   [`CheckStatus::Passing`], from pending or critical.
//! - `failures_before_critical` failures in a row make it
//!   [`CheckStatus::Critical`], from passing or pending: a check that never
//!   passes goes critical and is never passing.
//! - A result of the other kind breaks a streak; one of the same kind as
//!   the status keeps it.

use drover_model::CheckStatus;

/// One check's verdict and its current streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    status: CheckStatus,
    /// Successes in a row, up to the last result.
    successes: u32,
    /// Failures in a row, up to the last result.
    failures: u32,
    success_before_passing: u32,
    failures_before_critical: u32,
}

impl Verdict {
    /// A pending check with these thresholds (a threshold of 0 counts as 1).
    pub fn new(success_before_passing: u32, failures_before_critical: u32) -> Verdict {
        Verdict {
            status: CheckStatus::Pending,
            successes: 0,
            failures: 0,
            success_before_passing: success_before_passing.max(1),
            failures_before_critical: failures_before_critical.max(1),
        }
    }

    /// The verdict now.
    pub fn status(&self) -> CheckStatus {
        self.status
    }

    /// Takes in one run's result; returns the new status when it changed.
    pub fn record(&mut self, passed: bool) -> Option<CheckStatus> {
        let before = self.status;
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.success_before_passing {
                self.status = CheckStatus::Passing;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.failures_before_critical {
                self.status = CheckStatus::Critical;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckStatus::{Critical, Passing, Pending};

    /// The status after each result of `runs` ('+' passed, '-' failed).
    fn trace(v: &mut Verdict, runs: &str) -> Vec<CheckStatus> {
        runs.chars()
            .map(|c| {
                v.record(c == '+');
                v.status()
            })
            .collect()
    }

    #[test]
    fn starts_pending_and_passes_after_the_successes_asked_for() {
        let mut v = Verdict::new(3, 2);
        assert_eq!(v.status(), Pending);
        assert_eq!(trace(&mut v, "++"), [Pending, Pending]);
        assert_eq!(v.record(true), Some(Passing));
        assert_eq!(v.record(true), None, "passing stays passing");
    }

    #[test]
    fn one_success_is_enough_with_a_threshold_of_one() {
        let mut v = Verdict::new(1, 1);
        assert_eq!(v.record(true), Some(Passing));
    }

    #[test]
    fn a_failure_breaks_a_streak_of_successes_while_pending() {
        let mut v = Verdict::new(2, 3);
        assert_eq!(trace(&mut v, "+-+"), [Pending, Pending, Pending]);
        assert_eq!(v.record(true), Some(Passing));
    }

    #[test]
    fn passing_turns_critical_after_the_failures_asked_for_not_before() {
        let mut v = Verdict::new(1, 3);
        v.record(true);
        assert_eq!(trace(&mut v, "--"), [Passing, Passing]);
        assert_eq!(v.record(false), Some(Critical));
        assert_eq!(v.record(false), None, "critical stays critical");
    }

    #[test]
    fn a_success_breaks_a_streak_of_failures_while_passing() {
        let mut v = Verdict::new(1, 2);
        assert_eq!(
            trace(&mut v, "+-+-+-"),
            [Passing, Passing, Passing, Passing, Passing, Passing]
        );
        assert_eq!(trace(&mut v, "-"), [Critical]);
    }

    #[test]
    fn a_check_that_never_passes_goes_critical_from_pending_and_never_passing() {
        let mut v = Verdict::new(1, 2);
        assert_eq!(v.record(false), None);
        assert_eq!(v.record(false), Some(Critical));
        let mut seen = trace(&mut v, "----------");
        seen.dedup();
        assert_eq!(seen, [Critical]);
    }

    #[test]
    fn critical_passes_again_after_the_successes_asked_for() {
        let mut v = Verdict::new(2, 1);
        assert_eq!(v.record(false), Some(Critical));
        assert_eq!(trace(&mut v, "+-+"), [Critical, Critical, Critical]);
        assert_eq!(v.record(true), Some(Passing));
        assert_eq!(v.record(false), Some(Critical));
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut v = Verdict::new(0, 0);
        assert_eq!(v.record(true), Some(Passing));
        assert_eq!(v.record(false), Some(Critical));
    }
}
