//! `drover logs` on the node: answers a `LogRequest` with the task's
//! output files as `LogData` chunks up the agent's stream, the rotated
//! files first, and (with `follow`) what is appended until the task ends
//! for good or the request is cancelled. Beside [`crate::exec`], the other
//! request a user makes of a task through the scheduler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::policy::SessionPolicy;

use crate::runtime::logs::LogReader;
use crate::runtime::Runtime;

/// Largest chunk sent in one `LogData`.
const LOG_CHUNK: usize = 32 * 1024;
/// Pause between reads at the end of a followed file.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// One `LogData` frame.
pub fn log_msg(request_id: u64, data: Vec<u8>, eof: bool, error: String) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::LogData(pb::LogData {
            request_id,
            data,
            eof,
            error,
            limit_reached: false,
        })),
    }
}

/// The log streams a node serves, at most the node policy's
/// `[sessions] max_log_streams` at once: each one open holds a slot until
/// its task ends.
#[derive(Debug)]
pub struct LogStreams {
    open: HashMap<u64, CancellationToken>,
    slots: Arc<Semaphore>,
    policy: SessionPolicy,
}

/// What serving one admitted request holds: its cancel token and its slot.
#[derive(Debug)]
pub struct Admitted {
    /// Cancelled when the scheduler cancels the request (or the agent
    /// stops); the stream cancels it itself when it ends.
    pub cancel: CancellationToken,
    /// Freed when the stream's task ends.
    pub slot: OwnedSemaphorePermit,
}

impl LogStreams {
    /// No stream open yet, at most `policy.max_log_streams` at once.
    pub fn new(policy: SessionPolicy) -> LogStreams {
        LogStreams {
            open: HashMap::new(),
            slots: Arc::new(Semaphore::new(policy.max_log_streams)),
            policy,
        }
    }

    /// Admits request `id` under `parent`, or says why not (the limit,
    /// naming the setting).
    pub fn admit(&mut self, parent: &CancellationToken, id: u64) -> Result<Admitted, String> {
        self.open.retain(|_, t| !t.is_cancelled());
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| self.policy.log_refusal())?;
        let cancel = parent.child_token();
        self.open.insert(id, cancel.clone());
        Ok(Admitted { cancel, slot })
    }

    /// Cancels request `id` (the scheduler's `LogCancel`).
    pub fn cancel(&mut self, id: u64) {
        if let Some(t) = self.open.remove(&id) {
            t.cancel();
        }
    }

    /// Cancels every open stream.
    pub fn cancel_all(&self) {
        for t in self.open.values() {
            t.cancel();
        }
    }
}

/// The refusal of request `request_id` by a limit of the node: `error`
/// names it.
pub fn limit_msg(request_id: u64, error: String) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::LogData(pb::LogData {
            request_id,
            data: Vec::new(),
            eof: true,
            error,
            limit_reached: true,
        })),
    }
}

/// Ends request `request_id` with `error`.
async fn fail(tx: &mpsc::Sender<pb::AgentMessage>, request_id: u64, error: String) {
    let _ = tx.send(log_msg(request_id, Vec::new(), true, error)).await;
}

/// Sends `task`'s log file up the stream, then (with `follow`) what is
/// appended until the task ends for good or `admitted.cancel`; frees the
/// slot when done.
pub async fn stream_log(
    rt: Arc<Runtime>,
    req: pb::LogRequest,
    task: String,
    tx: mpsc::Sender<pb::AgentMessage>,
    admitted: Admitted,
) {
    let Admitted {
        cancel,
        slot: _slot,
    } = admitted;
    // Ended: forgotten by `LogStreams` at its next admission.
    let _ended = cancel.clone().drop_guard();
    let id = req.request_id;
    let dir = match rt.task_dir(&req.alloc_id, &task) {
        Ok(d) => d,
        Err(e) => return fail(&tx, id, e.to_string()).await,
    };
    let path = dir.join(if req.stderr {
        "stderr.log"
    } else {
        "stdout.log"
    });
    // Rotated files first (oldest first), then the current one; followed
    // across rotations (see `runtime::logs::LogReader`).
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || LogReader::open(&path, true)).await
    };
    let mut reader = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(&tx, id, format!("cannot open {}: {e}", path.display())).await,
        Err(e) => return fail(&tx, id, format!("log reader for {}: {e}", path.display())).await,
    };
    let mut buf = vec![0u8; LOG_CHUNK];
    let mut ended = false;
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let n = reader.read(&mut buf);
            (reader, buf, n)
        })
        .await;
        let n = match read {
            Ok((r, b, Ok(n))) => {
                reader = r;
                buf = b;
                n
            }
            Ok((_, _, Err(e))) => {
                return fail(&tx, id, format!("reading {}: {e}", path.display())).await
            }
            Err(e) => {
                return fail(&tx, id, format!("log reader for {}: {e}", path.display())).await
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        if n > 0 {
            let chunk = log_msg(id, buf[..n].to_vec(), false, String::new());
            if tx.send(chunk).await.is_err() {
                return;
            }
            continue;
        }
        let live = rt
            .state(&req.alloc_id, &task)
            .map(|s| !s.is_terminal())
            .unwrap_or(false);
        // At the end: done unless following a task that still runs. The
        // supervisor records the exit only after the last line is written,
        // so one more read after seeing it ended misses nothing.
        if !req.follow || cancel.is_cancelled() {
            break;
        }
        if !live {
            if ended {
                break;
            }
            ended = true;
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
    let _ = tx.send(log_msg(id, Vec::new(), true, String::new())).await;
}
