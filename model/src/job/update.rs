//! A group's update strategy (`update = { ... }` in a job file): how a
//! changed group is rolled out as a deployment, its defaults (Nomad's), its
//! validation with paths and its wire form.
//!
//! A group without one keeps the behaviour from before deployments
//! existed: a changed group's allocations are all replaced at once and no
//! deployment is recorded. Only `service` jobs take one (batch instances
//! run to completion, system jobs follow their nodes).

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::validate::Problems;
use super::JobKind;

/// [`UpdateSpec::max_parallel`] when a job file does not say.
pub const DEFAULT_MAX_PARALLEL: i64 = 1;
/// [`UpdateSpec::min_healthy_time_ms`] when a job file does not say (10 s).
pub const DEFAULT_MIN_HEALTHY_TIME_MS: i64 = 10_000;
/// [`UpdateSpec::healthy_deadline_ms`] when a job file does not say (5 min).
pub const DEFAULT_HEALTHY_DEADLINE_MS: i64 = 300_000;
/// [`UpdateSpec::progress_deadline_ms`] when a job file does not say (10 min).
pub const DEFAULT_PROGRESS_DEADLINE_MS: i64 = 600_000;
/// Upper bound on every duration of an update strategy (1 day).
pub const MAX_UPDATE_DURATION_MS: i64 = 86_400_000;

/// A validated update strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSpec {
    /// New-version allocations in flight at a time (placed, not yet
    /// healthy); an old allocation is stopped only once its replacement is
    /// healthy.
    pub max_parallel: u32,
    /// New-version allocations placed beside the old ones before the
    /// deployment is promoted; 0 means no canary phase.
    pub canary: u32,
    /// How long checks must pass (or the allocation run, without checks)
    /// before it counts healthy.
    pub min_healthy_time_ms: u64,
    /// An allocation not healthy this long after its placement is
    /// unhealthy.
    pub healthy_deadline_ms: u64,
    /// A deployment with no allocation turning healthy for this long
    /// fails; 0: none, the first unhealthy allocation fails it.
    pub progress_deadline_ms: u64,
    /// A failed deployment reverts to the last stable version.
    pub auto_revert: bool,
    /// Promotes once every canary is healthy.
    pub auto_promote: bool,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        UpdateSpec {
            max_parallel: DEFAULT_MAX_PARALLEL as u32,
            canary: 0,
            min_healthy_time_ms: DEFAULT_MIN_HEALTHY_TIME_MS as u64,
            healthy_deadline_ms: DEFAULT_HEALTHY_DEADLINE_MS as u64,
            progress_deadline_ms: DEFAULT_PROGRESS_DEADLINE_MS as u64,
            auto_revert: false,
            auto_promote: false,
        }
    }
}

impl From<&UpdateSpec> for pb::UpdateStrategy {
    fn from(u: &UpdateSpec) -> pb::UpdateStrategy {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        pb::UpdateStrategy {
            max_parallel: i64::from(u.max_parallel),
            canary: i64::from(u.canary),
            min_healthy_time_ms: ms(u.min_healthy_time_ms),
            healthy_deadline_ms: ms(u.healthy_deadline_ms),
            progress_deadline_ms: ms(u.progress_deadline_ms),
            auto_revert: u.auto_revert,
            auto_promote: u.auto_promote,
        }
    }
}

/// Checks the update strategy of the group at `gpath` (a group of `count`
/// instances in a job of `kind`), pushing every problem with its path
/// (`group "web": update.max_parallel must be > 0, got 0`).
pub(super) fn validate(
    p: &mut Problems,
    gpath: &str,
    kind: JobKind,
    count: i64,
    u: &pb::UpdateStrategy,
) -> UpdateSpec {
    if kind != JobKind::Service {
        p.push(
            gpath,
            format!(
                "update applies to service jobs only, this job is {:?}",
                kind.as_str()
            ),
        );
    }
    let max = MAX_UPDATE_DURATION_MS;
    p.range(
        gpath,
        "update.max_parallel",
        u.max_parallel,
        1,
        i64::from(u32::MAX),
    );
    p.range(gpath, "update.canary", u.canary, 0, count.max(0));
    p.range(
        gpath,
        "update.min_healthy_time_ms",
        u.min_healthy_time_ms,
        0,
        max,
    );
    p.range(
        gpath,
        "update.healthy_deadline_ms",
        u.healthy_deadline_ms,
        1,
        max,
    );
    p.range(
        gpath,
        "update.progress_deadline_ms",
        u.progress_deadline_ms,
        0,
        max,
    );
    if u.healthy_deadline_ms <= u.min_healthy_time_ms {
        p.push(
            gpath,
            format!(
                "update.healthy_deadline_ms ({}) must be longer than update.min_healthy_time_ms ({})",
                u.healthy_deadline_ms, u.min_healthy_time_ms
            ),
        );
    }
    if u.progress_deadline_ms != 0 && u.progress_deadline_ms < u.healthy_deadline_ms {
        p.push(
            gpath,
            format!(
                "update.progress_deadline_ms ({}) must be 0 or at least update.healthy_deadline_ms ({})",
                u.progress_deadline_ms, u.healthy_deadline_ms
            ),
        );
    }
    if u.auto_promote && u.canary == 0 {
        p.push(gpath, "update.auto_promote needs update.canary > 0");
    }
    let ms = |v: i64| u64::try_from(v).unwrap_or(0);
    UpdateSpec {
        max_parallel: u32::try_from(u.max_parallel).unwrap_or(1).max(1),
        canary: u32::try_from(u.canary).unwrap_or(0),
        min_healthy_time_ms: ms(u.min_healthy_time_ms),
        healthy_deadline_ms: ms(u.healthy_deadline_ms),
        progress_deadline_ms: ms(u.progress_deadline_ms),
        auto_revert: u.auto_revert,
        auto_promote: u.auto_promote,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn check(kind: JobKind, count: i64, u: &pb::UpdateStrategy) -> Vec<String> {
        let mut p = Problems { list: Vec::new() };
        validate(&mut p, "group \"web\"", kind, count, u);
        p.list
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let u = UpdateSpec::default();
        let wire = pb::UpdateStrategy::from(&u);
        assert!(check(JobKind::Service, 3, &wire).is_empty());
        let mut p = Problems { list: Vec::new() };
        assert_eq!(validate(&mut p, "", JobKind::Service, 3, &wire), u);
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let bad = pb::UpdateStrategy {
            max_parallel: 0,
            canary: 4,
            min_healthy_time_ms: 5_000,
            healthy_deadline_ms: 1_000,
            progress_deadline_ms: 500,
            auto_revert: true,
            auto_promote: false,
        };
        let list = check(JobKind::Batch, 3, &bad);
        let want = [
            "group \"web\": update applies to service jobs only",
            "group \"web\": update.max_parallel must be > 0, got 0",
            "group \"web\": update.canary must be <= 3, got 4",
            "update.healthy_deadline_ms (1000) must be longer than update.min_healthy_time_ms (5000)",
            "update.progress_deadline_ms (500) must be 0 or at least",
        ];
        for w in want {
            assert!(list.iter().any(|l| l.contains(w)), "{w:?} not in {list:?}");
        }
        let promote = pb::UpdateStrategy {
            auto_promote: true,
            ..pb::UpdateStrategy::from(&UpdateSpec::default())
        };
        assert_eq!(
            check(JobKind::Service, 3, &promote),
            ["group \"web\": update.auto_promote needs update.canary > 0"]
        );
    }
}
