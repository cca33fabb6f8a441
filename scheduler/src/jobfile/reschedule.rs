//! `reschedule = { attempts, interval_ms, delay_ms, max_delay_ms, unlimited }`
//! in a `[[group]]`: how allocations that failed on their node are
//! replaced. An unset key takes the job kind's default at validation
//! ([`crate::job::ReschedulePolicy::default_for`]), so the wire keeps what
//! the user wrote.

use drover_proto::v1 as pb;
use serde::Deserialize;

/// A group's `reschedule` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileReschedule {
    #[serde(default)]
    attempts: Option<i64>,
    #[serde(default)]
    interval_ms: Option<i64>,
    #[serde(default)]
    delay_ms: Option<i64>,
    #[serde(default)]
    max_delay_ms: Option<i64>,
    #[serde(default)]
    unlimited: Option<bool>,
}

impl From<FileReschedule> for pb::ReschedulePolicy {
    fn from(r: FileReschedule) -> pb::ReschedulePolicy {
        pb::ReschedulePolicy {
            attempts: r.attempts,
            interval_ms: r.interval_ms,
            delay_ms: r.delay_ms,
            max_delay_ms: r.max_delay_ms,
            unlimited: r.unlimited,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::job::JobSpec;
    use crate::jobfile::parse;

    const FLAKY: &str = r#"
name = "flaky"
[[group]]
name = "main"
restart = { attempts = 0 }
reschedule = { delay_ms = 300, max_delay_ms = 1200, attempts = 4, interval_ms = 3600000 }
[[group.task]]
name = "app"
command = ["/bin/false"]
"#;

    #[test]
    fn a_group_names_its_reschedule_policy() {
        let j = parse("flaky.toml", FLAKY).unwrap();
        let r = j.groups[0].reschedule.unwrap();
        assert_eq!(
            (r.attempts, r.delay_ms, r.unlimited),
            (Some(4), Some(300), None)
        );
        let spec = JobSpec::try_from(&j).unwrap();
        let p = spec.groups[0].reschedule.unwrap();
        assert_eq!((p.attempts, p.max_delay_ms, p.unlimited), (4, 1_200, false));

        let bad = FLAKY.replace("attempts = 4", "atempts = 4");
        let e = parse("flaky.toml", &bad).unwrap_err();
        assert!(
            e.message.contains("unknown field `atempts`"),
            "{}",
            e.message
        );
        let bad = FLAKY.replace("delay_ms = 300", "delay_ms = 3000");
        let e = JobSpec::try_from(&parse("flaky.toml", &bad).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("group \"main\": reschedule.delay_ms (3000) must be <= reschedule.max_delay_ms (1200)"),
            "{e}"
        );
    }
}
