//! Tables for people and JSON for programs. The binary is the one place
//! that prints to standard output.

use drover_proto::v1 as pb;

pub(crate) use crate::columns::{age, table};
use serde_json::{json, Value};

/// `-o table|json` of the commands that take no scheduler address (`tls`,
/// `store`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OutputOpt {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = crate::Output::Table)]
    pub output: crate::Output,
}

/// Prints the files a command wrote: one path a line, or
/// `{"files": [...]}`.
pub fn files(out: OutputOpt, files: &[std::path::PathBuf]) {
    match out.output {
        crate::Output::Json => json(&json!({
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        })),
        crate::Output::Table => {
            for f in files {
                outln!("{}", f.display());
            }
        }
    }
}

/// Prints a JSON value on one line.
pub fn json<T: serde::Serialize + ?Sized>(v: &T) {
    let v = serde_json::to_value(v).unwrap_or(Value::Null);
    outln!("{v}");
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn task_summary(a: &pb::Allocation) -> String {
    a.tasks
        .iter()
        .map(|t| {
            let mut s = format!("{}={}", t.name, t.state);
            if t.pid > 0 && t.state == "running" {
                s.push_str(&format!("(pid {})", t.pid));
            }
            if let Some(c) = t.exit_code {
                s.push_str(&format!("(exit {c})"));
            }
            if let Some(sig) = t.signal {
                s.push_str(&format!("(signal {sig})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Allocation rows.
pub fn allocs_table(allocs: &[pb::Allocation]) {
    table(
        &["ID", "NAME", "NODE", "IP", "DESIRED", "STATUS", "TASKS"],
        allocs
            .iter()
            .map(|a| {
                vec![
                    short(&a.id),
                    a.name.clone(),
                    a.node_id.clone(),
                    if a.ip.is_empty() {
                        "-".into()
                    } else {
                        a.ip.clone()
                    },
                    a.desired.clone(),
                    a.status.clone(),
                    task_summary(a),
                ]
            })
            .collect(),
    );
}

/// JSON for allocations.
pub fn allocs_json(allocs: &[pb::Allocation]) -> Vec<Value> {
    allocs
        .iter()
        .map(|a| {
            let mut v = json!({
                "id": a.id,
                "name": a.name,
                "job": a.job,
                "group": a.group,
                "index": a.index,
                "node_id": a.node_id,
                "ip": a.ip,
                "desired": a.desired,
                "status": a.status,
                "job_version": a.job_version,
                "created_unix_ms": a.created_unix_ms,
                "modified_unix_ms": a.modified_unix_ms,
                "tasks": a.tasks.iter().map(|t| json!({
                    "name": t.name,
                    "state": t.state,
                    "pid": t.pid,
                    "exit_code": t.exit_code,
                    "signal": t.signal,
                    "message": t.message,
                    "restarts": t.restarts,
                    "image_digest": t.image_digest,
                })).collect::<Vec<_>>(),
            });
            crate::resched::add_json(a, &mut v);
            v
        })
        .collect()
}

/// JSON for one allocation in detail: [`allocs_json`] and its checks.
pub fn alloc_detail_json(a: &pb::Allocation) -> Value {
    let mut v = allocs_json(std::slice::from_ref(a))
        .pop()
        .unwrap_or(Value::Null);
    v["checks"] = a
        .checks
        .iter()
        .map(|c| {
            json!({
                "service": c.service,
                "index": c.index,
                "type": c.r#type,
                "status": c.status,
                "output": c.output,
                "last_unix_ms": c.last_unix_ms,
            })
        })
        .collect();
    v
}

/// The first line of `text`, at most 60 characters (`...` when cut).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim_end();
    if line.chars().count() <= 60 {
        return line.to_owned();
    }
    let cut: String = line.chars().take(57).collect();
    format!("{cut}...")
}

/// The checks of an allocation's services as table rows.
fn check_rows(checks: &[pb::CheckState], now_ms: i64) -> Vec<Vec<String>> {
    checks
        .iter()
        .map(|c| {
            vec![
                c.service.clone(),
                c.index.to_string(),
                c.r#type.clone(),
                c.status.clone(),
                age(now_ms, c.last_unix_ms),
                first_line(&c.output),
            ]
        })
        .collect()
}

/// One allocation in detail.
pub fn alloc_detail(a: &pb::Allocation) {
    outln!("ID       {}", a.id);
    outln!("Name     {}", a.name);
    outln!("Node     {}", a.node_id);
    if !a.ip.is_empty() {
        outln!("IP       {}", a.ip);
    }
    outln!("Desired  {}", a.desired);
    outln!("Status   {}", a.status);
    crate::resched::alloc_lines(a);
    outln!();
    table(
        &[
            "TASK", "STATE", "PID", "EXIT", "SIGNAL", "RESTARTS", "MESSAGE",
        ],
        a.tasks
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.state.clone(),
                    if t.pid > 0 {
                        t.pid.to_string()
                    } else {
                        "-".into()
                    },
                    t.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
                    t.signal.map(|c| c.to_string()).unwrap_or("-".into()),
                    t.restarts.to_string(),
                    t.message.clone(),
                ]
            })
            .collect(),
    );
    // Images pulled from registries: the digest every restart runs.
    for t in a.tasks.iter().filter(|t| !t.image_digest.is_empty()) {
        outln!("Image    {}  {}", t.name, t.image_digest);
    }
    if !a.checks.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        outln!();
        outln!("Checks");
        table(
            &["SERVICE", "#", "TYPE", "STATUS", "LAST", "OUTPUT"],
            check_rows(&a.checks, now),
        );
    }
}

/// A job and its allocations.
pub fn job_table(got: &pb::GetJobResponse) {
    if let Some(info) = &got.job {
        let job = info.job.clone().unwrap_or_default();
        outln!("Job      {}", job.name);
        outln!("Kind     {}", job.kind);
        outln!("Status   {}", info.status);
        outln!("Version  {}", info.version);
        crate::periodic::job_lines(info, &job);
        outln!();
        crate::queued::pending_table(&info.pending, crate::queued::now_ms());
    }
    if !got.services.is_empty() {
        services_table(&got.services);
        outln!();
    }
    allocs_table(&got.allocations);
    crate::resched::job_lines(&got.allocations);
}

/// Per service of a job: its healthy (registered in DNS) instances of
/// those that should run.
fn services_table(services: &[pb::ServiceHealth]) {
    outln!("Services");
    table(
        &["GROUP", "SERVICE", "HEALTHY"],
        services
            .iter()
            .map(|s| {
                vec![
                    s.group.clone(),
                    s.service.clone(),
                    format!("{}/{}", s.healthy, s.instances),
                ]
            })
            .collect(),
    );
}

/// JSON for a job and its allocations.
pub fn job_json(got: &pb::GetJobResponse) -> Value {
    let info = got.job.clone().unwrap_or_default();
    let job = info.job.clone().unwrap_or_default();
    json!({
        "name": job.name,
        "kind": job.kind,
        "status": info.status,
        "version": info.version,
        "submitted_unix_ms": info.submitted_unix_ms,
        "parent": info.parent,
        "periodic": crate::periodic::job_json(&info, &job),
        "groups": job.groups.iter().map(|g| json!({"name": g.name, "count": g.count})).collect::<Vec<_>>(),
        "services": got.services.iter().map(|s| json!({
            "group": s.group,
            "service": s.service,
            "healthy": s.healthy,
            "instances": s.instances,
        })).collect::<Vec<_>>(),
        "pending": crate::queued::pending_json(&info.pending),
        "allocations": allocs_json(&got.allocations),
    })
}

/// JSON for a submission that was not waited on.
pub fn submit_json(name: &str, r: &pb::SubmitResponse) -> Value {
    json!({
        "name": name,
        "version": r.version,
        "warnings": r.warnings,
        "pending": crate::queued::pending_json(&r.pending),
        "allocations": allocs_json(&r.allocations),
    })
}

/// Job summaries.
pub fn jobs_table(jobs: &[pb::JobSummary]) {
    table(
        &[
            "NAME", "KIND", "STATUS", "HEALTHY", "RUNNING", "PENDING", "DESIRED", "PARENT",
        ],
        jobs.iter()
            .map(|j| {
                vec![
                    j.name.clone(),
                    if j.periodic {
                        format!("{}/periodic", j.kind)
                    } else {
                        j.kind.clone()
                    },
                    j.status.clone(),
                    format!("{}/{}", j.healthy, j.desired),
                    j.running.to_string(),
                    j.pending.to_string(),
                    j.desired.to_string(),
                    if j.parent.is_empty() {
                        "-".into()
                    } else {
                        j.parent.clone()
                    },
                ]
            })
            .collect(),
    );
}

/// JSON for job summaries.
pub fn jobs_json(jobs: &[pb::JobSummary]) -> Value {
    Value::Array(
        jobs.iter()
            .map(|j| {
                json!({
                    "name": j.name, "kind": j.kind, "status": j.status,
                    "running": j.running, "pending": j.pending, "desired": j.desired,
                    "healthy": j.healthy,
                    "parent": j.parent, "periodic": j.periodic,
                })
            })
            .collect(),
    )
}

/// Node rows.
pub fn nodes_table(nodes: &[pb::Node]) {
    table(
        &[
            "ID", "HOST", "ADDRESS", "SUBNET", "STATUS", "DRAIN", "CPU", "MEMORY", "ALLOCS",
        ],
        nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.hostname.clone(),
                    n.address.clone(),
                    if n.subnet.is_empty() {
                        "-".into()
                    } else {
                        n.subnet.clone()
                    },
                    n.status.clone(),
                    n.draining.to_string(),
                    format!("{}/{}m", n.used_cpu_millis, n.cpu_millis),
                    format!("{}/{} MiB", n.used_memory_mb, n.memory_mb),
                    n.allocations.to_string(),
                ]
            })
            .collect(),
    );
}

