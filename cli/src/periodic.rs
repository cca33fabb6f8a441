//! `drover job periodic force JOB`, and how periodic jobs and their
//! children show in `job status`.

use anyhow::Result;
use drover_proto::v1 as pb;
use serde_json::{json, Value};

use crate::connect::{channel, status_error};
use crate::{output, ClientOpts, Output};

/// Launches a child of periodic job `name` now and prints it.
pub async fn force(opts: &ClientOpts, name: &str) -> Result<()> {
    let mut client = pb::job_service_client::JobServiceClient::new(channel(opts).await?);
    let resp = client
        .force_periodic(pb::ForcePeriodicRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&json!({
            "job": name,
            "child": resp.child,
            "allocations": output::allocs_json(&resp.allocations),
        })),
        Output::Table => {
            outln!("launched {}", resp.child);
            output::allocs_table(&resp.allocations);
        }
    }
    Ok(())
}

/// A unix time for people: RFC 3339 in UTC, `-` for none.
fn when(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// `job status` lines of a periodic parent (its schedule, last and next
/// tick) or child (its parent).
pub fn job_lines(info: &pb::JobInfo, job: &pb::Job) {
    if !info.parent.is_empty() {
        outln!("Parent   {}", info.parent);
    }
    if let Some(p) = &job.periodic {
        let overlap = if p.prohibit_overlap {
            ", no overlap"
        } else {
            ""
        };
        outln!("Periodic {:?} in {}{overlap}", p.cron, p.time_zone);
        outln!("Last     {}", when(info.periodic_last_unix));
        outln!("Next     {}", when(info.periodic_next_unix));
    }
}

/// The `periodic` object of `job status -o json`; null for other jobs.
pub fn job_json(info: &pb::JobInfo, job: &pb::Job) -> Value {
    match &job.periodic {
        None => Value::Null,
        Some(p) => json!({
            "cron": p.cron,
            "time_zone": p.time_zone,
            "prohibit_overlap": p.prohibit_overlap,
            "last_tick_unix": info.periodic_last_unix,
            "next_tick_unix": info.periodic_next_unix,
        }),
    }
}

/// What `job stop` says of a periodic parent's children left running.
pub fn running_children_note(name: &str, children: &[String]) {
    if children.is_empty() {
        return;
    }
    outln!(
        "periodic job {name:?} launches no more children; {} still running, left to finish: {}",
        children.len(),
        children.join(", ")
    );
    outln!("(stop one with `drover job stop CHILD`)");
}
