//! Validation of a submitted [`pb::Job`] into a [`JobSpec`]: every field
//! is checked and *all* problems are reported at once, each with its path.
//!
//! Owns the rules of what a job may ask for; the types and their wire
//! conversion back live in [`super`] (and its `group` and `task` modules).
//!
//! Split by level: the job here, then [`group`] (its [`reschedule`] policy), [`service`], [`task`] and [`volume`]
//! ([`constraint`] for the constraints and affinities of any level),
//! each checking its own fields and calling the level below.

use std::collections::BTreeSet;
use std::fmt;

use drover_proto::v1 as pb;

use super::{check_dns_label, Algorithm, InvalidJob, JobKind, JobSpec};

mod constraint;
mod group;
mod periodic;
mod reschedule;
mod service;
mod spread;
mod task;
mod volume;

/// Collects problems under a path prefix.
pub(super) struct Problems {
    pub(super) list: Vec<String>,
}

impl Problems {
    pub(super) fn push(&mut self, path: &str, msg: impl fmt::Display) {
        if path.is_empty() {
            self.list.push(msg.to_string());
        } else {
            self.list.push(format!("{path}: {msg}"));
        }
    }

    pub(super) fn range(&mut self, path: &str, field: &str, v: i64, min: i64, max: i64) {
        if v < min {
            if min == 1 {
                self.push(path, format!("{field} must be > 0, got {v}"));
            } else {
                self.push(path, format!("{field} must be >= {min}, got {v}"));
            }
        } else if v > max {
            self.push(path, format!("{field} must be <= {max}, got {v}"));
        }
    }

    /// Checks the name of the `index`th (from 0) item of a list: a DNS
    /// label, unique among `seen`. Returns the item's path under `parent`:
    /// `group "web"`, or `group #2` while it has no name.
    pub(super) fn named(
        &mut self,
        parent: &str,
        what: &str,
        index: usize,
        name: &str,
        seen: &mut BTreeSet<String>,
    ) -> String {
        let sep = if parent.is_empty() { "" } else { " " };
        let path = if name.is_empty() {
            format!("{parent}{sep}{what} #{}", index + 1)
        } else {
            format!("{parent}{sep}{what} {name:?}")
        };
        if let Err(e) = check_dns_label(name) {
            self.push(&path, format!("name {e}"));
        } else if !seen.insert(name.to_owned()) {
            self.push(&path, format!("duplicate {what} name"));
        }
        path
    }
}

/// `v`, or 0 when negative (a problem reported elsewhere).
pub(super) fn clamp_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl TryFrom<&pb::Job> for JobSpec {
    type Error = InvalidJob;

    fn try_from(job: &pb::Job) -> Result<Self, InvalidJob> {
        let mut p = Problems { list: Vec::new() };
        if let Err(e) = check_dns_label(&job.name) {
            p.push("", format!("name {e}"));
        }
        // An empty kind is a service.
        let kind = match job.kind.as_str() {
            "" => Ok(JobKind::Service),
            other => JobKind::parse("kind", other),
        };
        let kind = kind.unwrap_or_else(|e| {
            p.push(
                "",
                format!(
                    "kind {:?} is not one of \"service\", \"batch\", \"system\"",
                    e.value
                ),
            );
            JobKind::Service
        });
        if job.groups.is_empty() {
            p.push("", "a job needs at least one [[group]]");
        }
        let mut seen = BTreeSet::new();
        let mut services = BTreeSet::new();
        let groups = job
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| group::group(&mut p, kind, i, g, &mut seen, &mut services))
            .collect();
        let constraints = constraint::constraints(&mut p, "", &job.constraints);
        let affinities = constraint::affinities(&mut p, "", &job.affinities);
        let periodic = job
            .periodic
            .as_ref()
            .and_then(|pe| periodic::periodic(&mut p, kind, pe));
        let algorithm = match job.algorithm.as_str() {
            "" => None,
            other => Algorithm::parse(other).or_else(|| {
                p.push(
                    "",
                    format!("algorithm {other:?} is not one of \"binpack\", \"spread\""),
                );
                None
            }),
        };
        let spreads = spread::spreads(&mut p, "", &job.spreads);
        if !p.list.is_empty() {
            return Err(InvalidJob { problems: p.list });
        }
        Ok(JobSpec {
            name: job.name.clone(),
            kind,
            groups,
            constraints,
            affinities,
            periodic,
            algorithm,
            spreads,
        })
    }
}
