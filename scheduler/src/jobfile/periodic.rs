//! `periodic = { cron = "...", time_zone = "UTC", prohibit_overlap = true }`
//! at job level, as a job file writes it.

use drover_proto::v1 as pb;
use serde::Deserialize;

/// The job's `periodic` table; an unset field takes its default (UTC, overlap
/// allowed). The schedule itself is checked by the job's validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePeriodic {
    cron: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    prohibit_overlap: bool,
}

impl From<FilePeriodic> for pb::Periodic {
    fn from(p: FilePeriodic) -> pb::Periodic {
        pb::Periodic {
            cron: p.cron,
            time_zone: p
                .time_zone
                .unwrap_or_else(|| crate::job::DEFAULT_TIME_ZONE.into()),
            prohibit_overlap: p.prohibit_overlap,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::parse;

    const NIGHTLY: &str = r#"
name = "report"
kind = "batch"
periodic = { cron = "*/10 * * * * *", time_zone = "Europe/Berlin", prohibit_overlap = true }
[[group]]
name = "main"
[[group.task]]
name = "run"
command = ["true"]
"#;

    #[test]
    fn parses_the_periodic_table() {
        let job = parse("report.toml", NIGHTLY).unwrap();
        let p = job.periodic.expect("periodic");
        assert_eq!(p.cron, "*/10 * * * * *");
        assert_eq!(p.time_zone, "Europe/Berlin");
        assert!(p.prohibit_overlap);
        let spec =
            crate::job::JobSpec::try_from(&parse("report.toml", NIGHTLY).unwrap()).expect("valid");
        assert!(spec.periodic.is_some());
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let text = NIGHTLY.replace(
            r#"periodic = { cron = "*/10 * * * * *", time_zone = "Europe/Berlin", prohibit_overlap = true }"#,
            r#"periodic = { cron = "0 3 * * *" }"#,
        );
        let p = parse("r.toml", &text).unwrap().periodic.expect("periodic");
        assert_eq!((p.time_zone.as_str(), p.prohibit_overlap), ("UTC", false));
        let text = NIGHTLY.replace("prohibit_overlap", "no_overlap");
        let e = parse("r.toml", &text).unwrap_err().to_string();
        assert!(e.contains("no_overlap"), "{e}");
    }

    #[test]
    fn a_bad_schedule_is_refused_with_its_field() {
        let text = NIGHTLY.replace("*/10 * * * * *", "* * * * * *");
        let e = crate::job::JobSpec::try_from(&parse("r.toml", &text).unwrap()).unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.starts_with("periodic.cron:")),
            "{e}"
        );
    }
}
