//! Job files in TOML, as users write them.
//!
//! Parsing is separate from reading the file and from semantic validation:
//! [`parse`] turns text into the wire [`pb::Job`] (catching syntax errors and
//! unknown fields with their line and column), and the scheduler validates
//! the result with [`crate::job::JobSpec::try_from`] whoever sent it.

use std::collections::BTreeMap;

use drover_proto::v1 as pb;
use serde::Deserialize;

/// Default CPU reservation when a task names none.
pub const DEFAULT_CPU_MILLIS: i64 = 100;
/// Default memory reservation when a task names none.
pub const DEFAULT_MEMORY_MB: i64 = 64;
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_TIMEOUT_MS: i64 = 5_000;

/// A job file that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JobFileError {
    /// The file (or `-` for standard input).
    pub path: String,
    /// What is wrong, with line and column where TOML gives them.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJob {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "group")]
    groups: Vec<FileGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    name: String,
    #[serde(default)]
    count: Option<i64>,
    #[serde(default, rename = "task")]
    tasks: Vec<FileTask>,
    #[serde(default)]
    restart: Option<FileRestart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRestart {
    attempts: i64,
    #[serde(default)]
    delay_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTask {
    name: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    resources: Option<FileResources>,
    #[serde(default)]
    kill_timeout_ms: Option<i64>,
    #[serde(default)]
    rootfs: Option<FileRootfs>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResources {
    #[serde(default)]
    cpu_millis: Option<i64>,
    #[serde(default)]
    memory_mb: Option<i64>,
}

/// Parses a TOML job file into the wire type, filling documented defaults
/// (`kind = "service"`, `count = 1`, 100 millicores, 64 MiB, 5 s kill
/// timeout). `path` is only used in error messages.
pub fn parse(path: &str, text: &str) -> Result<pb::Job, JobFileError> {
    let file: FileJob = toml::from_str(text).map_err(|e| JobFileError {
        path: path.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(pb::Job {
        name: file.name,
        kind: file.kind.unwrap_or_else(|| "service".into()),
        groups: file
            .groups
            .into_iter()
            .map(|g| pb::Group {
                network: String::new(),
                name: g.name,
                count: g.count.unwrap_or(1),
                restart: g.restart.map(|r| pb::RestartPolicy {
                    attempts: r.attempts,
                    delay_ms: r.delay_ms,
                }),
                tasks: g
                    .tasks
                    .into_iter()
                    .map(|t| {
                        let r = t.resources.unwrap_or(FileResources {
                            cpu_millis: None,
                            memory_mb: None,
                        });
                        pb::Task {
                            name: t.name,
                            command: t.command,
                            env: t.env.into_iter().collect(),
                            resources: Some(pb::Resources {
                                cpu_millis: r.cpu_millis.unwrap_or(DEFAULT_CPU_MILLIS),
                                memory_mb: r.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
                            }),
                            kill_timeout_ms: t.kill_timeout_ms.unwrap_or(DEFAULT_KILL_TIMEOUT_MS),
                            rootfs: t.rootfs.map(|r| pb::Rootfs {
                                kind: r.kind,
                                path: r.path,
                            }),
                            ..Default::default()
                        }
                    })
                    .collect(),
            })
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
name = "hello"
kind = "service"
[[group]]
name = "main"
count = 2
[[group.task]]
name = "app"
command = ["/bin/sh", "-c", "echo hello; sleep 3600"]
resources = { cpu_millis = 100, memory_mb = 32 }
"#;

    #[test]
    fn parses_the_example_shape() {
        let j = parse("hello.toml", HELLO).unwrap();
        assert_eq!(j.name, "hello");
        assert_eq!(j.groups[0].count, 2);
        assert_eq!(j.groups[0].tasks[0].command.len(), 3);
        assert_eq!(
            j.groups[0].tasks[0].kill_timeout_ms,
            DEFAULT_KILL_TIMEOUT_MS
        );
        crate::job::JobSpec::try_from(&j).unwrap();
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let e = parse("bad.toml", "name = \"x\"\n[[group]\n").unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
        assert!(e.message.contains("column"), "{}", e.message);
        assert!(e.to_string().starts_with("bad.toml: "));
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let text = HELLO.replace("count = 2", "count = 2\ncuont = 3");
        let e = parse("x.toml", &text).unwrap_err();
        assert!(e.message.contains("unknown field `cuont`"), "{}", e.message);
        assert!(e.message.contains("line 7"), "{}", e.message);
    }

    #[test]
    fn defaults_are_filled() {
        let j = parse(
            "d.toml",
            "name = \"d\"\n[[group]]\nname = \"g\"\n[[group.task]]\nname = \"t\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        assert_eq!(j.kind, "service");
        assert_eq!(j.groups[0].count, 1);
        let r = j.groups[0].tasks[0].resources.unwrap();
        assert_eq!((r.cpu_millis, r.memory_mb), (100, 64));
    }
}
