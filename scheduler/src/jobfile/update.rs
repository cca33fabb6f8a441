//! `update = { ... }` of a `[[group]]`: the group's rolling-update
//! strategy as a job file writes it. Unset fields take Nomad's defaults
//! (`drover_model::job::DEFAULT_*`: one at a time, healthy for 10 s,
//! within 5 min, progress every 10 min, no canary); the scheduler
//! validates the result.

use drover_proto::v1 as pb;
use serde::Deserialize;

use crate::job::{
    DEFAULT_HEALTHY_DEADLINE_MS, DEFAULT_MAX_PARALLEL, DEFAULT_MIN_HEALTHY_TIME_MS,
    DEFAULT_PROGRESS_DEADLINE_MS,
};

/// A group's `update` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpdate {
    #[serde(default)]
    max_parallel: Option<i64>,
    #[serde(default)]
    canary: Option<i64>,
    #[serde(default)]
    min_healthy_time_ms: Option<i64>,
    #[serde(default)]
    healthy_deadline_ms: Option<i64>,
    #[serde(default)]
    progress_deadline_ms: Option<i64>,
    #[serde(default)]
    auto_revert: bool,
    #[serde(default)]
    auto_promote: bool,
}

impl From<FileUpdate> for pb::UpdateStrategy {
    fn from(u: FileUpdate) -> pb::UpdateStrategy {
        pb::UpdateStrategy {
            max_parallel: u.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL),
            canary: u.canary.unwrap_or(0),
            min_healthy_time_ms: u.min_healthy_time_ms.unwrap_or(DEFAULT_MIN_HEALTHY_TIME_MS),
            healthy_deadline_ms: u.healthy_deadline_ms.unwrap_or(DEFAULT_HEALTHY_DEADLINE_MS),
            progress_deadline_ms: u
                .progress_deadline_ms
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE_MS),
            auto_revert: u.auto_revert,
            auto_promote: u.auto_promote,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::job::{JobSpec, UpdateSpec};

    const WEB: &str = "name = \"web\"\n[[group]]\nname = \"g\"\ncount = 3\n\
        [[group.task]]\nname = \"t\"\ncommand = [\"true\"]\n";

    #[test]
    fn an_update_table_takes_defaults_and_is_validated() {
        let text = WEB.replace(
            "count = 3",
            "count = 3\nupdate = { max_parallel = 2, canary = 1 }",
        );
        let job = super::super::parse("web.toml", &text).unwrap();
        let spec = JobSpec::try_from(&job).unwrap();
        let u = spec.groups[0].update.unwrap();
        assert_eq!((u.max_parallel, u.canary), (2, 1));
        assert_eq!(
            u.min_healthy_time_ms,
            UpdateSpec::default().min_healthy_time_ms
        );

        let none = JobSpec::try_from(&super::super::parse("web.toml", WEB).unwrap()).unwrap();
        assert_eq!(none.groups[0].update, None, "no table: no deployment");

        let bad = WEB.replace("count = 3", "count = 3\nupdate = { max_paralel = 2 }");
        let e = super::super::parse("web.toml", &bad).unwrap_err();
        assert!(
            e.message.contains("unknown field `max_paralel`"),
            "{}",
            e.message
        );

        let bad = WEB.replace("count = 3", "count = 3\nupdate = { canary = 5 }");
        let e = JobSpec::try_from(&super::super::parse("web.toml", &bad).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("group \"g\": update.canary must be <= 3, got 5"),
            "{e}"
        );
    }
}
