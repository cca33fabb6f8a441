//! The check manager and its loops against a scripted prober, in paused
//! tokio time: start and stop with the allocation, status changes marked
//! and woken, timeouts, the node-wide bound on probes at once.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drover_model::job::{CheckSpec, ServiceSpec};
use drover_model::{CheckKind, CheckStatus, Protocol};

use super::*;

/// What the scripted prober does for a check, by its port.
#[derive(Debug, Clone, Copy)]
enum Script {
    Pass,
    Fail,
    /// Never answers (the timeout ends it).
    Hang,
}

#[derive(Default)]
struct Fake {
    scripts: Mutex<HashMap<u16, Script>>,
    /// Probe duration.
    takes: Duration,
    runs: AtomicUsize,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Fake {
    fn set(&self, port: u16, s: Script) {
        self.scripts.lock().unwrap().insert(port, s);
    }
}

/// Counts a probe in flight while alive.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Prober for Fake {
    fn probe(&self, _target: &Target, check: &CheckSpec) -> BoxFuture<'static, Outcome> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&check.port)
            .copied()
            .unwrap_or(Script::Fail);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(&self.now));
        let takes = self.takes;
        Box::pin(async move {
            let _guard = guard;
            tokio::time::sleep(takes).await;
            match script {
                Script::Pass => Outcome::pass("ok"),
                Script::Fail => Outcome::fail("refused"),
                Script::Hang => std::future::pending().await,
            }
        })
    }
}

fn check(port: u16) -> CheckSpec {
    CheckSpec {
        kind: CheckKind::Tcp,
        path: String::new(),
        command: Vec::new(),
        task: String::new(),
        port,
        interval_ms: 1000,
        timeout_ms: 500,
        success_before_passing: 1,
        failures_before_critical: 2,
    }
}

fn alloc(id: &str, ports: &[u16], ready: bool, live: bool) -> AllocChecks {
    AllocChecks {
        target: Target {
            alloc_id: id.into(),
            netns: None,
        },
        services: vec![ServiceSpec {
            name: "web".into(),
            port: 8080,
            protocol: Protocol::Tcp,
            tags: Vec::new(),
            checks: ports.iter().map(|p| check(*p)).collect(),
        }],
        ready,
        live,
    }
}

fn statuses(c: &Checks, id: &str) -> Vec<CheckStatus> {
    c.states(id).iter().map(|s| s.status).collect()
}

/// Lets paused time run for `d`.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn checks_wait_for_the_tasks_then_report_each_status_change() {
    let fake = Arc::new(Fake::default());
    fake.set(1, Script::Pass);
    let mut c = Checks::new(fake.clone());
    let changes = c.changes();

    c.sync(vec![alloc("a1", &[1, 2], false, true)]);
    run_for(Duration::from_secs(5)).await;
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        0,
        "not ready: nothing runs"
    );
    assert_eq!(
        statuses(&c, "a1"),
        [CheckStatus::Pending, CheckStatus::Pending]
    );
    let first = c.states("a1");
    assert_eq!((first[1].service.as_str(), first[1].index), ("web", 1));

    c.sync(vec![alloc("a1", &[1, 2], true, true)]);
    assert!(c.is_running("a1"));
    // Within one interval, check 0 passes (one success asked for); check
    // 1 fails once and stays pending (two failures asked for).
    tokio::time::timeout(Duration::from_secs(1), changes.changed())
        .await
        .expect("a status change wakes the session within the first interval");
    assert!(changes.take().contains("a1"));
    assert_eq!(statuses(&c, "a1")[0], CheckStatus::Passing);
    let s = &c.states("a1")[0];
    assert_eq!(s.output, "ok");
    assert!(s.last_unix_ms > 0);
    run_for(Duration::from_millis(2100)).await;
    assert_eq!(
        statuses(&c, "a1"),
        [CheckStatus::Passing, CheckStatus::Critical]
    );
    assert_eq!(c.states("a1")[1].output, "refused");

    // Check 0 starts failing: critical after two failures, and marked.
    changes.take();
    fake.set(1, Script::Fail);
    run_for(Duration::from_millis(2500)).await;
    assert_eq!(statuses(&c, "a1")[0], CheckStatus::Critical);
    assert!(changes.take().contains("a1"));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_allocation_stops_its_checks_and_reports_them_pending() {
    let fake = Arc::new(Fake::default());
    fake.set(1, Script::Pass);
    let mut c = Checks::new(fake.clone());
    let changes = c.changes();
    c.sync(vec![alloc("a1", &[1], true, true)]);
    run_for(Duration::from_millis(1100)).await;
    assert_eq!(statuses(&c, "a1"), [CheckStatus::Passing]);
    changes.take();

    c.sync(vec![alloc("a1", &[1], true, false)]);
    assert!(!c.is_running("a1"));
    assert_eq!(statuses(&c, "a1"), [CheckStatus::Pending]);
    assert!(
        changes.take().contains("a1"),
        "passing -> pending is a change"
    );
    let runs = fake.runs.load(Ordering::SeqCst);
    run_for(Duration::from_secs(10)).await;
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        runs,
        "no run after the stop"
    );
    assert_eq!(statuses(&c, "a1"), [CheckStatus::Pending], "no late write");

    // Gone from the list: forgotten.
    c.sync(Vec::new());
    assert!(c.states("a1").is_empty());
}

