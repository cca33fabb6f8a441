//! The status page as HTML, from a [`Snapshot`]: pure functions, every
//! text that comes from the store (job and task names, commands, node
//! meta, audit targets, messages) passed through [`escape`].

use std::fmt::Write as _;

use super::snapshot::{Event, NodeView, Snapshot};
use crate::deploy::Deployment;
use crate::discovery::desired::ServiceCount;
use crate::gate::Role;
use crate::state::{AllocRecord, JobRecord};

/// The stylesheet, inlined into every page (one request, nothing to build).
const STYLE: &str = include_str!("style.css");

/// What the page says beyond the state: who serves it and when.
#[derive(Debug, Clone)]
pub struct PageInfo<'a> {
    /// This scheduler's role in the election.
    pub role: &'a Role,
    /// Now, ms since the Unix epoch (ages are counted from it).
    pub now_unix_ms: i64,
    /// Seconds between automatic refreshes.
    pub refresh_secs: u64,
}

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references,
/// safe in element text and in quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How long ago `then` was, as of `now` (`12s ago`, `3m ago`, `2h ago`,
/// `4d ago`); `-` for 0 (never).
pub fn age(now_unix_ms: i64, then_unix_ms: i64) -> String {
    if then_unix_ms <= 0 {
        return "-".to_owned();
    }
    let s = (now_unix_ms - then_unix_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The whole page: the leader's with the state, a follower's naming the
/// leader instead (only the leader's view is current).
pub fn page(info: &PageInfo<'_>, snap: Option<&Snapshot>, error: Option<&str>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Drover status</title><style>{STYLE}</style></head><body>",
        info.refresh_secs
    );
    let _ = writeln!(
        h,
        "<header><h1>Drover</h1><span class=\"role\" id=\"role\">{}</span>\
         <span class=\"muted\">refreshes every {} s</span></header>\n<main>",
        role_text(info.role),
        info.refresh_secs
    );
    if let Role::Following { leader } = info.role {
        follower(&mut h, leader.as_deref());
    }
    if let Some(e) = error {
        let _ = writeln!(
            h,
            "<p class=\"error\" id=\"error\">The state store did not answer: {}</p>",
            escape(e)
        );
    }
    if let Some(s) = snap {
        nodes(&mut h, info.now_unix_ms, &s.nodes);
        jobs(&mut h, &s.jobs);
        allocs(&mut h, info.now_unix_ms, &s.allocs, s.allocs_left_off);
        services(&mut h, &s.services);
        deployments(&mut h, &s.jobs, &s.deployments);
        events(&mut h, info.now_unix_ms, &s.events);
        if !s.audit_shown {
            h.push_str(
                "<p class=\"muted\" id=\"audit-note\">Calls to the API (the audit \
                 trail) are left out: only admins may read them \
                 (<code>drover audit</code>).</p>\n",
            );
        }
    }
    h.push_str("</main></body></html>\n");
    h
}

fn role_text(role: &Role) -> &'static str {
    match role {
        Role::Leading => "leader",
        Role::Following { .. } => "follower",
    }
}

fn follower(h: &mut String, leader: Option<&str>) {
    h.push_str("<section class=\"follower\" id=\"follower\"><h2>This scheduler is a follower</h2>");
    match leader {
        Some(addr) => {
            let _ = write!(
                h,
                "<p>Only the leader's view of the cluster is current. The leader is the \
                 scheduler at <code id=\"leader\">{}</code> (its gRPC address): open the \
                 status page it serves (its <code>--http-listen</code> address).</p>",
                escape(addr)
            );
        }
        None => h.push_str(
            "<p>No leader is elected yet (an election is under way, or the replicas \
             cannot reach the store). This page refreshes by itself.</p>",
        ),
    }
    h.push_str("</section>\n");
}

/// Opens a section with a heading and a table with these columns.
fn table_start(h: &mut String, id: &str, title: &str, count: usize, columns: &[&str]) {
    let _ = write!(
        h,
        "<section id=\"{id}\"><h2>{title} <span class=\"count\">{count}</span></h2>"
    );
    if count == 0 {
        let _ = writeln!(
            h,
            "<p class=\"muted\">No {}.</p></section>",
            title.to_lowercase()
        );
        return;
    }
    h.push_str("<table><thead><tr>");
    for c in columns {
        let _ = write!(h, "<th>{c}</th>");
    }
    h.push_str("</tr></thead><tbody>\n");
}

