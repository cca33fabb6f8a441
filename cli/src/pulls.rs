//! What `drover job run` shows of image pulls while it waits for the
//! job's allocations: the `Pulling` and `Pulled` events of the job
//! (layers and bytes done), one line each, as the scheduler records them
//! (`EventService.Follow`). Best effort: a scheduler that refuses or
//! lacks the stream only means no pull lines.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use drover_proto::v1 as pb;

use crate::connect::channel;
use crate::ClientOpts;

/// Event types shown.
const SHOWN: [&str; 2] = ["Pulling", "Pulled"];

/// Lines already printed, so that the catch-up at the end prints none twice.
type Printed = Arc<Mutex<BTreeSet<(i64, String, String)>>>;

/// Prints pull events of one job while alive; see [`PullLines::finish`].
pub struct PullLines {
    task: tokio::task::JoinHandle<()>,
    printed: Printed,
    opts: ClientOpts,
    job: String,
    since_ms: i64,
}

fn line(e: &pb::AllocEvent) -> String {
    let who = if e.alloc_name.is_empty() {
        e.alloc_id.as_str()
    } else {
        e.alloc_name.as_str()
    };
    format!("{who} {}: {}", e.task, e.message)
}

fn print_once(printed: &Printed, e: &pb::AllocEvent) {
    if !SHOWN.contains(&e.r#type.as_str()) {
        return;
    }
    let key = (e.time_unix_ms, e.alloc_id.clone(), e.message.clone());
    let fresh = printed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key);
    if fresh {
        outln!("{}", line(e));
    }
}

async fn client(
    opts: &ClientOpts,
) -> anyhow::Result<pb::event_service_client::EventServiceClient<tonic::transport::Channel>> {
    Ok(
        pb::event_service_client::EventServiceClient::new(channel(opts).await?)
            .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES),
    )
}

/// [`PullLines::finish`] of `lines`, if any.
pub async fn finish(lines: Option<PullLines>) {
    if let Some(l) = lines {
        l.finish().await;
    }
}

impl PullLines {
    /// `job run`'s pull lines: none when detached or printing JSON (the
    /// job's status is then the one document).
    pub fn unless_detached(opts: &ClientOpts, job: &str, detach: bool) -> Option<PullLines> {
        (!detach && opts.output == crate::Output::Table).then(|| PullLines::start(opts, job))
    }

    /// Starts following job `job`'s events (from now on).
    pub fn start(opts: &ClientOpts, job: &str) -> PullLines {
        let printed = Printed::default();
        let (o, j, p) = (opts.clone(), job.to_owned(), Arc::clone(&printed));
        let task = tokio::spawn(async move {
            let Ok(mut c) = client(&o).await else { return };
            let request = pb::FollowEventsRequest {
                job: j,
                alloc_id: String::new(),
                backlog: 0,
            };
            let Ok(stream) = c.follow(request).await else {
                return;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(e)) = stream.message().await {
                print_once(&p, &e);
            }
        });
        PullLines {
            task,
            printed,
            opts: opts.clone(),
            job: job.to_owned(),
            since_ms: crate::queued::now_ms(),
        }
    }

    /// Stops following, after printing the pull events recorded since the
    /// start that the stream has not delivered yet.
    pub async fn finish(self) {
        self.task.abort();
        let Ok(mut c) = client(&self.opts).await else {
            return;
        };
        let request = pb::ListEventsRequest {
            job: self.job.clone(),
            alloc_id: String::new(),
            limit: 0,
        };
        if let Ok(resp) = c.list(request).await {
            for e in &resp.into_inner().events {
                if e.time_unix_ms >= self.since_ms {
                    print_once(&self.printed, e);
                }
            }
        }
    }
}

impl Drop for PullLines {
    fn drop(&mut self) {
        self.task.abort();
    }
}
