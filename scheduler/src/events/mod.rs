//! Allocation events: what happened to each allocation (placed, started,
//! exited with its code or signal, OOM-killed, restarting after a delay, a
//! check passing or failing, rescheduled, stop requested and why, refused
//! by the node policy and why), for `drover alloc status` and
//! `drover events`.
//!
//! Two sources: the scheduler's own decisions, derived from each change of
//! an allocation record ([`derive`], followed by the leader's
//! [`watch::run`]), and what agents report with their status reports
//! (`AllocStatus.events`, recorded by [`EventLog::record_reported`]).
//!
//! Stored like the audit trail ([`crate::audit`]), under
//! `<prefix>events/<unix ms, 16 digits>-<hash>`: names that sort in time
//! order, the hash of the event making a repeated report land on the same
//! key. Bounded two ways ([`EventLimits`]): at most `per_alloc` events per
//! allocation and `max_events` in all, the oldest dropped first. The
//! leader keeps the index of stored names ([`index::Index`], read from
//! the store on first use) to know which to delete without listing.

use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_store::{Kind, Store, StoreError, Write};
use serde::{Deserialize, Serialize};

use crate::state::AllocRecord;
use crate::trail::{clip, stable_hash, time_name};

pub mod derive;
pub mod index;
mod service;
pub mod watch;

pub use service::EventApi;

/// How many events the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// At most this many per allocation, the newest.
    pub per_alloc: usize,
    /// At most this many in all, the newest.
    pub max_events: usize,
}

impl Default for EventLimits {
    /// 25 per allocation (Nomad keeps 10 per task), 2,000 in all: under a
    /// MiB of the store.
    fn default() -> Self {
        EventLimits {
            per_alloc: 25,
            max_events: 2_000,
        }
    }
}

/// Longest message kept, in bytes.
const MAX_MESSAGE: usize = 1024;
/// Longest type or task name taken from an agent, in bytes.
const MAX_NAME: usize = 64;

/// One event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Event {
    /// When it happened, ms since the Unix epoch.
    pub time_unix_ms: i64,
    /// The allocation.
    pub alloc_id: String,
    /// `<job>.<group>[<index>]`.
    #[serde(default)]
    pub alloc_name: String,
    /// Its job.
    pub job: String,
    /// Its node.
    #[serde(default)]
    pub node_id: String,
    /// The task it concerns; empty for the allocation as a whole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// A [`drover_model::EventType`] name (`Started`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened, for people.
    pub message: String,
}

impl Event {
    /// An event of allocation `a` (task `task`, empty for the whole).
    pub fn of(
        a: &AllocRecord,
        time_unix_ms: i64,
        task: &str,
        kind: drover_model::EventType,
        message: impl Into<String>,
    ) -> Event {
        Event {
            time_unix_ms,
            alloc_id: a.id.clone(),
            alloc_name: a.name.clone(),
            job: a.job.clone(),
            node_id: a.node_id.clone(),
            task: task.to_string(),
            kind: kind.as_str().to_string(),
            message: message.into(),
        }
    }

    /// Its record name: its time, then `seq` (its place among the events
    /// recorded together, which orders those of one millisecond) and a
    /// hash of what it says.
    pub fn record_name(&self, seq: usize) -> String {
        let time = self.time_unix_ms.to_le_bytes();
        let hash = stable_hash(&[
            &time,
            self.alloc_id.as_bytes(),
            self.task.as_bytes(),
            self.kind.as_bytes(),
            self.message.as_bytes(),
        ]);
        let seq = u64::try_from(seq.min(255)).unwrap_or(255);
        time_name(
            self.time_unix_ms,
            (seq << 56) | (hash & 0x00ff_ffff_ffff_ffff),
        )
    }
}

impl From<&Event> for pb::AllocEvent {
    fn from(e: &Event) -> pb::AllocEvent {
        pb::AllocEvent {
            time_unix_ms: e.time_unix_ms,
            alloc_id: e.alloc_id.clone(),
            alloc_name: e.alloc_name.clone(),
            job: e.job.clone(),
            node_id: e.node_id.clone(),
            task: e.task.clone(),
            r#type: e.kind.clone(),
            message: e.message.clone(),
        }
    }
}

/// Which events a listing or a follower wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this job's (any when empty).
    pub job: String,
    /// Only this allocation's (any when empty).
    pub alloc_id: String,
}

impl Filter {
    /// Whether `e` passes.
    pub fn admits(&self, e: &Event) -> bool {
        (self.job.is_empty() || e.job == self.job)
            && (self.alloc_id.is_empty() || e.alloc_id == self.alloc_id)
    }
}

/// The events in the store.
#[derive(Debug)]
pub struct EventLog {
    store: Store,
    limits: EventLimits,
    /// The stored names, once read (`None` before the first write).
    index: tokio::sync::Mutex<Option<index::Index>>,
}

impl EventLog {
    /// The events in `store`, bounded by `limits`.
    pub fn new(store: Store, limits: EventLimits) -> Arc<EventLog> {
        Arc::new(EventLog {
            store,
            limits,
            index: tokio::sync::Mutex::new(None),
        })
    }

