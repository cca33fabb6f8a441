//! Scheduler replicas in a [`MultiHost`] (`Options::schedulers`): every
//! replica runs in the control namespace on its own port with the same
//! flags; agents and the CLI are given all their addresses. Replica 0 is
//! the harness's first scheduler (`scheduler.log`), replica `i` logs to
//! `scheduler-<i>.log`.

use std::process::Child;
use std::time::Duration;

use drover_proto::v1 as pb;

use super::procs::{kill_child, pid_of};
use super::{tail, MultiHost};

/// A scheduler replica past the first.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) child: Option<Child>,
    pub(super) addr: String,
    log: String,
}

/// What one replica answered to the leadership probe (`NodeService.Get`
/// of an empty id: the leader refuses it as `INVALID_ARGUMENT` without
/// reading the store, a follower with `UNAVAILABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It serves: it leads.
    Leader,
    /// It refused as a follower.
    Follower {
        /// The refusal's message.
        message: String,
        /// Its `drover-leader` metadata.
        leader: Option<String>,
    },
    /// No answer (killed, starting), or another one.
    Other(String),
}

impl MultiHost {
    /// Starts the replicas past the first.
    pub(super) fn start_replicas(&mut self) {
        for i in 1..self.opts.schedulers {
            let log = format!("scheduler-{i}");
            let (child, addr) = self.spawn_scheduler(&log);
            self.replicas.push(Replica {
                child: Some(child),
                addr,
                log,
            });
        }
    }

    /// How many scheduler replicas were started.
    pub fn schedulers(&self) -> usize {
        1 + self.replicas.len()
    }

    /// Replica `i`'s address (`HOST:PORT`, what it advertises).
    ///
    /// # Panics
    ///
    /// When there is no replica `i`.
    pub fn scheduler_addr(&self, i: usize) -> String {
        match i {
            0 => self.scheduler_addr.clone(),
            i => self.replicas[i - 1].addr.clone(),
        }
    }

    /// Replica `i`'s pid, while it runs.
    pub fn scheduler_pid(&self, i: usize) -> Option<i32> {
        match i {
            0 => self.scheduler.as_ref().map(pid_of),
            i => self.replicas[i - 1].child.as_ref().map(pid_of),
        }
    }

    /// Whether replica `i`'s process is still running (not exited).
    pub fn scheduler_running(&mut self, i: usize) -> bool {
        let child = match i {
            0 => self.scheduler.as_mut(),
            i => self.replicas[i - 1].child.as_mut(),
        };
        child.is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs replica `i`, as a crash would.
    pub fn kill_scheduler(&mut self, i: usize) {
        let child = match i {
            0 => self.scheduler.take(),
            i => self.replicas[i - 1].child.take(),
        };
        if let Some(mut c) = child {
            kill_child(&mut c);
        }
    }

    /// Asks replica `i` directly (from inside the control namespace, with
    /// the CLI certificate) whether it leads.
    pub fn ask_scheduler(&self, i: usize) -> Answer {
        let url = format!("https://{}", self.scheduler_addr(i));
        let pki = self.pki();
        let asked = self.control().run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let ch = tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::try_mtls_channel(&url, &pki, "cli"),
                )
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| format!("connect: {e}"))?;
                let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
                let got = tokio::time::timeout(
                    Duration::from_secs(5),
                    nodes.get(pb::GetNodeRequest::default()),
                )
                .await
                .map_err(|_| "call timed out".to_string())?;
                Ok::<_, String>(match got {
                    Ok(_) => Answer::Other("a node with an empty id".into()),
                    Err(s) if s.code() == tonic::Code::InvalidArgument => Answer::Leader,
                    Err(s) if s.code() == tonic::Code::Unavailable => Answer::Follower {
                        message: s.message().to_string(),
                        leader: s
                            .metadata()
                            .get("drover-leader")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    },
                    Err(s) => Answer::Other(format!("{:?}: {}", s.code(), s.message())),
                })
            })
        });
        match asked {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Answer::Other(e),
            Err(e) => Answer::Other(format!("entering the control netns: {e}")),
        }
    }

    /// The replica that leads now, if exactly one answers as leader.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.schedulers())
            .filter(|&i| self.scheduler_pid(i).is_some())
            .filter(|&i| self.ask_scheduler(i) == Answer::Leader)
            .collect();
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The last `lines` lines of replica `i`'s log.
    pub fn replica_log(&self, i: usize, lines: usize) -> String {
        let name = match i {
            0 => "scheduler".to_string(),
            i => self.replicas[i - 1].log.clone(),
        };
        tail(&self.root.join(format!("{name}.log")), lines)
    }

    /// The logs of the replicas past the first, for a failing test.
    pub(super) fn replica_logs(&self, lines: usize) -> String {
        (1..self.schedulers())
            .map(|i| {
                format!(
                    "--- scheduler replica {i} log, last {lines} lines:\n{}\n",
                    self.replica_log(i, lines)
                )
            })
            .collect()
    }
}
