//! Periodic launches against the real embedded store, on a fake clock (the
//! launch time is an argument): a tick launches once, a restarted
//! scheduler (a new `Cluster` over the same store) launches nothing for a
//! tick already handled and only the latest of the ticks it missed,
//! `prohibit_overlap` skips a tick while a child runs, force launches
//! anyway, and old finished children are removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_proto::v1 as pb;
use drover_scheduler::cluster::Cluster;
use drover_scheduler::job::{child_name, parent_of, JobSpec, Schedule};
use drover_scheduler::periodic::{Pass, KEEP_CHILDREN};
use drover_scheduler::state::JobStatus;
use drover_scheduler::subnet::SubnetConfig;
use drover_store::embedded::EmbeddedEtcd;
use drover_store::Store;
use tokio_util::sync::CancellationToken;

/// An embedded store on loopback, stopped on drop.
struct Etcd {
    _dir: tempfile::TempDir,
    endpoint: String,
    stop: CancellationToken,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let etcd = EmbeddedEtcd::open(dir.path()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(etcd.serve(l, stop.clone()));
        Etcd {
            _dir: dir,
            endpoint,
            stop,
        }
    }

    /// A scheduler's view of the cluster, as a fresh process has it.
    async fn cluster(&self) -> Cluster {
        let store = Store::connect(std::slice::from_ref(&self.endpoint), "/drover/")
            .await
            .unwrap();
        Cluster::new(store, SubnetConfig::default())
    }
}

const CRON: &str = "*/10 * * * * *";

fn periodic(name: &str, prohibit_overlap: bool) -> JobSpec {
    let job = pb::Job {
        name: name.into(),
        kind: "batch".into(),
        periodic: Some(pb::Periodic {
            cron: CRON.into(),
            time_zone: "UTC".into(),
            prohibit_overlap,
        }),
        groups: vec![pb::Group {
            name: "main".into(),
            count: 1,
            tasks: vec![pb::Task {
                name: "run".into(),
                command: vec!["true".into()],
                resources: Some(pb::Resources {
                    cpu_millis: 10,
                    memory_mb: 8,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    JobSpec::try_from(&job).unwrap()
}

/// Submits `spec` and returns its first tick after the submission.
async fn submit(c: &Cluster, spec: &JobSpec) -> i64 {
    c.submit(spec).await.unwrap();
    let job = c.job(&spec.name).await.unwrap().unwrap();
    assert_eq!(job.value.status, JobStatus::Running);
    let schedule = Schedule::new(CRON, "UTC").unwrap();
    schedule
        .next_after(job.value.submitted_unix_ms.div_euclid(1000))
        .unwrap()
}

async fn children(c: &Cluster, parent: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| parent_of(&j.name) == Some(parent))
        .map(|j| j.name)
        .collect();
    v.sort();
    v
}

async fn launch(c: &Cluster, name: &str, now: i64) -> Pass {
    c.launch_due(name, now)
        .await
        .unwrap()
        .expect("a launching periodic job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_launches_once_across_restarts_and_missed_ticks_launch_only_the_latest() {
    let etcd = Etcd::start().await;
    let c = etcd.cluster().await;
    let t1 = submit(&c, &periodic("every", false)).await;

    // Before the first tick: nothing, and the next tick is the wake time.
    let pass = launch(&c, "every", t1 - 1).await;
    assert_eq!((pass.launched, pass.decision.next), (None, Some(t1)));

    let pass = launch(&c, "every", t1).await;
    assert_eq!(
        pass.launched.as_deref(),
        Some(child_name("every", t1).as_str())
    );
    // The parent placed nothing, and the child is a batch job of its own.
    let child = c.job(&child_name("every", t1)).await.unwrap().unwrap();
    assert_eq!(child.value.status, JobStatus::Running);
    assert!(child.value.spec.periodic.is_none());
    assert!(c
        .alloc_records()
        .await
        .unwrap()
        .iter()
        .all(|a| a.job != "every"));

    // The same tick again, in this process or a restarted one: nothing.
    assert_eq!(launch(&c, "every", t1 + 3).await.launched, None);
    let restarted = etcd.cluster().await;
    assert_eq!(launch(&restarted, "every", t1 + 3).await.launched, None);

    // Down for an hour: only the latest missed tick is launched.
    let pass = launch(&restarted, "every", t1 + 3_605).await;
    assert!(pass.decision.dropped);
    assert_eq!(
        pass.launched.as_deref(),
        Some(child_name("every", t1 + 3_600).as_str())
    );
    assert_eq!(launch(&c, "every", t1 + 3_606).await.launched, None);
    assert_eq!(
        children(&c, "every").await,
        vec![child_name("every", t1), child_name("every", t1 + 3_600)]
    );

    // Stopped: no launches, and force is refused.
    c.stop("every").await.unwrap();
    assert!(c.launch_due("every", t1 + 3_700).await.unwrap().is_none());
    assert!(c.force_launch("every", t1 + 3_700).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_is_skipped_force_is_not_and_old_finished_children_go() {
    let etcd = Etcd::start().await;
    let c = etcd.cluster().await;
    let t1 = submit(&c, &periodic("lone", true)).await;
    assert!(launch(&c, "lone", t1).await.launched.is_some());
    // No node takes the child: it still runs at the next tick, which is
    // skipped (and recorded as handled).
    let pass = launch(&c, "lone", t1 + 10).await;
    assert_eq!(pass.launched, None);
    assert!(pass.decision.due.is_some());
    assert_eq!(launch(&c, "lone", t1 + 10).await.decision.due, None);

    // Force launches whatever the overlap rule; twice in one second is refused.
    let forced = c.force_launch("lone", t1 + 11).await.unwrap();
    assert_eq!(forced, child_name("lone", t1 + 11));
    assert!(c.force_launch("lone", t1 + 11).await.is_err());

    // Twelve finished children (stopped) and the two still running: the
    // two oldest finished ones go, with nothing else.
    let mut finished = Vec::new();
    for i in 0..12 {
        let name = c.force_launch("lone", t1 + 100 + i).await.unwrap();
        c.stop(&name).await.unwrap();
        finished.push(name);
    }
    let removed = c.prune_children("lone").await.unwrap();
    assert_eq!(removed, finished[..2].to_vec());
    let left = children(&c, "lone").await;
    assert_eq!(left.len(), KEEP_CHILDREN + 2, "{left:?}");
    assert!(left.contains(&child_name("lone", t1)));
    assert!(left.contains(&forced));
    assert!(c.prune_children("lone").await.unwrap().is_empty());
}
