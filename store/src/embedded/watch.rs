//! The Watch service: one task per stream multiplexes its watches over the
//! broadcast of durable revisions, replaying history for `start_revision`
//! and after falling behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drover_proto::etcd::etcdserverpb::{
    watch_create_request::FilterType, watch_request, watch_server::Watch, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use drover_proto::etcd::mvccpb::event::EventType;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::mvcc::in_range;
use super::record::Revision;
use super::{header, Shared};

/// etcd's default interval for `progress_notify` watches.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// Responses queued per stream before the stream task waits on the client.
const STREAM_BUFFER: usize = 256;

/// etcd's Watch service.
pub(crate) struct WatchService {
    shared: Arc<Shared>,
}

impl WatchService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type Tx = mpsc::Sender<Result<WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = WatchStream {
            live: self.shared.durable.events.subscribe(),
            shared: Arc::clone(&self.shared),
            watches: BTreeMap::new(),
            next_id: 0,
            tx,
        };
        tokio::spawn(stream.run(req.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Counts a live watch for [`super::EmbeddedHandle::watcher_count`].
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(c: &Arc<AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(c))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not yet delivered.
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    _counted: Counted,
}

/// The stream ended (client gone or server stopping).
struct Closed;

struct WatchStream {
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<Revision>>,
    watches: BTreeMap<i64, Watcher>,
    next_id: i64,
    tx: Tx,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let stop = self.shared.shutdown.clone();
        let start = tokio::time::Instant::now() + PROGRESS_INTERVAL;
        let mut progress = tokio::time::interval_at(start, PROGRESS_INTERVAL);
        loop {
            let step = tokio::select! {
                () = stop.cancelled() => Err(Closed),
                () = self.tx.closed() => Err(Closed),
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => self.handle(req).await,
                    Some(Err(_)) | None => Err(Closed),
                },
                ev = self.live.recv() => match ev {
                    Ok(rev) => self.deliver(&rev).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "watch stream lagged; reading history");
                        self.catch_up().await
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(Closed),
                },
                _ = progress.tick() => self.progress_notify().await,
            };
            if step.is_err() {
                break;
            }
        }
        // Dropping `self` drops every watcher and its count.
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Closed> {
        self.tx.send(Ok(resp)).await.map_err(|_| Closed)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                if self.watches.remove(&c.watch_id).is_some() {
                    self.send(WatchResponse {
                        header: header(self.shared.durable_rev()),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..WatchResponse::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // etcd 3.4: one response for the whole stream, watch id -1.
                self.send(WatchResponse {
                    header: header(self.shared.durable_rev()),
                    watch_id: -1,
                    ..WatchResponse::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Closed> {
        let id = if c.watch_id != 0 {
            if self.watches.contains_key(&c.watch_id) {
                return self
                    .send(WatchResponse {
                        header: header(self.shared.durable_rev()),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch ID".to_string(),
                        ..WatchResponse::default()
                    })
                    .await;
            }
            c.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let durable = self.shared.durable_rev();
        // Taken before the created response so that no revision between
        // the read and the subscription can be missed.
        let replay = if c.start_revision > 0 {
            Some(self.shared.lock().history_since(c.start_revision))
        } else {
            None
        };
        self.send(WatchResponse {
            header: header(durable),
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        })
        .await?;
        let filters = |f: FilterType| c.filters.contains(&(f as i32));
        let mut w = Watcher {
            key: c.key,
            range_end: c.range_end,
            next_rev: c.start_revision.max(durable + 1),
            prev_kv: c.prev_kv,
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
            progress_notify: c.progress_notify,
            _counted: Counted::new(&self.shared.watchers),
        };
        match replay {
            Some(Err(compact_rev)) => return self.send(compacted(id, compact_rev, durable)).await,
            Some(Ok(revs)) => {
                w.next_rev = c.start_revision;
                for rev in revs.iter().filter(|r| r.rev <= durable) {
                    if let Some(resp) = w.events_for(id, rev) {
                        self.send(resp).await?;
                    }
                }
                w.next_rev = c.start_revision.max(durable + 1);
            }
            None => {}
        }
        self.watches.insert(id, w);
        Ok(())
    }

    async fn deliver(&mut self, rev: &Revision) -> Result<(), Closed> {
        let mut out = Vec::new();
        for (id, w) in &mut self.watches {
            if let Some(resp) = w.events_for(*id, rev) {
                out.push(resp);
            }
        }
        for resp in out {
            self.send(resp).await?;
        }
        Ok(())
    }

    /// After the broadcast dropped revisions for this stream, re-reads them
    /// from history; watches whose revisions were compacted are canceled.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        let durable = self.shared.durable_rev();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        {
            let store = self.shared.lock();
            for (id, w) in &mut self.watches {
                match store.history_since(w.next_rev) {
                    Ok(revs) => {
                        for rev in revs.iter().filter(|r| r.rev <= durable) {
                            out.extend(w.events_for(*id, rev));
                        }
                    }
                    Err(compact_rev) => {
                        dead.push(*id);
                        out.push(compacted(*id, compact_rev, durable));
                    }
                }
            }
        }
        for id in dead {
            self.watches.remove(&id);
        }
        for resp in out {
            self.send(resp).await?;
        }
        Ok(())
    }

    async fn progress_notify(&mut self) -> Result<(), Closed> {
        let rev = self.shared.durable_rev();
        let ids: Vec<i64> = self
            .watches
            .iter()
            .filter(|(_, w)| w.progress_notify)
            .map(|(id, _)| *id)
            .collect();
        for watch_id in ids {
            self.send(WatchResponse {
                header: header(rev),
                watch_id,
                ..WatchResponse::default()
            })
            .await?;
        }
        Ok(())
    }
}

fn compacted(watch_id: i64, compact_revision: i64, rev: i64) -> WatchResponse {
    WatchResponse {
        header: header(rev),
        watch_id,
        canceled: true,
        compact_revision,
        cancel_reason: "etcdserver: mvcc: required revision has been compacted".to_string(),
        ..WatchResponse::default()
    }
}

impl Watcher {
    /// The response for `rev` if it is new to this watch and any of its
    /// events match.
    fn events_for(&mut self, watch_id: i64, rev: &Revision) -> Option<WatchResponse> {
        if rev.rev < self.next_rev {
            return None;
        }
        self.next_rev = rev.rev + 1;
        let events: Vec<_> = rev
            .events
            .iter()
            .filter(|ev| {
                let Some(kv) = &ev.kv else { return false };
                let is_put = ev.r#type == EventType::Put as i32;
                in_range(&kv.key, &self.key, &self.range_end)
                    && !(is_put && self.no_put)
                    && (is_put || !self.no_delete)
            })
            .map(|ev| {
                let mut ev = ev.clone();
                if !self.prev_kv {
                    ev.prev_kv = None;
                }
                ev
            })
            .collect();
        if events.is_empty() {
            return None;
        }
        Some(WatchResponse {
            header: header(rev.rev),
            watch_id,
            events,
            ..WatchResponse::default()
        })
    }
}