/// One node: its row, then its attributes and operator metadata, sorted,
/// as constraints name them (`${attr.arch}`, `${meta.rack}`).
pub fn node_detail(n: &pb::Node) {
    nodes_table(std::slice::from_ref(n));
    for (title, prefix, map) in [
        ("Attributes", "attr", &n.attributes),
        ("Meta", "meta", &n.meta),
    ] {
        outln!();
        outln!("{title}");
        let entries: std::collections::BTreeMap<_, _> = map.iter().collect();
        if entries.is_empty() {
            outln!("  (none)");
        }
        let width = entries.keys().map(|k| k.len()).max().unwrap_or(0) + prefix.len() + 4;
        for (k, v) in entries {
            outln!("  {:<width$} = {v}", format!("${{{prefix}.{k}}}"));
        }
    }
}

/// JSON for nodes.
pub fn nodes_json(nodes: &[pb::Node]) -> Vec<Value> {
    nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id, "hostname": n.hostname, "address": n.address,
                "subnet": n.subnet, "status": n.status, "draining": n.draining,
                "cpu_millis": n.cpu_millis, "memory_mb": n.memory_mb,
                "used_cpu_millis": n.used_cpu_millis, "used_memory_mb": n.used_memory_mb,
                "allocations": n.allocations, "last_seen_unix_ms": n.last_seen_unix_ms,
                "agent_version": n.agent_version,
                "attributes": n.attributes.iter().collect::<std::collections::BTreeMap<_, _>>(),
                "meta": n.meta.iter().collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect()
}