#[tokio::test(start_paused = true)]
async fn changed_services_restart_the_checks_from_pending() {
    let fake = Arc::new(Fake::default());
    fake.set(1, Script::Pass);
    fake.set(2, Script::Pass);
    let mut c = Checks::new(fake.clone());
    c.sync(vec![alloc("a1", &[1], true, true)]);
    run_for(Duration::from_millis(1100)).await;
    assert_eq!(statuses(&c, "a1"), [CheckStatus::Passing]);
    c.sync(vec![alloc("a1", &[1, 2], true, true)]);
    assert_eq!(
        statuses(&c, "a1"),
        [CheckStatus::Pending, CheckStatus::Pending]
    );
    run_for(Duration::from_millis(1100)).await;
    assert_eq!(
        statuses(&c, "a1"),
        [CheckStatus::Passing, CheckStatus::Passing]
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_past_its_timeout_fails() {
    let fake = Arc::new(Fake::default());
    fake.set(1, Script::Hang);
    let mut c = Checks::new(fake.clone());
    c.sync(vec![alloc("a1", &[1], true, true)]);
    run_for(Duration::from_millis(3000)).await;
    let s = &c.states("a1")[0];
    assert_eq!(s.status, CheckStatus::Critical);
    assert_eq!(s.output, "timed out after 500 ms");
    assert!(fake.runs.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        fake.peak.load(Ordering::SeqCst),
        1,
        "a timed-out probe was dropped before the next run"
    );
    c.sync(Vec::new());
    run_for(Duration::from_millis(10)).await;
    assert_eq!(
        fake.now.load(Ordering::SeqCst),
        0,
        "stopping drops a probe under way"
    );
}

#[tokio::test(start_paused = true)]
async fn probes_at_once_stay_within_the_node_limit() {
    let fake = Arc::new(Fake {
        takes: Duration::from_millis(300),
        ..Fake::default()
    });
    let ports: Vec<u16> = (1..=12).collect();
    for p in &ports {
        fake.set(*p, Script::Pass);
    }
    let mut c = Checks::with_limit(fake.clone(), 3);
    c.sync(vec![
        alloc("a1", &ports[..6], true, true),
        alloc("a2", &ports[6..], true, true),
    ]);
    run_for(Duration::from_secs(5)).await;
    assert!(fake.runs.load(Ordering::SeqCst) >= 12);
    assert_eq!(
        fake.peak.load(Ordering::SeqCst),
        3,
        "the limit was reached, never passed"
    );
}
