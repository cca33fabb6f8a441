//! Job files in TOML, as users write them.
//!
//! Parsing is separate from reading the file and from semantic validation:
//! [`parse`] turns text into the wire [`pb::Job`] (catching syntax errors and
//! unknown fields with their line and column), and the scheduler validates
//! the result with [`crate::job::JobSpec::try_from`] whoever sent it.

use std::collections::BTreeMap;

use drover_proto::v1 as pb;
use serde::Deserialize;

mod placement;
use placement::{wire, FileAffinity, FileConstraint};
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod disconnect_tests;
mod periodic;
mod reschedule;
mod spread;
mod update;

use update::FileUpdate;

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
    #[serde(default, rename = "constraint")]
    constraints: Vec<FileConstraint>,
    #[serde(default, rename = "affinity")]
    affinities: Vec<FileAffinity>,
    #[serde(default)]
    periodic: Option<periodic::FilePeriodic>,
    /// `"binpack"` or `"spread"`; unset means the scheduler's default.
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default, rename = "spread")]
    spreads: Vec<spread::FileSpread>,
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
    #[serde(default)]
    network: Option<String>,
    #[serde(default, rename = "service")]
    services: Vec<FileService>,
    #[serde(default, rename = "constraint")]
    constraints: Vec<FileConstraint>,
    #[serde(default, rename = "affinity")]
    affinities: Vec<FileAffinity>,
    #[serde(default)]
    reschedule: Option<reschedule::FileReschedule>,
    #[serde(default, rename = "spread")]
    spreads: Vec<spread::FileSpread>,
    /// `update = { max_parallel = 2, ... }`: rolled out as a deployment.
    #[serde(default)]
    update: Option<FileUpdate>,
    /// `disconnect = { stop_after_ms = N }`: a node cut off from the
    /// scheduler that long stops its copies.
    #[serde(default)]
    disconnect: Option<FileDisconnect>,
}

/// A group's `disconnect` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDisconnect {
    stop_after_ms: i64,
}

/// `[[group.service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    name: String,
    port: i64,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, rename = "check")]
    checks: Vec<FileCheck>,
}

/// `[[group.service.check]]`; an unset number takes its default below.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheck {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    task: String,
    #[serde(default)]
    port: i64,
    #[serde(default)]
    interval_ms: Option<i64>,
    #[serde(default)]
    timeout_ms: Option<i64>,
    #[serde(default)]
    success_before_passing: Option<i64>,
    #[serde(default)]
    failures_before_critical: Option<i64>,
}

/// [`FileCheck::interval_ms`] when a job file does not say.
pub const DEFAULT_CHECK_INTERVAL_MS: i64 = 5_000;
/// [`FileCheck::timeout_ms`] when a job file does not say.
pub const DEFAULT_CHECK_TIMEOUT_MS: i64 = 1_000;
/// [`FileCheck::success_before_passing`] when a job file does not say.
pub const DEFAULT_CHECK_SUCCESSES: i64 = 1;
/// [`FileCheck::failures_before_critical`] when a job file does not say.
pub const DEFAULT_CHECK_FAILURES: i64 = 1;

impl From<FileService> for pb::Service {
    fn from(s: FileService) -> pb::Service {
        pb::Service {
            name: s.name,
            port: s.port,
            protocol: s.protocol.unwrap_or_else(|| "tcp".into()),
            tags: s.tags,
            checks: s.checks.into_iter().map(pb::Check::from).collect(),
        }
    }
}

impl From<FileCheck> for pb::Check {
    fn from(c: FileCheck) -> pb::Check {
        pb::Check {
            r#type: c.kind,
            path: c.path,
            command: c.command,
            interval_ms: c.interval_ms.unwrap_or(DEFAULT_CHECK_INTERVAL_MS),
            timeout_ms: c.timeout_ms.unwrap_or(DEFAULT_CHECK_TIMEOUT_MS),
            success_before_passing: c.success_before_passing.unwrap_or(DEFAULT_CHECK_SUCCESSES),
            failures_before_critical: c.failures_before_critical.unwrap_or(DEFAULT_CHECK_FAILURES),
            task: c.task,
            port: c.port,
        }
    }
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
    /// `"uid"`, `"uid:gid"`, `"name"` or `"name:group"`.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    workdir: Option<String>,
    /// `volumes = [{ type = "bind", source = "/srv/data", target = "/data",
    /// read_only = true }, { type = "tmpfs", target = "/scratch", size_mb = 16 }]`
    /// or `[[group.task.volumes]]` tables.
    #[serde(default)]
    volumes: Vec<FileVolume>,
    /// `logs = { max_size_mb = 10, max_files = 3 }`
    #[serde(default)]
    logs: Option<FileLogs>,
    #[serde(default, rename = "constraint")]
    constraints: Vec<FileConstraint>,
    /// `"default"` (the node's profile) or `"unconfined"`.
    #[serde(default)]
    seccomp: Option<String>,
    /// `false`: the task is PID 1 itself, without Drover's minimal init
    /// (which forwards signals to it and reaps orphans).
    #[serde(default)]
    init: Option<bool>,
}

