//! When to plan again: a state machine fed with events and the time, that
//! answers which pass to run now. No I/O and no clock of its own: the
//! caller ([`crate::core::Core`]) feeds it, sleeps until
//! [`Trigger::next_wake`], asks [`Trigger::poll`], runs the pass it gets
//! and says [`Trigger::done`].
//!
//! The rules:
//!
//! - A capacity event arms a pass of the waiting jobs one debounce later;
//!   more events before then join it (a burst gives one pass).
//! - One pass at a time: events during a pass arm the next one, which
//!   starts no sooner than one debounce after the running one ends. The
//!   passes of waiting jobs are so at most one per debounce, however many
//!   events arrive.
//! - Only jobs marked waiting ([`Trigger::waits`]) are planned, and only
//!   after an event: a job that still does not fit is not retried until
//!   the next event or the periodic pass.
//! - The periodic full pass plans every job (the backstop: it finds what
//!   an event missed, and what waits after a leader change); one can also
//!   be asked for sooner ([`Trigger::full_soon`]: a node joined or left).
//!   A full pass serves the capacity events seen before it started.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long after a capacity event its pass runs, gathering the events
/// of a burst (an agent reporting many ended allocations, a job stop).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why capacity may have appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// A node registered (joined, or came back ready).
    NodeReady,
    /// An operator lifted a node's drain.
    DrainLifted,
    /// An allocation ended (complete, failed or lost): its resources are
    /// free.
    AllocEnded,
    /// A job was stopped, or a submission stopped some of a job's
    /// allocations (a lower count, replaced instances).
    Stopped,
}

impl Capacity {
    /// Name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Capacity::NodeReady => "node_ready",
            Capacity::DrainLifted => "drain_lifted",
            Capacity::AllocEnded => "alloc_ended",
            Capacity::Stopped => "stopped",
        }
    }
}

/// A pass to run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Plan these jobs again, by name: they wait and capacity may have
    /// appeared.
    Waiting(Vec<String>),
    /// Plan every job (the periodic reconcile pass).
    Full,
}

/// The state machine: which jobs wait, which passes are due.
#[derive(Debug)]
pub struct Trigger {
    debounce: Duration,
    period: Duration,
    /// Jobs with pending placements, as their last plan left them.
    waiting: BTreeSet<String>,
    /// When the pass for the capacity events seen so far is due.
    capacity_due: Option<Instant>,
    /// When the next full pass is due.
    full_due: Instant,
    /// A pass is running.
    busy: bool,
}

impl Trigger {
    /// A trigger whose first full pass is due at `now`, then every
    /// `period`; capacity events are gathered for `debounce`.
    pub fn new(now: Instant, period: Duration, debounce: Duration) -> Trigger {
        Trigger {
            debounce,
            period,
            waiting: BTreeSet::new(),
            capacity_due: None,
            full_due: now,
            busy: false,
        }
    }

    /// Records what the last plan of job `job` left: `waiting` when some
    /// of its instances are pending.
    pub fn waits(&mut self, job: &str, waiting: bool) {
        if waiting {
            self.waiting.insert(job.to_string());
        } else {
            self.waiting.remove(job);
        }
    }

    /// The jobs marked waiting.
    pub fn waiting(&self) -> impl Iterator<Item = &str> {
        self.waiting.iter().map(String::as_str)
    }

    /// Capacity may have appeared at `now`: arms a pass of the waiting
    /// jobs, unless one is armed already.
    pub fn capacity(&mut self, now: Instant, _why: Capacity) {
        self.capacity_due.get_or_insert(now + self.debounce);
    }

    /// Asks for a full pass one debounce after `now` (sooner than the
    /// period would bring it).
    pub fn full_soon(&mut self, now: Instant) {
        self.full_due = self.full_due.min(now + self.debounce);
    }

    /// The pass to run at `now`, if any. The caller runs it and then calls
    /// [`Trigger::done`]; until then no other pass is given.
    pub fn poll(&mut self, now: Instant) -> Option<Pass> {
        if self.busy {
            return None;
        }
        if self.full_due <= now {
            self.busy = true;
            self.full_due = now + self.period;
            self.capacity_due = None;
            return Some(Pass::Full);
        }
        if self.capacity_due.is_some_and(|due| due <= now) {
            self.capacity_due = None;
            if self.waiting.is_empty() {
                return None;
            }
            self.busy = true;
            return Some(Pass::Waiting(self.waiting.iter().cloned().collect()));
        }
        None
    }

    /// The pass given by [`Trigger::poll`] ended at `now`. Passes armed
    /// meanwhile start no sooner than one debounce later.
    pub fn done(&mut self, now: Instant) {
        self.busy = false;
        let earliest = now + self.debounce;
        if let Some(due) = &mut self.capacity_due {
            *due = (*due).max(earliest);
        }
        self.full_due = self.full_due.max(earliest);
    }

    /// When [`Trigger::poll`] may next have a pass to give; `None` while
    /// a pass runs (the caller polls again after [`Trigger::done`]).
    pub fn next_wake(&self) -> Option<Instant> {
        if self.busy {
            return None;
        }
        Some(match self.capacity_due {
            Some(due) => due.min(self.full_due),
            None => self.full_due,
        })
    }
}

#[cfg(test)]
mod tests;
