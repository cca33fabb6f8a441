//! Validation of a job's `periodic` section: batch jobs only, a cron
//! expression that parses, fires within 5 years and never less than 10 s
//! apart, in a known time zone.

use drover_proto::v1 as pb;

use super::Problems;
use crate::job::{JobKind, PeriodicSpec, Schedule, DEFAULT_TIME_ZONE};

/// Checks `pe`, recording each problem under its field; the spec when
/// the section is valid. Fire times are checked from the wall clock's now.
pub(super) fn periodic(p: &mut Problems, kind: JobKind, pe: &pb::Periodic) -> Option<PeriodicSpec> {
    periodic_at(p, kind, pe, crate::now_ms() / 1000)
}

/// [`periodic`] with fire times checked from `now` (unix seconds).
pub(super) fn periodic_at(
    p: &mut Problems,
    kind: JobKind,
    pe: &pb::Periodic,
    now: i64,
) -> Option<PeriodicSpec> {
    let before = p.list.len();
    if kind != JobKind::Batch {
        p.push(
            "periodic",
            format!(
                "only batch jobs can be periodic; this job's kind is {:?} (set kind = \"batch\")",
                kind.as_str()
            ),
        );
    }
    if pe.cron.trim().is_empty() {
        p.push("periodic.cron", "must not be empty (e.g. \"*/5 * * * *\")");
    } else {
        match Schedule::new(&pe.cron, &pe.time_zone) {
            Ok(s) => {
                if let Err(e) = s.check(now) {
                    p.push(e.field(), e);
                }
            }
            Err(e) => p.push(e.field(), e),
        }
    }
    if p.list.len() != before {
        return None;
    }
    let time_zone = if pe.time_zone.is_empty() {
        DEFAULT_TIME_ZONE.to_string()
    } else {
        pe.time_zone.clone()
    };
    Some(PeriodicSpec {
        cron: pe.cron.trim().to_string(),
        time_zone,
        prohibit_overlap: pe.prohibit_overlap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    fn check(kind: JobKind, cron: &str, tz: &str) -> Result<PeriodicSpec, Vec<String>> {
        let mut p = Problems { list: Vec::new() };
        let pe = pb::Periodic {
            cron: cron.into(),
            time_zone: tz.into(),
            prohibit_overlap: true,
        };
        periodic_at(&mut p, kind, &pe, NOW).ok_or(p.list)
    }

    fn refused(kind: JobKind, cron: &str, tz: &str) -> String {
        match check(kind, cron, tz) {
            Ok(s) => panic!("{cron:?} in {tz:?} accepted as {s:?}"),
            Err(list) => list.join("; "),
        }
    }

    #[test]
    fn a_valid_schedule_is_kept_with_utc_by_default() {
        let s = check(JobKind::Batch, "*/5 * * * *", "").expect("valid");
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.cron, "*/5 * * * *");
        assert!(s.prohibit_overlap);
        let s = check(JobKind::Batch, "*/10 * * * * *", "Europe/Berlin").expect("seconds");
        assert_eq!(s.time_zone, "Europe/Berlin");
        // Once every four years still fires within five.
        check(JobKind::Batch, "0 0 29 2 *", "UTC").expect("leap day");
    }

    #[test]
    fn refusals_name_the_field() {
        let e = refused(JobKind::Batch, "61 * * * *", "UTC");
        assert!(
            e.starts_with("periodic.cron: cron \"61 * * * *\" does not parse"),
            "{e}"
        );
        let e = refused(JobKind::Batch, "banana", "UTC");
        assert!(e.starts_with("periodic.cron:"), "{e}");
        let e = refused(JobKind::Batch, "", "UTC");
        assert!(e.starts_with("periodic.cron: must not be empty"), "{e}");
        let e = refused(JobKind::Batch, "0 0 30 2 *", "UTC");
        assert!(
            e.starts_with("periodic.cron:") && e.contains("never fires"),
            "{e}"
        );
        let e = refused(JobKind::Batch, "* * * * * *", "UTC");
        assert!(
            e.contains("periodic.cron:") && e.contains("1 s apart"),
            "{e}"
        );
        let e = refused(JobKind::Batch, "*/5 * * * * *", "UTC");
        assert!(e.contains("5 s apart"), "{e}");
        // 55 then 0 of the next minute: 5 s apart across the minute.
        let e = refused(JobKind::Batch, "0,55 * * * * *", "UTC");
        assert!(e.contains("5 s apart"), "{e}");
        let e = refused(JobKind::Batch, "0 * * * *", "Mars/Olympus_Mons");
        assert!(
            e.starts_with("periodic.time_zone: time_zone \"Mars/Olympus_Mons\" is not a known"),
            "{e}"
        );
        let e = refused(JobKind::Service, "0 * * * *", "UTC");
        assert!(e.starts_with("periodic: only batch jobs"), "{e}");
        let e = refused(JobKind::Batch, "0 * * * * * 2030", "UTC");
        assert!(e.starts_with("periodic.cron:"), "{e}");
    }
}