/// Log rotation of one task; an unset field takes the node's default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLogs {
    #[serde(default)]
    max_size_mb: Option<i64>,
    #[serde(default)]
    max_files: Option<i64>,
}

/// [`FileLogs::max_size_mb`] when a job file does not say (MiB).
pub const DEFAULT_LOG_MAX_SIZE_MB: i64 = 10;
/// [`FileLogs::max_files`] when a job file does not say.
pub const DEFAULT_LOG_MAX_FILES: i64 = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVolume {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    source: String,
    target: String,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    size_mb: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
    /// For `oci`: an image reference pulled from a registry.
    #[serde(default)]
    image: String,
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
        constraints: wire(file.constraints),
        affinities: wire(file.affinities),
        periodic: file.periodic.map(pb::Periodic::from),
        algorithm: file.algorithm.unwrap_or_default(),
        spreads: spread::to_pb(file.spreads),
        groups: file
            .groups
            .into_iter()
            .map(|g| pb::Group {
                network: g.network.unwrap_or_default(),
                constraints: wire(g.constraints),
                affinities: wire(g.affinities),
                spreads: spread::to_pb(g.spreads),
                services: g.services.into_iter().map(pb::Service::from).collect(),
                reschedule: g.reschedule.map(pb::ReschedulePolicy::from),
                update: g.update.map(pb::UpdateStrategy::from),
                disconnect: g.disconnect.map(|d| pb::DisconnectPolicy {
                    stop_after_ms: d.stop_after_ms,
                }),
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
                            constraints: wire(t.constraints),
                            logs: t.logs.map(|l| pb::LogLimits {
                                max_size_mb: l.max_size_mb.unwrap_or(DEFAULT_LOG_MAX_SIZE_MB),
                                max_files: l.max_files.unwrap_or(DEFAULT_LOG_MAX_FILES),
                            }),
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
                                image: r.image,
                            }),
                            user: t.user.unwrap_or_default(),
                            workdir: t.workdir.unwrap_or_default(),
                            seccomp: t.seccomp.unwrap_or_default(),
                            no_init: !t.init.unwrap_or(true),
                            volumes: t
                                .volumes
                                .into_iter()
                                .map(|v| pb::Volume {
                                    kind: v.kind,
                                    source: v.source,
                                    target: v.target,
                                    read_only: v.read_only,
                                    size_mb: v.size_mb,
                                })
                                .collect(),
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

    /// A task has the init unless it says `init = false`; the value must
    /// be a boolean, and the error names the key.
    #[test]
    fn init_defaults_on_and_false_turns_it_off() {
        let j = parse("hello.toml", HELLO).unwrap();
        assert!(!j.groups[0].tasks[0].no_init);
        let spec = crate::job::JobSpec::try_from(&j).unwrap();
        assert!(!spec.groups[0].tasks[0].no_init);
        let off = HELLO.replace("resources =", "init = false\nresources =");
        let j = parse("hello.toml", &off).unwrap();
        assert!(j.groups[0].tasks[0].no_init);
        let spec = crate::job::JobSpec::try_from(&j).unwrap();
        assert!(spec.groups[0].tasks[0].no_init);
        assert!(pb::Task::from(&spec.groups[0].tasks[0]).no_init);
        let bad = HELLO.replace("resources =", "init = \"no\"\nresources =");
        let err = parse("hello.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("init") && err.contains("bool"), "{err}");
    }

    /// The shape issue #12 gives for services, verbatim.
    const WEB: &str = r#"
name = "web"
[[group]]
name = "main"
[[group.task]]
name = "server"
command = ["/bin/sh", "-c", "exec httpd -f -p 8080"]
[[group.service]]
name = "web"            # a DNS label
port = 8080             # the port inside the allocation
protocol = "tcp"        # tcp (default) | udp
tags = ["v2", "blue"]   # optional
[[group.service.check]]
type = "http"           # tcp | http | exec
path = "/health"        # http: 2xx/3xx passes
interval_ms = 1000
timeout_ms = 500
success_before_passing = 1
failures_before_critical = 2
[[group.service.check]]
type = "exec"
command = ["/bin/check"]
"#;

    #[test]
    fn parses_services_and_checks_with_defaults() {
        let j = parse("web.toml", WEB).unwrap();
        let s = &j.groups[0].services[0];
        assert_eq!((s.name.as_str(), s.port), ("web", 8080));
        assert_eq!(s.tags, ["v2", "blue"]);
        assert_eq!(s.checks[0].path, "/health");
        assert_eq!(s.checks[0].failures_before_critical, 2);
        assert_eq!(s.checks[1].interval_ms, DEFAULT_CHECK_INTERVAL_MS);
        assert_eq!(s.checks[1].timeout_ms, DEFAULT_CHECK_TIMEOUT_MS);
        let spec = crate::job::JobSpec::try_from(&j).unwrap();
        assert_eq!(spec.groups[0].services[0].checks[1].task, "server");
        let bad = WEB.replace("path = \"/health\"", "pth = \"/health\"");
        let e = parse("web.toml", &bad).unwrap_err();
        assert!(e.message.contains("unknown field `pth`"), "{}", e.message);
    }

    #[test]
    fn every_example_job_file_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let job = parse(&path.display().to_string(), &text).unwrap();
                crate::job::JobSpec::try_from(&job)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "found only {seen} examples in {}", dir.display());
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
    fn seccomp_unconfined() {
        let text = HELLO.replace(
            "resources = { cpu_millis = 100, memory_mb = 32 }",
            "seccomp = \"unconfined\"",
        );
        let j = parse("s.toml", &text).unwrap();
        assert_eq!(j.groups[0].tasks[0].seccomp, "unconfined");
        let spec = crate::job::JobSpec::try_from(&j).unwrap();
        assert_eq!(
            spec.groups[0].tasks[0].seccomp,
            crate::job::SeccompMode::Unconfined
        );
        let j = parse("d.toml", HELLO).unwrap();
        assert_eq!(j.groups[0].tasks[0].seccomp, "");
    }

    #[test]
    fn user_workdir_and_volumes() {
        let text = HELLO.replace(
            "resources = { cpu_millis = 100, memory_mb = 32 }",
            r#"user = "1000:1000"
workdir = "/app"
volumes = [
  { type = "bind", source = "/srv/data", target = "/data", read_only = true },
  { type = "tmpfs", target = "/scratch", size_mb = 16 },
]"#,
        );
        let j = parse("v.toml", &text).unwrap();
        let t = &j.groups[0].tasks[0];
        assert_eq!((t.user.as_str(), t.workdir.as_str()), ("1000:1000", "/app"));
        assert_eq!(t.volumes.len(), 2);
        assert!(t.volumes[0].read_only && t.volumes[0].kind == "bind");
        assert_eq!(
            (t.volumes[1].kind.as_str(), t.volumes[1].size_mb),
            ("tmpfs", 16)
        );
        let spec = crate::job::JobSpec::try_from(&j).unwrap();
        assert_eq!(
            crate::job::JobSpec::try_from(&pb::Job::from(&spec)).unwrap(),
            spec
        );

        // The same as tables.
        let tables = HELLO.to_owned()
            + "[[group.task.volumes]]\ntype = \"bind\"\nsource = \"/srv/logs\"\ntarget = \"/logs\"\n";
        let j = parse("t.toml", &tables).unwrap();
        assert_eq!(j.groups[0].tasks[0].volumes[0].target, "/logs");

        let bad = text.replace("type = \"tmpfs\"", "type = \"nfs\"");
        let e = crate::job::JobSpec::try_from(&parse("v.toml", &bad).unwrap()).unwrap_err();
        assert!(e.to_string().contains("volume #2: type \"nfs\""), "{e}");
        let bad = text.replace("size_mb = 16", "size = 16");
        let e = parse("v.toml", &bad).unwrap_err();
        assert!(e.message.contains("unknown field `size`"), "{}", e.message);
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