fn table_end(h: &mut String, count: usize) {
    if count > 0 {
        h.push_str("</tbody></table></section>\n");
    }
}

/// A status word in a badge coloured by its class.
fn badge(status: &str) -> String {
    let class = match status {
        "running" | "ready" | "successful" | "complete" | "ok" | "passing" => "good",
        "pending" | "draining" | "restarting" | "initializing" => "warn",
        "failed" | "lost" | "down" | "cancelled" | "critical" => "bad",
        _ => "plain",
    };
    format!("<span class=\"badge {class}\">{}</span>", escape(status))
}

/// `used / total unit` with a bar.
fn usage_cell(used: u64, total: u64, unit: &str) -> String {
    let pct = used
        .saturating_mul(100)
        .checked_div(total)
        .map_or(0, |p| p.min(100));
    format!("<div class=\"bar\"><span style=\"width:{pct}%\"></span></div>{used} / {total} {unit}")
}

fn nodes(h: &mut String, now: i64, nodes: &[NodeView]) {
    let cols = [
        "Node", "Host", "Address", "Status", "CPU", "Memory", "Allocs", "Meta", "Seen",
    ];
    table_start(h, "nodes", "Nodes", nodes.len(), &cols);
    for v in nodes {
        let n = &v.node;
        let status = if n.draining {
            format!("{} {}", badge(n.status.as_str()), badge("draining"))
        } else {
            badge(n.status.as_str())
        };
        let meta: Vec<String> = n
            .meta
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
            .collect();
        let _ = writeln!(
            h,
            "<tr class=\"node\"><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{status}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&n.id),
            escape(&n.hostname),
            escape(&n.address),
            usage_cell(v.used.cpu_millis, n.resources.cpu_millis, "mCPU"),
            usage_cell(v.used.memory_mb, n.resources.memory_mb, "MiB"),
            v.allocations,
            meta.join(" "),
            age(now, n.last_seen_unix_ms),
        );
    }
    table_end(h, nodes.len());
}

