//! A node cut off from its scheduler stops its copies of the groups that
//! ask for it (`disconnect = { stop_after_ms = N }`): the scheduler has
//! likely declared the node down and placed replacements elsewhere, and
//! two copies of a singleton must not serve side by side for long.
//!
//! [`plan_disconnected`] is pure: given the assignments last received and
//! how long the scheduler has been away, it returns them with the ones
//! due marked desired stop, or `None` when nothing changes.
//! [`Allocs::stop_disconnected`] converges on that list, so the stop goes
//! the usual way (kill timeout, final status kept and reported on the
//! next session).

use std::time::Duration;

use super::Allocs;
use crate::assignment::{Assignment, DesiredState};

/// The assignments with those whose group's `stop_after_disconnect` has
/// passed (`away`: how long the scheduler has been lost) turned desired
/// stop; `None` when none is newly due.
pub fn plan_disconnected(assignments: &[Assignment], away: Duration) -> Option<Vec<Assignment>> {
    let due = |a: &Assignment| {
        a.alloc.desired == DesiredState::Run
            && a.group
                .stop_after_disconnect
                .is_some_and(|after| away >= after)
    };
    if !assignments.iter().any(due) {
        return None;
    }
    Some(
        assignments
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if due(&a) {
                    a.alloc.desired = DesiredState::Stop;
                }
                a
            })
            .collect(),
    )
}

impl Allocs {
    /// Stops the allocations whose group asks to be stopped after the
    /// scheduler has been lost for `away`. Returns how many were asked to
    /// stop.
    pub async fn stop_disconnected(&mut self, away: Duration) -> usize {
        let current: Vec<Assignment> = self
            .state
            .allocs
            .values()
            .map(|t| t.assignment.clone())
            .collect();
        let Some(next) = plan_disconnected(&current, away) else {
            return 0;
        };
        let due: Vec<&str> = current
            .iter()
            .zip(&next)
            .filter(|(a, b)| a.alloc.desired != b.alloc.desired)
            .map(|(a, _)| a.alloc.id.as_str())
            .collect();
        let n = due.len();
        tracing::warn!(allocations = ?due, away_ms = away.as_millis() as u64, "scheduler lost past the groups' disconnect.stop_after_ms; stopping their allocations");
        self.converge(&next, &[]).await;
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::assignment::{AllocStatus, Allocation, Group, JobKind, NetworkMode, RestartPolicy};

    fn assignment(id: &str, after: Option<u64>) -> Assignment {
        Assignment {
            alloc: Allocation {
                id: id.into(),
                name: format!("j.g[{id}]"),
                job: "j".into(),
                group: "g".into(),
                index: 0,
                desired: DesiredState::Run,
                status: AllocStatus::Running,
            },
            group: Group {
                name: "g".into(),
                tasks: Vec::new(),
                restart: RestartPolicy::default(),
                network: NetworkMode::None,
                services: Vec::new(),
                stop_after_disconnect: after.map(Duration::from_millis),
            },
            job_kind: JobKind::Service,
        }
    }

    #[test]
    fn only_groups_past_their_stop_after_are_stopped() {
        let all = vec![
            assignment("keep", None),
            assignment("soon", Some(2_000)),
            assignment("later", Some(10_000)),
        ];
        assert!(plan_disconnected(&all, Duration::from_millis(1_999)).is_none());
        let next = plan_disconnected(&all, Duration::from_millis(2_000)).unwrap();
        let desired: Vec<_> = next.iter().map(|a| a.alloc.desired).collect();
        assert_eq!(
            desired,
            [DesiredState::Run, DesiredState::Stop, DesiredState::Run]
        );
        // Once marked stop it is not due again; the later one comes due.
        assert!(plan_disconnected(&next, Duration::from_millis(9_000)).is_none());
        let last = plan_disconnected(&next, Duration::from_secs(60)).unwrap();
        assert_eq!(last[2].alloc.desired, DesiredState::Stop);
        assert_eq!(last[0].alloc.desired, DesiredState::Run);
    }
}
