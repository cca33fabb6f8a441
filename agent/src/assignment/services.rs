//! A group's services and health checks, decoded from the wire into the
//! model's validated [`ServiceSpec`] and [`CheckSpec`].
//!
//! The scheduler validated the job already; this re-checks what the agent
//! relies on when it runs a check (ranges it sleeps and times out by, an
//! HTTP path it writes into a request line, an exec check's task), so that
//! a bad or newer peer is refused with the field named rather than probed
//! with. The bounds are the model's.

use drover_model::job::{
    check_dns_label, CheckSpec, ServiceSpec, MAX_CHECKS, MAX_CHECK_INTERVAL_MS,
    MAX_CHECK_THRESHOLD, MAX_SERVICES, MIN_CHECK_INTERVAL_MS, MIN_CHECK_TIMEOUT_MS,
};
use drover_model::{CheckKind, Protocol};
use drover_proto::v1 as pb;

use super::{InvalidAssignment, Task};

/// `value` if it lies in `min..=max`, else an [`InvalidAssignment::OutOfRange`]
/// naming `field`.
fn in_range(
    field: impl FnOnce() -> String,
    value: i64,
    min: i64,
    max: i64,
) -> Result<i64, InvalidAssignment> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(InvalidAssignment::OutOfRange {
            field: field(),
            value,
        })
    }
}

fn invalid(field: String, reason: impl Into<String>) -> InvalidAssignment {
    InvalidAssignment::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Decodes the services of `g`, whose tasks are `tasks`.
pub(super) fn decode(g: &pb::Group, tasks: &[Task]) -> Result<Vec<ServiceSpec>, InvalidAssignment> {
    if g.services.len() > MAX_SERVICES {
        return Err(invalid(
            "group.services".into(),
            format!("{} services, at most {MAX_SERVICES}", g.services.len()),
        ));
    }
    g.services.iter().map(|s| service(s, tasks)).collect()
}

fn service(s: &pb::Service, tasks: &[Task]) -> Result<ServiceSpec, InvalidAssignment> {
    let at = |field: &str| format!("group.services[{:?}].{field}", s.name);
    check_dns_label(&s.name).map_err(|e| invalid(at("name"), e))?;
    let port = in_range(|| at("port"), s.port, 1, i64::from(u16::MAX))?;
    let protocol = Protocol::parse(&at("protocol"), &s.protocol)?;
    if s.checks.len() > MAX_CHECKS {
        return Err(invalid(
            at("checks"),
            format!("{} checks, at most {MAX_CHECKS}", s.checks.len()),
        ));
    }
    let port = u16::try_from(port).map_err(|_| InvalidAssignment::OutOfRange {
        field: at("port"),
        value: s.port,
    })?;
    let checks = s
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| check(&|f: &str| at(&format!("checks[{i}].{f}")), c, port, tasks))
        .collect::<Result<_, _>>()?;
    Ok(ServiceSpec {
        name: s.name.clone(),
        port,
        protocol,
        tags: s.tags.clone(),
        checks,
    })
}

fn check(
    at: &dyn Fn(&str) -> String,
    c: &pb::Check,
    service_port: u16,
    tasks: &[Task],
) -> Result<CheckSpec, InvalidAssignment> {
    let kind = CheckKind::parse(&at("type"), &c.r#type)?;
    let interval = in_range(
        || at("interval_ms"),
        c.interval_ms,
        MIN_CHECK_INTERVAL_MS,
        MAX_CHECK_INTERVAL_MS,
    )?;
    let timeout = in_range(
        || at("timeout_ms"),
        c.timeout_ms,
        MIN_CHECK_TIMEOUT_MS,
        interval,
    )?;
    let threshold = |field: &str, v: i64| -> Result<u32, InvalidAssignment> {
        let v = in_range(|| at(field), v, 1, MAX_CHECK_THRESHOLD)?;
        u32::try_from(v).map_err(|_| InvalidAssignment::OutOfRange {
            field: at(field),
            value: v,
        })
    };
    let port = match in_range(|| at("port"), c.port, 0, i64::from(u16::MAX))? {
        0 => service_port,
        p => u16::try_from(p).unwrap_or(service_port),
    };
    let mut task = String::new();
    match kind {
        CheckKind::Http => {
            // Written into the request line as is.
            if !c.path.starts_with('/')
                || c.path.chars().any(|ch| ch.is_ascii_control() || ch == ' ')
            {
                return Err(invalid(
                    at("path"),
                    format!(
                        "{:?} is not a path starting with '/' without spaces or control characters",
                        c.path
                    ),
                ));
            }
        }
        CheckKind::Exec => {
            if c.command.first().is_none_or(String::is_empty) {
                return Err(InvalidAssignment::Missing {
                    field: at("command"),
                });
            }
            task = if c.task.is_empty() {
                tasks.first().map(|t| t.name.clone()).unwrap_or_default()
            } else {
                c.task.clone()
            };
            if !tasks.iter().any(|t| t.name == task) {
                return Err(invalid(
                    at("task"),
                    format!("{task:?} is not a task of the group"),
                ));
            }
        }
        CheckKind::Tcp => {}
    }
    Ok(CheckSpec {
        kind,
        path: if kind == CheckKind::Http {
            c.path.clone()
        } else {
            String::new()
        },
        command: if kind == CheckKind::Exec {
            c.command.clone()
        } else {
            Vec::new()
        },
        task,
        port,
        interval_ms: u64::try_from(interval).unwrap_or(u64::MAX),
        timeout_ms: u64::try_from(timeout).unwrap_or(u64::MAX),
        success_before_passing: threshold("success_before_passing", c.success_before_passing)?,
        failures_before_critical: threshold(
            "failures_before_critical",
            c.failures_before_critical,
        )?,
    })
}
