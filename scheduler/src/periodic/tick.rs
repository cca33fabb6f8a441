//! The pure rules of periodic launches: which tick is due at a given time,
//! whether an overlap skips it, when to wake next, and which finished
//! children to remove. No I/O and no clock: the time is an argument.

use serde::{Deserialize, Serialize};

use crate::job::Schedule;

/// Finished children kept per periodic job; older finished ones are
/// removed with their allocations.
pub const KEEP_CHILDREN: usize = 10;
/// Children of one periodic job that may run at once, overlap allowed or
/// not: past it a tick is skipped, so children that never finish (or never
/// find a node) cannot pile up in the store.
pub const MAX_RUNNING_CHILDREN: usize = 100;

/// A periodic job's launch state, stored under `periodic/<job>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    /// The last tick handled (launched, or skipped for an overlap), in
    /// unix seconds: no tick at or before it is launched again.
    pub last_tick_unix: i64,
    /// The last child launched, by a tick or forced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_child: String,
}

/// The tick to handle now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Launch a child for this tick.
    Launch(i64),
    /// Skip this tick: a child launched earlier still runs and the job
    /// prohibits overlap, or [`MAX_RUNNING_CHILDREN`] run.
    Skip(i64),
}

impl Due {
    /// The tick, in unix seconds.
    pub fn tick(self) -> i64 {
        match self {
            Due::Launch(t) | Due::Skip(t) => t,
        }
    }
}

/// What a periodic job needs at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The latest tick due, if any; older missed ones are dropped, never
    /// launched in a burst.
    pub due: Option<Due>,
    /// Whether earlier ticks were missed and dropped (e.g. the scheduler
    /// was down across several).
    pub dropped: bool,
    /// The first tick after now: when to look again.
    pub next: Option<i64>,
}

/// The first moment from which ticks count: after the last tick handled,
/// and after the job's current version was submitted (a tick before a
/// submission is not the submitted job's).
pub fn since(record: Option<&LaunchRecord>, submitted_unix_ms: i64) -> i64 {
    let last = record.map(|r| r.last_tick_unix).unwrap_or(i64::MIN);
    last.max(submitted_unix_ms.div_euclid(1000))
}

/// Which tick of `schedule` is due at `now` when ticks up to `since` are
/// handled: the latest tick in `(since, now]`, skipped when `running`
/// children run and the job prohibits overlap, or too many run.
pub fn decide(
    schedule: &Schedule,
    since: i64,
    now: i64,
    prohibit_overlap: bool,
    running: usize,
) -> Decision {
    let latest = schedule.latest_at_or_before(now).filter(|t| *t > since);
    let due = latest.map(|t| {
        if (prohibit_overlap && running > 0) || running >= MAX_RUNNING_CHILDREN {
            Due::Skip(t)
        } else {
            Due::Launch(t)
        }
    });
    let dropped = latest.is_some_and(|t| schedule.next_after(since).is_some_and(|first| first < t));
    Decision {
        due,
        dropped,
        next: schedule.next_after(now),
    }
}

/// One child of a periodic job, as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child<'a> {
    /// Its job name.
    pub name: &'a str,
    /// Its tick (from its name).
    pub tick: i64,
    /// Whether it is over: not running, and no allocation of it live.
    pub finished: bool,
}

