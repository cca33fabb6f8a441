//! Scheduler HA: replicas on one store, one leader.
//!
//! - In process, on a real etcd and on the embedded store: a deposed
//!   leader's writes are refused by its term's fence (two `Cluster`
//!   handles, the old token); two replicas, the follower refuses the API
//!   and the agent stream naming the leader, the leader key holds the
//!   leader's advertised address, the CLI given the follower alone finds
//!   the leader, and a leader that shuts down hands over at once.
//! - End to end (`MultiHost`, root): two `drover scheduler` processes and a
//!   real agent given both addresses; the leader is SIGKILLed during a
//!   burst of 50 `job run`s, and during a rolling update. The other takes
//!   over (the time is printed), the agent reconnects without help and
//!   keeps its tasks, every acknowledged submission is there, and no
//!   instance has two live allocations or none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_scheduler::cluster::{Cluster, ClusterError};
use drover_scheduler::leader::{serve_elected, Candidacy};
use drover_scheduler::subnet::SubnetConfig;
use drover_scheduler::{Core, Timing};
use drover_store::election::Election;
use drover_store::{RawOp, Store, StoreError};
use drover_tests::checks::{arr, str_of};
use drover_tests::hosts::{Answer, Options};
use drover_tests::{poll_until, run_drover, unique_name, MultiHost};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[path = "scheduler_ha/e2e.rs"]
mod e2e;

/// A job as a user would submit it.
fn spec(name: &str) -> drover_scheduler::job::JobSpec {
    let text = format!(
        "name = \"{name}\"\n[[group]]\nname = \"g\"\n[[group.task]]\nname = \"t\"\n\
         command = [\"/bin/true\"]\n"
    );
    let file = drover_scheduler::jobfile::parse("j.toml", &text).unwrap();
    drover_scheduler::job::JobSpec::try_from(&file).unwrap()
}

