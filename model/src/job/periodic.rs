//! Periodic batch jobs: a cron expression in a time zone, the names of the
//! child jobs launched at each tick, and the rules a schedule must meet.
//!
//! A periodic job is a *parent*: it places nothing itself, and the
//! scheduler launches a batch child `<job>/periodic-<unix seconds>` at each
//! tick (see `drover_scheduler::periodic`). The schedule is parsed with
//! `croner` (5 fields, or 6 with a leading seconds field) and evaluated in
//! a time zone of the IANA database bundled in the binary (`jiff`), so a
//! node without `/usr/share/zoneinfo` computes the same ticks as any other.
//!
//! Refused at submission, each naming its field: an expression that does
//! not parse, one that never fires (no fire time within
//! [`FIRE_HORIZON_SECS`]), one that fires less than [`MIN_INTERVAL_SECS`]
//! apart, an unknown time zone.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

/// Fewest seconds between two launches a schedule may ask for.
pub const MIN_INTERVAL_SECS: i64 = 10;
/// A schedule must fire within this many seconds (5 years) of submission.
pub const FIRE_HORIZON_SECS: i64 = 5 * 366 * 86_400;
/// Consecutive fire times compared when checking [`MIN_INTERVAL_SECS`]
/// (as many as fall within [`FIRE_HORIZON_SECS`], at most this many).
pub const INTERVAL_SAMPLES: usize = 2_000;
/// Longest cron expression accepted, in bytes.
pub const MAX_CRON_LEN: usize = 256;
/// The time zone of a schedule that names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";
/// What separates a parent's name from its child's tick in a child's name.
pub const CHILD_INFIX: &str = "/periodic-";

/// When a batch job's children are launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodicSpec {
    /// Cron expression: `min hour dom month dow`, or with a leading seconds
    /// field.
    pub cron: String,
    /// IANA time zone the expression is read in (`UTC` by default).
    pub time_zone: String,
    /// Skip a tick while a child launched earlier is still running.
    pub prohibit_overlap: bool,
}

/// Why a schedule is refused. The messages name the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression does not parse.
    #[error("cron {expr:?} does not parse: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// The time zone is not in the bundled database.
    #[error("time_zone {name:?} is not a known IANA time zone (e.g. \"UTC\", \"Europe/Berlin\")")]
    TimeZone {
        /// The name given.
        name: String,
    },
    /// No fire time within the horizon.
    #[error("cron {expr:?} never fires (no fire time within 5 years)")]
    Never {
        /// The expression.
        expr: String,
    },
    /// Two fire times closer than [`MIN_INTERVAL_SECS`].
    #[error("cron {expr:?} fires {gap} s apart (at unix time {at}); launches must be at least {MIN_INTERVAL_SECS} s apart")]
    TooOften {
        /// The expression.
        expr: String,
        /// Seconds between the two fire times.
        gap: i64,
        /// The earlier of the two, in seconds since the Unix epoch.
        at: i64,
    },
}

impl ScheduleError {
    /// The field of `periodic` the problem is in.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::TimeZone { .. } => "periodic.time_zone",
            _ => "periodic.cron",
        }
    }
}

/// A parsed schedule: the expression and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: TimeZone,
}

impl PeriodicSpec {
    /// The schedule, parsed (not checked for how often it fires: see
    /// [`Schedule::check`]).
    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::new(&self.cron, &self.time_zone)
    }
}

impl Schedule {
    /// Parses `cron` (5 fields, or 6 with leading seconds; no year field)
    /// in `time_zone` (empty: UTC).
    pub fn new(cron: &str, time_zone: &str) -> Result<Schedule, ScheduleError> {
        let bad = |reason: String| ScheduleError::Cron {
            expr: cron.to_string(),
            reason,
        };
        if cron.len() > MAX_CRON_LEN {
            return Err(bad(format!(
                "{} bytes, at most {MAX_CRON_LEN} allowed",
                cron.len()
            )));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| bad(e.to_string()))?;
        let name = if time_zone.is_empty() {
            DEFAULT_TIME_ZONE
        } else {
            time_zone
        };
        let tz = TimeZone::get(name).map_err(|_| ScheduleError::TimeZone {
            name: time_zone.to_string(),
        })?;
        Ok(Schedule {
            expr: cron.to_string(),
            cron: parsed,
            tz,
        })
    }

    fn zoned(&self, unix_secs: i64) -> Option<Zoned> {
        Timestamp::from_second(unix_secs)
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    /// The first fire time strictly after `unix_secs`, in seconds since
    /// the Unix epoch; `None` when there is none the search can find.
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let from = self.zoned(unix_secs)?;
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(|z| z.timestamp().as_second())
    }

    /// The last fire time at or before `unix_secs`, if any.
    pub fn latest_at_or_before(&self, unix_secs: i64) -> Option<i64> {
        let at = self.zoned(unix_secs)?;
        self.cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|z| z.timestamp().as_second())
    }

    /// Checks the schedule fires within [`FIRE_HORIZON_SECS`] of `from`
    /// and never less than [`MIN_INTERVAL_SECS`] apart (over the fire times
    /// in that horizon, at most [`INTERVAL_SAMPLES`] of them).
    pub fn check(&self, from: i64) -> Result<(), ScheduleError> {
        let horizon = from.saturating_add(FIRE_HORIZON_SECS);
        let Some(mut prev) = self.next_after(from).filter(|t| *t <= horizon) else {
            return Err(ScheduleError::Never {
                expr: self.expr.clone(),
            });
        };
        for _ in 0..INTERVAL_SAMPLES {
            let Some(next) = self.next_after(prev).filter(|t| *t <= horizon) else {
                break;
            };
            let gap = next - prev;
            if gap < MIN_INTERVAL_SECS {
                return Err(ScheduleError::TooOften {
                    expr: self.expr.clone(),
                    gap,
                    at: prev,
                });
            }
            prev = next;
        }
        Ok(())
    }
}

