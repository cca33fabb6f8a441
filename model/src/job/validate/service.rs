//! A group's services and their checks.

use std::collections::BTreeSet;

use drover_proto::v1 as pb;

use super::{clamp_u64, Problems};
use crate::job::{
    check_dns_label, CheckSpec, ServiceSpec, TaskSpec, MAX_ARGS, MAX_CHECKS, MAX_CHECK_INTERVAL_MS,
    MAX_CHECK_THRESHOLD, MAX_SERVICES, MAX_TAGS, MIN_CHECK_INTERVAL_MS, MIN_CHECK_TIMEOUT_MS,
};
use crate::wire::{CheckKind, NetworkMode, Protocol};

/// Checks the services of the group at `gpath`; `seen` holds the service
/// names of the job's earlier groups (a name is unique within a job).
pub(super) fn services(
    p: &mut Problems,
    gpath: &str,
    g: &pb::Group,
    tasks: &[TaskSpec],
    seen: &mut BTreeSet<String>,
) -> Vec<ServiceSpec> {
    if g.services.is_empty() {
        return Vec::new();
    }
    if NetworkMode::parse("network", &g.network) == Ok(NetworkMode::None) {
        p.push(
            gpath,
            "a service needs an address, and network = \"none\" gives the allocation none; use \"bridge\"",
        );
    }
    if g.services.len() > MAX_SERVICES {
        p.push(
            gpath,
            format!(
                "{} services, at most {MAX_SERVICES} allowed",
                g.services.len()
            ),
        );
    }
    g.services
        .iter()
        .enumerate()
        .map(|(i, s)| service(p, gpath, i, s, tasks, seen))
        .collect()
}

fn service(
    p: &mut Problems,
    gpath: &str,
    index: usize,
    s: &pb::Service,
    tasks: &[TaskSpec],
    seen: &mut BTreeSet<String>,
) -> ServiceSpec {
    let spath = p.named(gpath, "service", index, &s.name, seen);
    p.range(&spath, "port", s.port, 1, i64::from(u16::MAX));
    let protocol = Protocol::parse("protocol", &s.protocol).unwrap_or_else(|e| {
        p.push(
            &spath,
            format!("protocol {:?} is neither \"tcp\" nor \"udp\"", e.value),
        );
        Protocol::Tcp
    });
    if s.tags.len() > MAX_TAGS {
        p.push(
            &spath,
            format!("{} tags, at most {MAX_TAGS} allowed", s.tags.len()),
        );
    }
    let mut tags = BTreeSet::new();
    for tag in &s.tags {
        if let Err(e) = check_dns_label(tag) {
            p.push(&spath, format!("tag {e}"));
        } else if !tags.insert(tag.as_str()) {
            p.push(&spath, format!("tag {tag:?} is listed twice"));
        } else if tag == "service" || tag.starts_with('_') {
            p.push(&spath, format!("tag {tag:?} is reserved"));
        }
    }
    if s.checks.len() > MAX_CHECKS {
        p.push(
            &spath,
            format!("{} checks, at most {MAX_CHECKS} allowed", s.checks.len()),
        );
    }
    let port = u16::try_from(s.port).unwrap_or(0);
    let checks = s
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| check(p, &format!("{spath} check #{}", i + 1), c, port, tasks))
        .collect();
    ServiceSpec {
        name: s.name.clone(),
        port,
        protocol,
        tags: s.tags.clone(),
        checks,
    }
}

fn check(
    p: &mut Problems,
    cpath: &str,
    c: &pb::Check,
    service_port: u16,
    tasks: &[TaskSpec],
) -> CheckSpec {
    let kind = CheckKind::parse("type", &c.r#type).unwrap_or_else(|e| {
        p.push(
            cpath,
            format!("type {:?} is not one of {}", e.value, CheckKind::EXPECTED),
        );
        CheckKind::Tcp
    });
    p.range(
        cpath,
        "interval_ms",
        c.interval_ms,
        MIN_CHECK_INTERVAL_MS,
        MAX_CHECK_INTERVAL_MS,
    );
    p.range(
        cpath,
        "timeout_ms",
        c.timeout_ms,
        MIN_CHECK_TIMEOUT_MS,
        MAX_CHECK_INTERVAL_MS,
    );
    if c.timeout_ms > c.interval_ms {
        p.push(
            cpath,
            format!(
                "timeout_ms ({}) must not exceed interval_ms ({}): runs would overlap",
                c.timeout_ms, c.interval_ms
            ),
        );
    }
    p.range(
        cpath,
        "success_before_passing",
        c.success_before_passing,
        1,
        MAX_CHECK_THRESHOLD,
    );
    p.range(
        cpath,
        "failures_before_critical",
        c.failures_before_critical,
        1,
        MAX_CHECK_THRESHOLD,
    );
    p.range(cpath, "port", c.port, 0, i64::from(u16::MAX));
    let task = kind_fields(p, cpath, kind, c, tasks);
    let port = match u16::try_from(c.port) {
        Ok(0) | Err(_) => service_port,
        Ok(port) => port,
    };
    CheckSpec {
        kind,
        path: c.path.clone(),
        command: c.command.clone(),
        task,
        port,
        interval_ms: clamp_u64(c.interval_ms),
        timeout_ms: clamp_u64(c.timeout_ms),
        success_before_passing: u32::try_from(c.success_before_passing).unwrap_or(1),
        failures_before_critical: u32::try_from(c.failures_before_critical).unwrap_or(1),
    }
}

/// Checks the fields that belong to one kind of check (http's path,
/// exec's command and task) and that no other kind sets them. Returns the
/// task an exec check runs in: the group's first unless named.
fn kind_fields(
    p: &mut Problems,
    cpath: &str,
    kind: CheckKind,
    c: &pb::Check,
    tasks: &[TaskSpec],
) -> String {
    let mut task = c.task.clone();
    match kind {
        CheckKind::Http => {
            if !c.path.starts_with('/') {
                p.push(cpath, format!("path must start with '/', got {:?}", c.path));
            } else if c.path.chars().any(|ch| ch.is_ascii_control() || ch == ' ') {
                p.push(
                    cpath,
                    format!("path {:?} contains a space or control character", c.path),
                );
            }
        }
        CheckKind::Exec => {
            if c.command.is_empty() || c.command[0].is_empty() {
                p.push(
                    cpath,
                    "an exec check needs a command, e.g. [\"/bin/check\"]",
                );
            } else if c.command.len() > MAX_ARGS {
                p.push(
                    cpath,
                    format!(
                        "command has {} arguments, at most {MAX_ARGS} allowed",
                        c.command.len()
                    ),
                );
            }
            if task.is_empty() {
                task = tasks.first().map(|t| t.name.clone()).unwrap_or_default();
            } else if !tasks.iter().any(|t| t.name == task) {
                p.push(cpath, format!("task {task:?} is not a task of this group"));
            }
        }
        CheckKind::Tcp => {}
    }
    if kind != CheckKind::Http && !c.path.is_empty() {
        p.push(cpath, format!("path is only for http checks, not {kind}"));
    }
    if kind != CheckKind::Exec && !(c.command.is_empty() && c.task.is_empty()) {
        p.push(
            cpath,
            format!("command and task are only for exec checks, not {kind}"),
        );
    }
    task
}
