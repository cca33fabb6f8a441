//! The leader's loop that turns each change of an allocation record into
//! the events it means ([`super::derive`]) and records them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_store::{Kind, Store, StoreError, WatchEvent};
use tokio_util::sync::CancellationToken;

use super::derive::{alloc_events, StopContext};
use super::EventLog;
use crate::state::{AllocRecord, DesiredState, JobRecord, NodeRecord};

/// How long to wait before reading the allocations again after the store
/// failed.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the allocation records in `log`'s store until `stop`, recording
/// the events their changes make. Changes made while it does not run (no
/// leader, the store unreachable) make none.
pub async fn run(log: Arc<EventLog>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = follow(&log) => {
                if let Err(error) = r {
                    tracing::warn!(%error, "following allocations for events; reading them again");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Reads every allocation, then follows their changes until the watch
/// ends (history compacted: the caller reads them again).
async fn follow(log: &EventLog) -> Result<(), StoreError> {
    let store = log.store();
    let listing = store.list::<AllocRecord>(Kind::Alloc).await?;
    let mut known: HashMap<String, AllocRecord> = listing
        .items
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect();
    let mut changes = store.watch(Kind::Alloc, listing.revision + 1).await?;
    while let Some(event) = changes.recv().await {
        let change = match event {
            WatchEvent::Change(c) => c,
            WatchEvent::Compacted { .. } => return Ok(()),
        };
        let Some(bytes) = change.value else {
            known.remove(&change.name);
            continue;
        };
        let new: AllocRecord = match serde_json::from_slice(&bytes) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(alloc = %change.name, %error, "allocation record is not valid JSON; no events");
                continue;
            }
        };
        let old = known.get(&change.name);
        let stopping = old.is_some_and(|o| o.desired == DesiredState::Run)
            && new.desired == DesiredState::Stop;
        let (job, node) = if stopping {
            context(store, &new).await?
        } else {
            (None, None)
        };
        let ctx = StopContext {
            job: job.as_ref(),
            node: node.as_ref(),
        };
        let events = alloc_events(old, &new, ctx);
        known.insert(change.name, new);
        if let Err(error) = log.record(events).await {
            tracing::warn!(%error, "cannot record allocation events");
        }
    }
    Ok(())
}

/// The job and node records that explain a stop.
async fn context(
    store: &Store,
    a: &AllocRecord,
) -> Result<(Option<JobRecord>, Option<NodeRecord>), StoreError> {
    let job = store.get::<JobRecord>(Kind::Job, &a.job).await?;
    let node = store.get::<NodeRecord>(Kind::Node, &a.node_id).await?;
    Ok((job.map(|v| v.value), node.map(|v| v.value)))
}
