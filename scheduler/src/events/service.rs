//! `EventService`: `drover events [-f]` and the events of
//! `drover alloc status`.

use std::pin::Pin;
use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_store::{Kind, WatchEvent};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Event, EventLog, Filter};

type FollowStream = Pin<Box<dyn Stream<Item = Result<pb::AllocEvent, Status>> + Send + 'static>>;

/// Serves the events of an [`EventLog`].
#[derive(Clone, Debug)]
pub struct EventApi {
    log: Arc<EventLog>,
}

impl EventApi {
    /// The service over `log`.
    pub fn new(log: Arc<EventLog>) -> EventApi {
        EventApi { log }
    }
}

fn unavailable(e: &drover_store::StoreError) -> Status {
    Status::unavailable(format!("state store: {e}"))
}

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventApi {
    async fn list(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = req.into_inner();
        let filter = Filter {
            job: req.job,
            alloc_id: req.alloc_id,
        };
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let (events, _) = self
            .log
            .list(&filter, limit)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(Into::into).collect(),
        }))
    }

    type FollowStream = FollowStream;

    async fn follow(
        &self,
        req: Request<pb::FollowEventsRequest>,
    ) -> Result<Response<FollowStream>, Status> {
        let req = req.into_inner();
        let filter = Filter {
            job: req.job,
            alloc_id: req.alloc_id,
        };
        let backlog = usize::try_from(req.backlog).unwrap_or(usize::MAX);
        let (events, revision) = self
            .log
            .list(&filter, backlog)
            .await
            .map_err(|e| unavailable(&e))?;
        let changes = self
            .log
            .store()
            .watch(Kind::Event, revision + 1)
            .await
            .map_err(|e| unavailable(&e))?;
        let backlog = if backlog == 0 { Vec::new() } else { events };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow(filter, backlog, changes, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends `backlog`, then every event recorded after it that `filter`
/// admits, until the client hangs up or the watch ends.
async fn follow(
    filter: Filter,
    backlog: Vec<Event>,
    mut changes: mpsc::Receiver<WatchEvent>,
    tx: mpsc::Sender<Result<pb::AllocEvent, Status>>,
) {
    for e in &backlog {
        if tx.send(Ok(e.into())).await.is_err() {
            return;
        }
    }
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            e = changes.recv() => e,
        };
        let change = match event {
            Some(WatchEvent::Change(c)) => c,
            Some(WatchEvent::Compacted { compact_revision }) => {
                let _ = tx
                    .send(Err(Status::data_loss(format!(
                        "the store compacted its history up to revision {compact_revision}; follow again"
                    ))))
                    .await;
                return;
            }
            None => {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the store's watch ended; follow again",
                    )))
                    .await;
                return;
            }
        };
        // Deletes are the bounds dropping old events.
        let Some(bytes) = change.value else { continue };
        let Ok(e) = serde_json::from_slice::<Event>(&bytes) else {
            tracing::warn!(event = %change.name, "event record is not valid JSON; skipped");
            continue;
        };
        if filter.admits(&e) && tx.send(Ok((&e).into())).await.is_err() {
            return;
        }
    }
}
