//! `drover events [-f] [--job J] [--alloc A]` and the Recent Events of
//! `drover alloc status` (see `drover_scheduler::events`).

use anyhow::Result;
use drover_proto::v1 as pb;
use serde_json::{json, Value};

use crate::connect::{channel, status_error};
use crate::{output, ClientOpts, Output};

/// Events `alloc status` shows, the newest.
const ALLOC_STATUS_EVENTS: u32 = 10;

/// A time for people: RFC 3339 in UTC, to the millisecond.
fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.round(jiff::Unit::Millisecond)
                .map_or(t, |r| r)
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// The description column: the task first, when the event is a task's.
fn description(e: &pb::AllocEvent) -> String {
    if e.task.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.task, e.message)
    }
}

/// One event as JSON (stable field names).
pub fn event_json(e: &pb::AllocEvent) -> Value {
    json!({
        "time_unix_ms": e.time_unix_ms,
        "alloc_id": e.alloc_id,
        "alloc_name": e.alloc_name,
        "job": e.job,
        "node_id": e.node_id,
        "task": e.task,
        "type": e.r#type,
        "message": e.message,
    })
}

async fn client(
    opts: &ClientOpts,
) -> Result<pb::event_service_client::EventServiceClient<tonic::transport::Channel>> {
    Ok(
        pb::event_service_client::EventServiceClient::new(channel(opts).await?)
            .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES),
    )
}

/// The newest events of allocation `alloc_id` (its full id), oldest first.
pub async fn alloc_events(opts: &ClientOpts, alloc_id: &str) -> Result<Vec<pb::AllocEvent>> {
    let resp = client(opts)
        .await?
        .list(pb::ListEventsRequest {
            alloc_id: alloc_id.to_string(),
            limit: ALLOC_STATUS_EVENTS,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(resp.events)
}

/// The Recent Events table of `alloc status`, newest first as Nomad shows
/// them.
pub fn recent_events_table(events: &[pb::AllocEvent]) {
    outln!();
    outln!("Recent Events:");
    output::table(
        &["TIME", "TYPE", "DESCRIPTION"],
        events
            .iter()
            .rev()
            .map(|e| vec![when(e.time_unix_ms), e.r#type.clone(), description(e)])
            .collect(),
    );
}

/// A row of `drover events`.
fn row(e: &pb::AllocEvent) -> Vec<String> {
    vec![
        when(e.time_unix_ms),
        if e.alloc_name.is_empty() {
            e.alloc_id.chars().take(8).collect()
        } else {
            e.alloc_name.clone()
        },
        e.r#type.clone(),
        description(e),
    ]
}

const HEADERS: [&str; 4] = ["TIME", "ALLOC", "TYPE", "DESCRIPTION"];

/// Lists the kept events (`--job`, `--alloc` filter them; `limit`: the
/// newest so many), or with `follow` streams them as they are recorded
/// after the newest `limit` kept (one JSON document per line with
/// `-o json`).
pub async fn events(
    opts: &ClientOpts,
    job: Option<String>,
    alloc: Option<String>,
    follow: bool,
    limit: u32,
) -> Result<()> {
    let (job, alloc_id) = (job.unwrap_or_default(), alloc.unwrap_or_default());
    let mut c = client(opts).await?;
    if !follow {
        let resp = c
            .list(pb::ListEventsRequest {
                job,
                alloc_id,
                limit,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        match opts.output {
            Output::Json => output::json(&resp.events.iter().map(event_json).collect::<Vec<_>>()),
            Output::Table => output::table(&HEADERS, resp.events.iter().map(row).collect()),
        }
        return Ok(());
    }
    let mut stream = c
        .follow(pb::FollowEventsRequest {
            job,
            alloc_id,
            backlog: limit,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if opts.output == Output::Table {
        outln!("{}", HEADERS.join("  "));
    }
    while let Some(e) = stream.message().await.map_err(status_error)? {
        match opts.output {
            Output::Json => output::json(&event_json(&e)),
            Output::Table => outln!("{}", row(&e).join("  ")),
        }
    }
    Ok(())
}