    /// The store the events are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes `events` (those already stored are skipped), then deletes
    /// the oldest past the limits.
    pub async fn record(&self, events: Vec<Event>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = self.index.lock().await;
        // Taken out while writing: a failed write leaves none, so the next
        // write reads the names again from the store.
        let mut index = match guard.take() {
            Some(index) => index,
            None => self.read_index().await?,
        };
        for (seq, mut e) in events.into_iter().enumerate() {
            e.message = clip(e.message, MAX_MESSAGE);
            let name = e.record_name(seq);
            if !index.insert(&name, &e.alloc_id) {
                continue;
            }
            tracing::info!(
                target: "drover::events",
                alloc_id = %e.alloc_id,
                job = %e.job,
                task = %e.task,
                kind = %e.kind,
                message = %e.message,
                "event"
            );
            self.store.put(Kind::Event, &name, &e).await?;
        }
        let gone = index.over(self.limits);
        self.delete(&gone).await?;
        *guard = Some(index);
        Ok(())
    }

    /// The stored names, read once per leader term.
    async fn read_index(&self) -> Result<index::Index, StoreError> {
        let listing = self.store.list_prefix::<Event>(Kind::Event, "").await?;
        let mut index = index::Index::default();
        for v in &listing.items {
            index.insert(&v.name, &v.value.alloc_id);
        }
        // What another scheduler left past the limits goes now.
        let gone = index.over(self.limits);
        self.delete(&gone).await?;
        Ok(index)
    }

    async fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        for chunk in names.chunks(64) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|name| Write::Delete {
                    kind: Kind::Event,
                    name: name.clone(),
                })
                .collect();
            self.store.commit(&[], &writes).await?;
        }
        if !names.is_empty() {
            tracing::debug!(deleted = names.len(), "events pruned");
        }
        Ok(())
    }

    /// Records the events node `node_id` reported with its status of one
    /// allocation, once its record says it is the node's; the agent's
    /// events carry their time, task, type and message, the rest comes
    /// from the record.
    pub async fn record_reported(
        &self,
        node_id: &str,
        st: &pb::AllocStatus,
    ) -> Result<(), StoreError> {
        if st.events.is_empty() {
            return Ok(());
        }
        let Some(a) = self
            .store
            .get::<AllocRecord>(Kind::Alloc, &st.alloc_id)
            .await?
        else {
            tracing::debug!(node_id, alloc_id = %st.alloc_id, "events of an unknown allocation; ignored");
            return Ok(());
        };
        if a.value.node_id != node_id {
            tracing::warn!(node_id, alloc_id = %st.alloc_id, "node reported events of another node's allocation; ignored");
            return Ok(());
        }
        let now = drover_model::now_ms();
        let events = st
            .events
            .iter()
            .filter(|e| !e.r#type.is_empty())
            .map(|e| Event {
                time_unix_ms: if e.time_unix_ms > 0 {
                    e.time_unix_ms
                } else {
                    now
                },
                alloc_id: a.value.id.clone(),
                alloc_name: a.value.name.clone(),
                job: a.value.job.clone(),
                node_id: a.value.node_id.clone(),
                task: clip(e.task.clone(), MAX_NAME),
                kind: clip(e.r#type.clone(), MAX_NAME),
                message: e.message.clone(),
            })
            .collect();
        self.record(events).await
    }

    /// The events `filter` admits, oldest first; the newest `limit` of
    /// them when `limit` is not 0. Also the store revision read at.
    pub async fn list(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<(Vec<Event>, i64), StoreError> {
        let listing = self.store.list_prefix::<Event>(Kind::Event, "").await?;
        let mut out: Vec<Event> = listing
            .items
            .into_iter()
            .map(|v| v.value)
            .filter(|e| filter.admits(e))
            .collect();
        if limit > 0 && out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok((out, listing.revision))
    }

    /// The `n` most recent events of the whole cluster, newest first: for
    /// the status page.
    pub async fn recent(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let (mut events, _) = self.list(&Filter::default(), n).await?;
        events.reverse();
        Ok(events)
    }
}

/// The `n` most recent events of the cluster kept in `store`, newest
/// first (see [`EventLog::recent`]): for whoever has only the store.
pub async fn recent_events(store: &Store, n: usize) -> Result<Vec<Event>, StoreError> {
    let listing = store.list_prefix::<Event>(Kind::Event, "").await?;
    Ok(listing
        .items
        .into_iter()
        .rev()
        .take(n)
        .map(|v| v.value)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_gets_the_same_name_and_names_sort_by_time() {
        let e = Event {
            time_unix_ms: 1_000,
            alloc_id: "a1".into(),
            kind: "Started".into(),
            message: "task started".into(),
            ..Event::default()
        };
        assert_eq!(e.record_name(0), e.clone().record_name(0));
        let other = Event {
            message: "task started again".into(),
            ..e.clone()
        };
        assert_ne!(e.record_name(0), other.record_name(0));
        // Of one millisecond, the one recorded first sorts first.
        assert!(other.record_name(0) < e.record_name(1));
        let later = Event {
            time_unix_ms: 1_001,
            ..e.clone()
        };
        assert!(e.record_name(9) < later.record_name(0));
    }

    #[test]
    fn filters_match_job_and_allocation() {
        let e = Event {
            job: "web".into(),
            alloc_id: "a1".into(),
            ..Event::default()
        };
        assert!(Filter::default().admits(&e));
        let by_job = Filter {
            job: "web".into(),
            ..Filter::default()
        };
        assert!(by_job.admits(&e));
        let other = Filter {
            job: "db".into(),
            ..Filter::default()
        };
        assert!(!other.admits(&e));
        let by_alloc = Filter {
            alloc_id: "a2".into(),
            ..Filter::default()
        };
        assert!(!by_alloc.admits(&e));
    }
}
