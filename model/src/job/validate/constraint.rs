//! Constraints and affinities of a job, a group or a task: each is parsed
//! and compiled here (a regex, a version requirement), so a bad one is
//! refused at submission with its path: `group "web" constraint 0: ...`.

use drover_proto::v1 as pb;

use super::Problems;
use crate::job::{Affinity, AffinityFields, Constraint, ConstraintFields, MAX_CONSTRAINTS};

/// Joins a parent path and an item: `group "web" constraint 0`.
fn item(parent: &str, what: &str, index: usize) -> String {
    if parent.is_empty() {
        format!("{what} {index}")
    } else {
        format!("{parent} {what} {index}")
    }
}

/// Checks the constraints at `path` (empty for the job).
pub(super) fn constraints(
    p: &mut Problems,
    path: &str,
    list: &[pb::Constraint],
) -> Vec<Constraint> {
    if list.len() > MAX_CONSTRAINTS {
        p.push(
            path,
            format!(
                "{} constraints, at most {MAX_CONSTRAINTS} allowed",
                list.len()
            ),
        );
        return Vec::new();
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, c)| match Constraint::new(ConstraintFields::from(c)) {
            Ok(c) => Some(c),
            Err(e) => {
                p.push(&item(path, "constraint", i), e);
                None
            }
        })
        .collect()
}

/// Checks the affinities at `path` (empty for the job).
pub(super) fn affinities(p: &mut Problems, path: &str, list: &[pb::Affinity]) -> Vec<Affinity> {
    if list.len() > MAX_CONSTRAINTS {
        p.push(
            path,
            format!(
                "{} affinities, at most {MAX_CONSTRAINTS} allowed",
                list.len()
            ),
        );
        return Vec::new();
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| match Affinity::new(AffinityFields::from(a)) {
            Ok(a) => Some(a),
            Err(e) => {
                p.push(&item(path, "affinity", i), e);
                None
            }
        })
        .collect()
}
