//! Deployment timers: when a running deployment needs another look with
//! no status report coming (an allocation's `min_healthy_time` passing, a
//! deadline falling due), the placement pass returns the time, and this
//! one task sleeps until the earliest such time of any job, then steps
//! that job's deployment. One timer per job, the earliest asked; nothing
//! polls.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where placement passes ask for a later look at a job.
pub(crate) struct DeployTimers {
    tx: mpsc::UnboundedSender<(String, i64)>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<(String, i64)>>>,
}

impl Default for DeployTimers {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        DeployTimers {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl DeployTimers {
    /// Asks for job `job`'s deployment to be stepped at `at_ms` (ms since
    /// the Unix epoch).
    pub(crate) fn at(&self, job: &str, at_ms: i64) {
        // Only fails once the task has ended (shutdown): nothing to do.
        let _ = self.tx.send((job.to_string(), at_ms));
    }

    /// Runs the timers until `shutdown`, calling `step` with each job
    /// whose time has come (once per process: a second call returns at
    /// once).
    pub(crate) async fn run<F, Fut>(&self, shutdown: CancellationToken, mut step: F)
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut rx) = rx else {
            return;
        };
        let mut due: BTreeMap<String, i64> = BTreeMap::new();
        loop {
            let next = due.values().min().copied();
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(u64::try_from(t - drover_model::now_ms()).unwrap_or(0))
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                asked = rx.recv() => match asked {
                    Some((job, at)) => {
                        let e = due.entry(job).or_insert(at);
                        *e = (*e).min(at);
                    }
                    None => return,
                },
                _ = tokio::time::sleep(wait), if next.is_some() => {
                    let now = drover_model::now_ms();
                    let ready: Vec<String> = due.iter().filter(|(_, t)| **t <= now).map(|(j, _)| j.clone()).collect();
                    for job in ready {
                        due.remove(&job);
                        step(job).await;
                    }
                }
            }
        }
    }
}
