//! What is stored of a deployment and of a job's versions.
//!
//! Stored as JSON: a deployment under `deployments/<job>/<version>` (one
//! per job version whose groups' instances changed), each version of a
//! job's spec under `versions/<job>/<version>`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, UpdateSpec};

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Rolling out (or waiting for promotion).
    Running,
    /// Every instance of the new version is healthy and no old one is
    /// wanted: the version is stable.
    Successful,
    /// A deadline passed or an operator failed it: nothing more is rolled.
    Failed,
    /// A newer version's deployment took its place.
    Cancelled,
}

impl DeploymentStatus {
    /// Name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Running => "running",
            DeploymentStatus::Successful => "successful",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Cancelled => "cancelled",
        }
    }

    /// Whether it will change no more.
    pub fn is_terminal(self) -> bool {
        self != DeploymentStatus::Running
    }
}

/// The roll-out of one job version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The job.
    pub job: String,
    /// The job version it rolls out.
    pub version: u64,
    /// Its state.
    pub status: DeploymentStatus,
    /// Why it is in that state, for people.
    pub description: String,
    /// A revert to a stable version (automatic or `drover job revert`):
    /// no canary phase, and no deadline gives it up (the version it goes
    /// back to is known good; an operator fails it or submits another).
    #[serde(default)]
    pub revert: bool,
    /// The version this one reverted to after it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_to: Option<u64>,
    /// Creation time, ms since the Unix epoch.
    pub created_unix_ms: i64,
    /// Last change.
    pub modified_unix_ms: i64,
    /// Per group with an update strategy.
    pub groups: BTreeMap<String, GroupProgress>,
}

/// One group's part of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupProgress {
    /// The group's strategy, as the version says.
    pub update: UpdateSpec,
    /// Past the canary phase (or never had one).
    pub promoted: bool,
    /// When an allocation last turned healthy (or the deployment began).
    pub last_progress_unix_ms: i64,
    /// The allocations of the new version it watches, by id.
    #[serde(default)]
    pub allocs: BTreeMap<String, AllocHealth>,
}

/// What a deployment knows of one new-version allocation's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocHealth {
    /// From when its healthy deadline counts.
    pub since_unix_ms: i64,
    /// Since when it has been running with every check passing, while it
    /// has been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_since_unix_ms: Option<i64>,
    /// The deployment's verdict, once given: it does not change after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Placed as a canary.
    #[serde(default)]
    pub canary: bool,
}

impl GroupProgress {
    /// Allocations judged healthy.
    pub fn healthy(&self) -> u32 {
        count(self.allocs.values().filter(|h| h.healthy == Some(true)))
    }

    /// Allocations judged unhealthy.
    pub fn unhealthy(&self) -> u32 {
        count(self.allocs.values().filter(|h| h.healthy == Some(false)))
    }

    /// Canaries placed.
    pub fn canaries(&self) -> u32 {
        count(self.allocs.values().filter(|h| h.canary))
    }

    /// Whether every canary wanted is placed and healthy.
    pub fn canaries_healthy(&self) -> bool {
        let healthy = self
            .allocs
            .values()
            .filter(|h| h.canary && h.healthy == Some(true));
        count(healthy) >= self.update.canary
    }
}

fn count<T>(it: impl Iterator<Item = T>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

/// One version of a job's spec, kept for history and revert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobVersion {
    /// The version.
    pub version: u64,
    /// Its spec.
    pub spec: JobSpec,
    /// When it was submitted.
    pub submitted_unix_ms: i64,
    /// Its deployment succeeded (or a later version's with the same
    /// instances did): a version auto-revert may go back to.
    #[serde(default)]
    pub stable: bool,
}

/// Versions of a job kept at least: the newest ones.
pub const KEEP_VERSIONS: usize = 32;

/// Versions to drop from `kept` (version, stable), oldest first: all but
/// the newest [`KEEP_VERSIONS`], the newest stable one (auto-revert's
/// target) and those in `in_use` (versions of wanted allocations, whose
/// spec tells whether they are current), at most `max` at a time.
pub fn prune(kept: &[(u64, bool)], in_use: &BTreeSet<u64>, max: usize) -> Vec<u64> {
    let newest_stable = kept.iter().filter(|(_, s)| *s).map(|(v, _)| *v).max();
    let mut sorted: Vec<u64> = kept.iter().map(|(v, _)| *v).collect();
    sorted.sort_unstable();
    let old = sorted.len().saturating_sub(KEEP_VERSIONS);
    sorted[..old]
        .iter()
        .copied()
        .filter(|v| Some(*v) != newest_stable && !in_use.contains(v))
        .take(max)
        .collect()
}

/// The store name of `job`'s record at `version` (deployments and
/// versions alike).
pub fn version_key(job: &str, version: u64) -> String {
    format!("{job}/{version}")
}

/// The store name prefix of every record of `job`.
pub fn job_prefix(job: &str) -> String {
    format!("{job}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_the_stable_target_and_versions_in_use() {
        let kept: Vec<(u64, bool)> = (1..=40).map(|v| (v, v == 3)).collect();
        let in_use = BTreeSet::from([5]);
        assert_eq!(prune(&kept, &in_use, 100), [1, 2, 4, 6, 7, 8]);
        assert_eq!(prune(&kept, &in_use, 2), [1, 2]);
        assert!(prune(&kept[..KEEP_VERSIONS], &in_use, 100).is_empty());
    }
}