/// A leader deposed without noticing (its term ended, another began)
/// still holds its old fence: every write it tries is refused, the store
/// is unchanged, and the new leader writes.
async fn deposed_writes_are_refused(endpoints: Vec<String>) {
    let prefix = format!("/{}/", unique_name("ha-fence"));
    let store_a = Store::connect(&endpoints, &prefix).await.unwrap();
    let store_b = Store::connect(&endpoints, &prefix).await.unwrap();
    let a = Cluster::new(store_a.clone(), SubnetConfig::default());
    let b = Cluster::new(store_b.clone(), SubnetConfig::default());

    let term_a = Election::new(store_a.clone(), "10.0.0.1:4680", 5)
        .campaign()
        .await
        .unwrap();
    let old = term_a.fence();
    a.fence_writes(old.clone());
    a.submit(&spec("before")).await.expect("the leader writes");
    // The term ends behind A's back (as a lapsed lease would end it).
    term_a.resign().await.unwrap();
    let term_b = Election::new(store_b.clone(), "10.0.0.2:4680", 5)
        .campaign()
        .await
        .unwrap();
    assert_ne!(term_b.fence(), old, "a new term has a new token");
    b.fence_writes(term_b.fence());

    match a.submit(&spec("late")).await {
        Err(ClusterError::Store(StoreError::Deposed { revision, .. })) => {
            assert_eq!(revision, old.revision)
        }
        other => panic!("a deposed leader's write must be refused, got {other:?}"),
    }
    assert!(
        b.job("late").await.unwrap().is_none(),
        "the refused write left nothing"
    );
    let record = RawOp::Put {
        key: format!("/skydns/{}/x", prefix.trim_matches('/')),
        value: b"{}".to_vec(),
        lease: 0,
    };
    let skydns = a.apply_skydns(std::slice::from_ref(&record)).await;
    assert!(
        matches!(skydns, Err(StoreError::Deposed { .. })),
        "a deposed leader's discovery write must be refused, got {skydns:?}"
    );
    b.submit(&spec("late"))
        .await
        .expect("the new leader writes");
    b.apply_skydns(&[record])
        .await
        .expect("the new leader writes records");
    assert!(b.job("late").await.unwrap().is_some());
    // The leader key names the new leader.
    let leader = Election::new(store_b.clone(), "observer", 5)
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.id, "10.0.0.2:4680");
    term_b.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_writes_are_refused_on_real_etcd() {
    let etcd = drover_tests::etcd::RealEtcd::start().await.unwrap();
    deposed_writes_are_refused(etcd.endpoints()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_writes_are_refused_on_the_embedded_store() {
    let store = drover_tests::etcd::Embedded::start().await.unwrap();
    deposed_writes_are_refused(store.endpoints()).await;
}

/// One in-process replica: its address and what stops it.
struct Replica {
    addr: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), drover_scheduler::leader::LeaderError>>,
}

async fn replica(endpoints: &[String], prefix: &str) -> Replica {
    let store = Store::connect(endpoints, prefix).await.unwrap();
    let timing = Timing {
        heartbeat: Duration::from_millis(200),
        node_grace: Duration::from_secs(2),
        reconcile: Duration::from_millis(500),
    };
    let core = Core::new(store, timing);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let candidacy = Candidacy {
        advertise: addr.clone(),
        ttl: Duration::from_secs(2),
    };
    let task = tokio::spawn(serve_elected(core, candidacy, l, stop.clone(), None));
    Replica { addr, stop, task }
}

/// What replica `addr` answers to `NodeService.Get` of an empty id.
async fn ask(addr: &str) -> Answer {
    let ch = match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
    {
        Ok(ch) => ch,
        Err(e) => return Answer::Other(e.to_string()),
    };
    let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
    match nodes.get(pb::GetNodeRequest::default()).await {
        Err(s) if s.code() == tonic::Code::InvalidArgument => Answer::Leader,
        Err(s) if s.code() == tonic::Code::Unavailable => Answer::Follower {
            message: s.message().to_string(),
            leader: s
                .metadata()
                .get("drover-leader")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        },
        other => Answer::Other(format!("{other:?}")),
    }
}

/// Polls until exactly one of `replicas` leads; returns its index.
async fn one_leader(replicas: &[&Replica]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if ask(&r.addr).await == Answer::Leader {
                leaders.push(i);
            }
        }
        if let [one] = leaders[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn followers_refuse_naming_the_leader(endpoints: Vec<String>) {
    let prefix = format!("/{}/", unique_name("ha-serve"));
    let first = replica(&endpoints, &prefix).await;
    let second = replica(&endpoints, &prefix).await;
    let both = [&first, &second];
    let l = one_leader(&both).await;
    let (leader, follower) = (both[l], both[1 - l]);

    // The leader key's value is the leader's advertised address.
    let observer = Store::connect(&endpoints, &prefix).await.unwrap();
    let key = Election::new(observer.clone(), "observer", 5)
        .leader()
        .await
        .unwrap()
        .expect("a leader key");
    assert_eq!(key.id, leader.addr);

    // The follower refuses the API ...
    let refused = poll_async(|| async {
        match ask(&follower.addr).await {
            Answer::Follower {
                message,
                leader: Some(hint),
            } => Some((message, hint)),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        refused,
        (
            format!("not the leader; the leader is at {}", leader.addr),
            leader.addr.clone()
        )
    );
    // ... and the agent stream, the same way.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", follower.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(1);
    let stream = pb::agent_service_client::AgentServiceClient::new(ch)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    drop(tx);
    let Err(status) = stream else {
        panic!("a follower must refuse the agent stream");
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get("drover-leader")
            .and_then(|v| v.to_str().ok()),
        Some(leader.addr.as_str())
    );

    // The CLI given the follower (first) finds the leader.
    let addrs = format!("{},{}", follower.addr, leader.addr);
    let follower_only = follower.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        (
            run_drover(&["node", "list", "--addr", &addrs]),
            run_drover(&["node", "list", "--addr", &follower_only]),
        )
    })
    .await
    .unwrap();
    for o in [&out.0, &out.1] {
        assert!(
            o.status.success(),
            "the CLI must reach the leader through a follower: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // A leader that shuts down resigns: the other takes over well within
    // the lease's TTL.
    let handover = Instant::now();
    leader.stop.cancel();
    let now = poll_async(|| async { (ask(&follower.addr).await == Answer::Leader).then_some(()) });
    now.await;
    println!("handover after a clean shutdown: {:?}", handover.elapsed());
    let key = Election::new(observer, "observer", 5)
        .leader()
        .await
        .unwrap()
        .expect("a leader key");
    assert_eq!(key.id, follower.addr);
    follower.stop.cancel();
    for r in [first, second] {
        r.task.await.unwrap().expect("a replica stopped cleanly");
    }
}

/// Calls `check` until it returns `Some` (30 s at most).
async fn poll_async<T, F, Fut>(check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refuse_naming_the_leader_on_real_etcd() {
    let etcd = drover_tests::etcd::RealEtcd::start().await.unwrap();
    followers_refuse_naming_the_leader(etcd.endpoints()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refuse_naming_the_leader_on_the_embedded_store() {
    let store = drover_tests::etcd::Embedded::start().await.unwrap();
    followers_refuse_naming_the_leader(store.endpoints()).await;
}

/// A leader whose term ends behind its back (its key deleted, as an
/// operator or a lapsed lease would) stops: `serve_elected` ends with
/// `Lost` (the process exits), it answers no more, and the other replica
/// takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_term_stops_acting() {
    let store = drover_tests::etcd::Embedded::start().await.unwrap();
    let endpoints = store.endpoints();
    let prefix = format!("/{}/", unique_name("ha-lost"));
    let first = replica(&endpoints, &prefix).await;
    let second = replica(&endpoints, &prefix).await;
    let both = [first, second];
    let l = one_leader(&[&both[0], &both[1]]).await;
    let [a, b] = both;
    let (leader, follower) = if l == 0 { (a, b) } else { (b, a) };

    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    etcd.delete(format!("{prefix}leader"), None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), leader.task)
        .await
        .expect("the deposed leader stops")
        .unwrap();
    match ended {
        Err(drover_scheduler::leader::LeaderError::Lost { advertise, .. }) => {
            assert_eq!(advertise, leader.addr)
        }
        other => panic!("a deposed leader must end with Lost, got {other:?}"),
    }
    assert_ne!(ask(&leader.addr).await, Answer::Leader);
    poll_async(|| async { (ask(&follower.addr).await == Answer::Leader).then_some(()) }).await;
    follower.stop.cancel();
    follower.task.await.unwrap().unwrap();
}

/// A replica restarted after a crash, before its lease lapsed, removes the
/// key its earlier run left (its own address) and leads again at once; a
/// replica of another address leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_clears_its_own_stale_key_only() {
    let server = drover_tests::etcd::Embedded::start().await.unwrap();
    let prefix = format!("/{}/", unique_name("ha-stale"));
    let store = Store::connect(&server.endpoints(), &prefix).await.unwrap();
    let crashed = Election::new(store.clone(), "10.0.0.1:4680", 60)
        .campaign()
        .await
        .unwrap();
    // A crash: no more keep-alives, but the 60 s lease still holds the key.
    drop(crashed);
    let other = Election::new(store.clone(), "10.0.0.2:4680", 60);
    assert!(!other.clear_own_stale().await.unwrap());
    let again = Election::new(store.clone(), "10.0.0.1:4680", 60);
    assert!(again.clear_own_stale().await.unwrap());
    let term = tokio::time::timeout(Duration::from_secs(10), again.campaign())
        .await
        .expect("the restarted replica leads without waiting for the lease")
        .unwrap();
    assert_eq!(
        other.leader().await.unwrap().map(|l| l.id),
        Some("10.0.0.1:4680".to_string())
    );
    term.resign().await.unwrap();
}

/// A leader's writes carry its term's fence, one more compare in every
/// store transaction: a job larger than one transaction must still be
/// split within etcd's limit on compares (it was not: `too many operations
/// in txn request` for any job of more than 127 instances).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_on_real_etcd_places_a_job_larger_than_one_transaction() {
    let etcd = drover_tests::etcd::RealEtcd::start().await.unwrap();
    let prefix = format!("/{}/", unique_name("ha-big"));
    let leader = replica(&etcd.endpoints(), &prefix).await;
    one_leader(&[&leader]).await;
    let spec = drover_tests::sim::NodeSpec {
        cpu_millis: 1_000_000,
        memory_mb: 1_000_000,
        ..Default::default()
    };
    let sim = drover_tests::sim::Sim::start(&format!("http://{}", leader.addr), 4, spec)
        .await
        .unwrap();
    poll_async(|| async { (sim.counts().registered == 4).then_some(()) }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    std::fs::write(
        &path,
        "name = \"big\"\n[[group]]\nname = \"g\"\ncount = 300\n[[group.task]]\nname = \"t\"\n\
         command = [\"/bin/true\"]\nresources = { cpu_millis = 10, memory_mb = 8 }\n",
    )
    .unwrap();
    let (addr, file) = (leader.addr.clone(), path.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        run_drover(&["job", "run", "--detach", &file, "--addr", &addr])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "a 300-instance job on a fenced leader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll_async(|| async { (sim.allocs("running").len() == 300).then_some(()) }).await;
    sim.stop();
    leader.stop.cancel();
    let _ = leader.task.await;
}
