//! The types of allocation events (`AllocEvent.type`): what the scheduler
//! and the agents record of each allocation's life. Shown as they are in
//! `drover alloc status` and `drover events`, in the manner of Nomad's
//! task events ("Started", "Restarting", "Terminated"...).

use std::fmt;

/// What happened to an allocation or one of its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The scheduler placed it on a node.
    Placed,
    /// The scheduler placed it to replace a failed allocation.
    Rescheduled,
    /// The scheduler replaced it (after it failed) with another one.
    Replaced,
    /// A task started (or started again after a restart).
    Started,
    /// A task's process ended, with its exit code or signal.
    Exited,
    /// The kernel's OOM killer killed a task.
    OomKilled,
    /// A task will be started again after its restart delay.
    Restarting,
    /// A task ended and its restart policy starts it no more.
    NotRestarting,
    /// The node's policy refused what the allocation asks for.
    Refused,
    /// A task could not be started (for another reason than the policy).
    Failed,
    /// A health check turned passing.
    CheckPassing,
    /// A health check turned critical.
    CheckFailing,
    /// The scheduler asked for its stop (with why).
    StopRequested,
    /// It stopped as asked.
    Stopped,
    /// Its node was lost.
    Lost,
    /// It ended for good, every task successfully.
    Complete,
    /// A task's image is being pulled from its registry (the start of the
    /// pull, then its progress: layers and bytes done).
    Pulling,
    /// A task's image was pulled (its digest, size and time).
    Pulled,
}

impl EventType {
    /// Every type, in declaration order.
    pub const ALL: &'static [EventType] = &[
        EventType::Placed,
        EventType::Rescheduled,
        EventType::Replaced,
        EventType::Started,
        EventType::Exited,
        EventType::OomKilled,
        EventType::Restarting,
        EventType::NotRestarting,
        EventType::Refused,
        EventType::Failed,
        EventType::CheckPassing,
        EventType::CheckFailing,
        EventType::StopRequested,
        EventType::Stopped,
        EventType::Lost,
        EventType::Complete,
        EventType::Pulling,
        EventType::Pulled,
    ];

    /// Its name on the wire, in the store and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Placed => "Placed",
            EventType::Rescheduled => "Rescheduled",
            EventType::Replaced => "Replaced",
            EventType::Started => "Started",
            EventType::Exited => "Exited",
            EventType::OomKilled => "OOM Killed",
            EventType::Restarting => "Restarting",
            EventType::NotRestarting => "Not Restarting",
            EventType::Refused => "Refused",
            EventType::Failed => "Failed",
            EventType::CheckPassing => "Check Passing",
            EventType::CheckFailing => "Check Failing",
            EventType::StopRequested => "Stop Requested",
            EventType::Stopped => "Stopped",
            EventType::Lost => "Lost",
            EventType::Complete => "Complete",
            EventType::Pulling => "Pulling",
            EventType::Pulled => "Pulled",
        }
    }

    /// The type named `s`, if it is one.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventType;

    #[test]
    fn every_type_parses_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::parse("started"), None);
    }
}