/// The name of `parent`'s child launched for tick `unix_secs`.
pub fn child_name(parent: &str, unix_secs: i64) -> String {
    format!("{parent}{CHILD_INFIX}{unix_secs}")
}

/// The parent of a child job name (`web` of `web/periodic-1700000000`),
/// or `None` when `name` is not a child's.
pub fn parent_of(name: &str) -> Option<&str> {
    let (parent, tick) = name.split_once(CHILD_INFIX)?;
    let digits = !tick.is_empty() && tick.len() <= 19 && tick.bytes().all(|b| b.is_ascii_digit());
    (digits && super::check_dns_label(parent).is_ok()).then_some(parent)
}

/// Checks a job name a client gives: a DNS label, or a periodic child's
/// name (`<label>/periodic-<digits>`), which only the scheduler creates.
pub fn check_job_name(name: &str) -> Result<(), String> {
    if parent_of(name).is_some() {
        return Ok(());
    }
    super::check_dns_label(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Unix seconds of an RFC 3339 instant.
    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("instant").as_second()
    }

    fn next(cron: &str, tz: &str, after: &str) -> String {
        let s = Schedule::new(cron, tz).expect("schedule");
        let t = s.next_after(at(after)).expect("fires");
        Timestamp::from_second(t).expect("ts").to_string()
    }

    #[test]
    fn five_fields_fire_on_the_minute_in_utc() {
        assert_eq!(
            next("*/5 * * * *", "", "2024-01-01T10:02:30Z"),
            "2024-01-01T10:05:00Z"
        );
        // Strictly after: a tick is never returned twice.
        assert_eq!(
            next("*/5 * * * *", "UTC", "2024-01-01T10:05:00Z"),
            "2024-01-01T10:10:00Z"
        );
    }

    #[test]
    fn a_leading_sixth_field_is_seconds() {
        assert_eq!(
            next("*/10 * * * * *", "UTC", "2024-01-01T10:02:31Z"),
            "2024-01-01T10:02:40Z"
        );
        assert_eq!(
            next("15 0 12 * * *", "UTC", "2024-01-01T10:02:31Z"),
            "2024-01-01T12:00:15Z"
        );
    }

    #[test]
    fn the_time_zone_moves_the_ticks() {
        assert_eq!(
            next("0 9 * * *", "Asia/Tokyo", "2024-01-01T00:30:00Z"),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "America/New_York", "2024-01-01T00:00:00Z"),
            "2024-01-01T14:00:00Z"
        );
    }

    #[test]
    fn daylight_saving_time_keeps_local_wall_clock_ticks() {
        // Berlin: CET (+1) until 2024-03-31 02:00, then CEST (+2).
        let tz = "Europe/Berlin";
        assert_eq!(
            next("0 9 * * *", tz, "2024-03-30T00:00:00Z"),
            "2024-03-30T08:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", tz, "2024-03-30T08:00:00Z"),
            "2024-03-31T07:00:00Z"
        );
        // 02:30 does not exist on 2024-03-31: the tick is not lost, it
        // comes right after the gap, and the next day is back at 02:30.
        let gap = next("30 2 * * *", tz, "2024-03-30T12:00:00Z");
        assert_eq!(gap, "2024-03-31T01:00:00Z");
        assert_eq!(next("30 2 * * *", tz, &gap), "2024-04-01T00:30:00Z");
        // 02:30 happens twice on 2024-10-27: a fixed time fires once.
        let first = next("30 2 * * *", tz, "2024-10-26T12:00:00Z");
        assert_eq!(first, "2024-10-27T00:30:00Z");
        assert_eq!(next("30 2 * * *", tz, &first), "2024-10-28T01:30:00Z");
    }

    #[test]
    fn the_latest_tick_at_or_before_a_time() {
        let s = Schedule::new("*/5 * * * *", "UTC").expect("schedule");
        let t = at("2024-01-01T10:07:00Z");
        assert_eq!(s.latest_at_or_before(t), Some(at("2024-01-01T10:05:00Z")));
        let t = at("2024-01-01T10:05:00Z");
        assert_eq!(s.latest_at_or_before(t), Some(t));
    }

    #[test]
    fn child_names_round_trip_and_nothing_else_parses_as_one() {
        let c = child_name("web", 1_700_000_000);
        assert_eq!(c, "web/periodic-1700000000");
        assert_eq!(parent_of(&c), Some("web"));
        check_job_name(&c).expect("a child's name is a job name");
        check_job_name("web").expect("a label is");
        for bad in [
            "web/periodic-",
            "web/periodic-12a",
            "Web/periodic-1",
            "/periodic-1",
            "web/other-1",
            "web/periodic-1/periodic-2",
        ] {
            assert_eq!(parent_of(bad), None, "{bad}");
            assert!(check_job_name(bad).is_err(), "{bad}");
        }
    }
}