/// What a plan would do.
pub fn plan_table(p: &pb::PlanResponse) {
    outln!(
        "{} allocation(s) to place, {} to stop{}",
        p.place.len(),
        p.stop.len(),
        if p.job_exists { "" } else { " (new job)" }
    );
    for a in &p.place {
        outln!("+ {} on {}", a.name, a.node_id);
    }
    for a in &p.stop {
        outln!("- {} ({}) on {}", a.name, short(&a.id), a.node_id);
    }
    for f in &p.failures {
        outln!("! {f}");
    }
}

/// JSON for a plan.
pub fn plan_json(p: &pb::PlanResponse) -> Value {
    json!({
        "job_exists": p.job_exists,
        "place": p.place.iter().map(|a| json!({"name": a.name, "group": a.group, "index": a.index, "node_id": a.node_id})).collect::<Vec<_>>(),
        "stop": allocs_json(&p.stop),
        "failures": p.failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rows_show_age_and_the_first_line_of_output() {
        let checks = vec![
            pb::CheckState {
                service: "web".into(),
                index: 1,
                r#type: "http".into(),
                status: "critical".into(),
                output: "HTTP/1.1 500 Internal Server Error\r\nmore".into(),
                last_unix_ms: 10_000,
            },
            pb::CheckState {
                service: "web".into(),
                r#type: "exec".into(),
                status: "pending".into(),
                output: "x".repeat(100),
                ..Default::default()
            },
        ];
        let rows = check_rows(&checks, 13_500);
        assert_eq!(
            rows[0],
            [
                "web",
                "1",
                "http",
                "critical",
                "3s ago",
                "HTTP/1.1 500 Internal Server Error"
            ]
        );
        assert_eq!(rows[1][4], "-");
        assert_eq!(rows[1][5], format!("{}...", "x".repeat(57)));
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(age(0, 0), "-");
        assert_eq!(age(59_999, 1), "59s ago");
        assert_eq!(age(120_000, 1), "1m ago");
        assert_eq!(age(7_300_000, 1), "2h ago");
        assert_eq!(age(200_000_000, 1), "2d ago");
        assert_eq!(
            age(1_000, 5_000),
            "0s ago",
            "a clock behind is not negative"
        );
    }
}