/// The children to remove: finished ones past the newest `keep` finished
/// (by tick), oldest first. Running children are never removed.
pub fn to_prune<'a>(children: &[Child<'a>], keep: usize) -> Vec<&'a str> {
    let mut finished: Vec<&Child<'a>> = children.iter().filter(|c| c.finished).collect();
    finished.sort_by(|a, b| b.tick.cmp(&a.tick).then(b.name.cmp(a.name)));
    let mut out: Vec<&Child<'a>> = finished.into_iter().skip(keep).collect();
    out.reverse();
    out.into_iter().map(|c| c.name).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// 2023-11-14T22:13:20Z, a multiple of 10 s.
    const T0: i64 = 1_700_000_000;

    fn every_10s() -> Schedule {
        Schedule::new("*/10 * * * * *", "UTC").expect("schedule")
    }

    /// A fake clock driving the rules as the launcher does: wake at each
    /// `next`, handle what is due, record it. Children run `runs` seconds.
    /// Returns the ticks launched and the ticks skipped, up to `end`.
    fn simulate(s: &Schedule, end: i64, runs: i64, prohibit: bool) -> (Vec<i64>, Vec<i64>) {
        let mut record = LaunchRecord::default();
        let (mut launched, mut skipped) = (Vec::new(), Vec::new());
        let mut now = T0;
        let mut running_until = i64::MIN;
        while now <= end {
            let d = decide(
                s,
                since(Some(&record), T0 * 1000),
                now,
                prohibit,
                usize::from(now < running_until),
            );
            match d.due {
                Some(Due::Launch(t)) => {
                    launched.push(t);
                    running_until = now + runs;
                    record.last_tick_unix = t;
                }
                Some(Due::Skip(t)) => {
                    skipped.push(t);
                    record.last_tick_unix = t;
                }
                None => {}
            }
            let next = d.next.expect("fires again");
            assert!(next > now, "the timer always moves forward");
            now = next;
        }
        (launched, skipped)
    }

    #[test]
    fn a_tick_at_submission_time_is_not_launched_and_the_next_is() {
        let s = every_10s();
        let d = decide(&s, since(None, T0 * 1000 + 500), T0, false, 0);
        assert_eq!(d.due, None);
        assert_eq!(d.next, Some(T0 + 10));
        let d = decide(&s, since(None, T0 * 1000 + 500), T0 + 10, false, 0);
        assert_eq!(d.due, Some(Due::Launch(T0 + 10)));
        assert!(!d.dropped);
    }

    #[test]
    fn each_tick_launches_once() {
        let s = every_10s();
        let (launched, skipped) = simulate(&s, T0 + 60, 3, true);
        assert_eq!(launched, (1..=6).map(|i| T0 + 10 * i).collect::<Vec<_>>());
        assert!(skipped.is_empty());
        // Asking again at the same moment, with the tick recorded, launches nothing.
        let rec = LaunchRecord {
            last_tick_unix: T0 + 60,
            ..Default::default()
        };
        let d = decide(&s, since(Some(&rec), T0 * 1000), T0 + 60, true, 0);
        assert_eq!(d.due, None);
    }

    #[test]
    fn overlap_skips_ticks_while_a_child_runs_only_when_prohibited() {
        let s = every_10s();
        // Children run 25 s: with overlap prohibited, two ticks of three
        // are skipped.
        let (launched, skipped) = simulate(&s, T0 + 60, 25, true);
        assert_eq!(launched, vec![T0 + 10, T0 + 40]);
        assert_eq!(skipped, vec![T0 + 20, T0 + 30, T0 + 50, T0 + 60]);
        let (launched, skipped) = simulate(&s, T0 + 60, 25, false);
        assert_eq!(launched.len(), 6);
        assert!(skipped.is_empty());
    }

    #[test]
    fn too_many_running_children_skip_even_when_overlap_is_allowed() {
        let s = every_10s();
        let d = decide(&s, T0, T0 + 10, false, MAX_RUNNING_CHILDREN - 1);
        assert_eq!(d.due, Some(Due::Launch(T0 + 10)));
        let d = decide(&s, T0, T0 + 10, false, MAX_RUNNING_CHILDREN);
        assert_eq!(d.due, Some(Due::Skip(T0 + 10)));
    }

    #[test]
    fn missed_ticks_launch_only_the_latest() {
        let s = every_10s();
        let rec = LaunchRecord {
            last_tick_unix: T0 + 10,
            ..Default::default()
        };
        // The scheduler was down for an hour.
        let now = T0 + 3_605;
        let d = decide(&s, since(Some(&rec), T0 * 1000), now, false, 0);
        assert_eq!(d.due, Some(Due::Launch(T0 + 3_600)));
        assert!(d.dropped);
        assert_eq!(d.next, Some(T0 + 3_610));
        // Once recorded (a restarted scheduler reads it back): nothing more.
        let rec = LaunchRecord {
            last_tick_unix: T0 + 3_600,
            ..Default::default()
        };
        let d = decide(&s, since(Some(&rec), T0 * 1000), now, false, 0);
        assert_eq!(d.due, None);
        // A resubmission after the last tick moves the start: ticks before
        // it are not the new version's.
        let d = decide(&s, since(Some(&rec), (T0 + 3_604) * 1000), now, false, 0);
        assert_eq!(d.due, None);
    }

    #[test]
    fn the_next_wake_is_the_next_tick_in_the_zone() {
        // 09:00 in Berlin: 08:00 UTC in winter, 07:00 UTC in summer.
        let s = Schedule::new("0 9 * * *", "Europe/Berlin").expect("schedule");
        let winter = 1_711_699_200; // 2024-03-29T08:00:00Z
        let d = decide(&s, winter, winter + 1, false, 0);
        assert_eq!(d.due, None);
        assert_eq!(d.next, Some(winter + 86_400));
        let d = decide(&s, winter + 86_400, winter + 86_401, false, 0);
        assert_eq!(d.next, Some(winter + 2 * 86_400 - 3_600));
    }

    #[test]
    fn pruning_keeps_the_newest_finished_and_every_running_child() {
        let names: Vec<String> = (0..15).map(|i| format!("j/periodic-{}", 100 + i)).collect();
        let children: Vec<Child<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Child {
                name: n,
                tick: 100 + i as i64,
                // The oldest one still runs; 14 are finished.
                finished: i != 0,
            })
            .collect();
        let gone = to_prune(&children, KEEP_CHILDREN);
        assert_eq!(
            gone,
            vec![
                "j/periodic-101",
                "j/periodic-102",
                "j/periodic-103",
                "j/periodic-104"
            ]
        );
        assert!(to_prune(&children[..5], KEEP_CHILDREN).is_empty());
    }
}