fn jobs(h: &mut String, jobs: &[JobRecord]) {
    let cols = ["Job", "Kind", "Status", "Version", "Groups", "Waiting"];
    table_start(h, "jobs", "Jobs", jobs.len(), &cols);
    for j in jobs {
        let groups: Vec<String> = j
            .spec
            .groups
            .iter()
            .map(|g| {
                let tasks: Vec<String> = g
                    .tasks
                    .iter()
                    .map(|t| {
                        format!(
                            "<li>{}: <code>{}</code></li>",
                            escape(&t.name),
                            escape(&crate::audit::command_line(&t.command))
                        )
                    })
                    .collect();
                format!(
                    "<div class=\"group\"><b>{}</b> &times; {}<ul>{}</ul></div>",
                    escape(&g.name),
                    g.count,
                    tasks.concat()
                )
            })
            .collect();
        let waiting: Vec<String> = j
            .pending
            .iter()
            .map(|p| {
                format!(
                    "{} &times; {}: {}",
                    escape(&p.group),
                    p.count,
                    escape(&p.reason)
                )
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr class=\"job\"><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&j.spec.name),
            escape(j.spec.kind.as_str()),
            badge(j.status.as_str()),
            j.version,
            groups.concat(),
            waiting.join("<br>"),
        );
    }
    table_end(h, jobs.len());
}

fn allocs(h: &mut String, now: i64, allocs: &[AllocRecord], left_off: usize) {
    let cols = [
        "Allocation",
        "Name",
        "Node",
        "Status",
        "Desired",
        "Address",
        "Tasks",
        "Changed",
    ];
    table_start(h, "allocs", "Allocations", allocs.len(), &cols);
    for a in allocs {
        let tasks: Vec<String> = a
            .tasks
            .iter()
            .map(|t| {
                let mut s = format!("{} {}", escape(&t.name), badge(&t.state));
                if t.restarts > 0 {
                    let _ = write!(s, " ({} restarts)", t.restarts);
                }
                if !t.message.is_empty() {
                    let _ = write!(s, " <span class=\"muted\">{}</span>", escape(&t.message));
                }
                s
            })
            .collect();
        let short: String = a.id.chars().take(8).collect();
        let _ = writeln!(
            h,
            "<tr class=\"alloc\" data-id=\"{}\"><td class=\"id\" title=\"{}\">{}</td><td>{}</td>\
             <td class=\"id\">{}</td><td>{}</td><td>{}</td><td class=\"addr\">{}</td><td>{}</td>\
             <td>{}</td></tr>",
            escape(&a.id),
            escape(&a.id),
            escape(&short),
            escape(&a.name),
            escape(&a.node_id),
            badge(a.status.as_str()),
            escape(a.desired.as_str()),
            escape(&a.ip),
            tasks.join("<br>"),
            age(now, a.modified_unix_ms),
        );
    }
    table_end(h, allocs.len());
    if left_off > 0 {
        let _ = writeln!(
            h,
            "<p class=\"muted\">{left_off} more allocations (finished ones first) are not \
             listed: <code>drover alloc list</code> shows every one.</p>"
        );
    }
}

fn services(h: &mut String, services: &[(String, ServiceCount)]) {
    let cols = [
        "Service",
        "Job",
        "Group",
        "Healthy",
        "Unhealthy",
        "Instances",
    ];
    table_start(h, "services", "Services", services.len(), &cols);
    for (job, s) in services {
        let unhealthy = s.instances.saturating_sub(s.healthy);
        let _ = writeln!(
            h,
            "<tr class=\"service\"><td class=\"name\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"healthy\">{}</td><td class=\"unhealthy{}\">{unhealthy}</td>\
             <td>{}</td></tr>",
            escape(&s.service),
            escape(job),
            escape(&s.group),
            s.healthy,
            if unhealthy > 0 { " bad" } else { "" },
            s.instances,
        );
    }
    table_end(h, services.len());
}

fn deployments(h: &mut String, jobs: &[JobRecord], deployments: &[Deployment]) {
    let cols = ["Job", "Version", "Status", "Progress", "Description"];
    table_start(h, "deployments", "Deployments", deployments.len(), &cols);
    for d in deployments {
        let job = jobs.iter().find(|j| j.spec.name == d.job);
        let groups: Vec<String> = d
            .groups
            .iter()
            .map(|(name, g)| {
                let desired = job
                    .and_then(|j| j.spec.group(name))
                    .map_or(0, |g| u64::from(g.count));
                let healthy = u64::from(g.healthy());
                let mut s = format!(
                    "<div>{} {}",
                    escape(name),
                    usage_cell(healthy, desired, "healthy")
                );
                if g.unhealthy() > 0 {
                    let _ = write!(
                        s,
                        ", <span class=\"bad\">{} unhealthy</span>",
                        g.unhealthy()
                    );
                }
                if g.update.canary > 0 && !g.promoted {
                    let _ = write!(s, ", canaries {}/{}", g.canaries(), g.update.canary);
                }
                s.push_str("</div>");
                s
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr class=\"deployment\"><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            escape(&d.job),
            d.version,
            badge(d.status.as_str()),
            groups.concat(),
            escape(&d.description),
        );
    }
    table_end(h, deployments.len());
}

fn events(h: &mut String, now: i64, events: &[Event]) {
    let cols = ["When", "Source", "Who", "What", "Target", "Outcome"];
    table_start(h, "events", "Recent events", events.len(), &cols);
    for e in events {
        let outcome = if e.source != "audit" {
            escape(&e.outcome)
        } else if e.outcome == "ok" {
            badge("ok")
        } else {
            format!("<span class=\"bad\">{}</span>", escape(&e.outcome))
        };
        let _ = writeln!(
            h,
            "<tr class=\"event\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{outcome}</td></tr>",
            age(now, e.time_unix_ms),
            escape(e.source),
            escape(&e.actor),
            escape(&e.action),
            escape(&e.target),
        );
    }
    table_end(h, events.len());
}
