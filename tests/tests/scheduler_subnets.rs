//! Node subnets and peer lists, scheduler side, against the real embedded
//! store with fake agents on loopback: no two nodes ever get one subnet,
//! even from two schedulers at once; a node keeps its subnet; an exhausted
//! cluster CIDR refuses registration by name; and every agent is told its
//! peers as nodes join and go down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::subnet::SubnetConfig;
use drover_scheduler::{Core, Timing};
use drover_store::embedded::EmbeddedEtcd;
use drover_store::Store;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(100),
    node_grace: Duration::from_millis(600),
    reconcile: Duration::from_millis(200),
};

/// An embedded store with `schedulers` schedulers on it, each on its own
/// loopback port; stopped on drop.
struct Cluster {
    _dir: tempfile::TempDir,
    addrs: Vec<String>,
    stop: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    async fn start(schedulers: usize, subnets: SubnetConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let etcd = EmbeddedEtcd::open(dir.path()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_addr = l.local_addr().unwrap();
        tokio::spawn(etcd.serve(l, stop.clone()));
        let mut addrs = Vec::new();
        for _ in 0..schedulers {
            let store = Store::connect(&[format!("http://{store_addr}")], "/drover/")
                .await
                .unwrap();
            let core = Core::with_subnets(store, TIMING, subnets);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(format!("http://{}", l.local_addr().unwrap()));
            tokio::spawn(drover_scheduler::serve(core, l, stop.clone(), None));
        }
        Cluster {
            _dir: dir,
            addrs,
            stop,
        }
    }
}

/// A fake agent's stream: it heartbeats until dropped.
struct Agent {
    inbound: tonic::Streaming<pb::SchedulerMessage>,
    stop: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn register(id: &str, address: &str, subnet: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            node: Some(pb::Node {
                id: id.into(),
                hostname: id.into(),
                address: address.into(),
                cpu_millis: 1000,
                memory_mb: 1024,
                subnet: subnet.into(),
                ..Default::default()
            }),
            running: vec![],
            partial_assignments: false,
            partial_peers: false,
        })),
    }
}

/// Connects as node `id`; returns the stream, or the refusal.
async fn connect(addr: &str, id: &str, address: &str) -> Result<Agent, tonic::Status> {
    connect_asking(addr, id, address, "").await
}

/// Connects as node `id` asking for `subnet` (as `drover agent --subnet`).
async fn connect_asking(
    addr: &str,
    id: &str,
    address: &str,
    subnet: &str,
) -> Result<Agent, tonic::Status> {
    let channel = Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    tx.send(register(id, address, subnet)).await.unwrap();
    let inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = beat.tick() => {
                    let hb = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 })) };
                    if tx.send(hb).await.is_err() { return; }
                }
            }
        }
    });
    Ok(Agent { inbound, stop })
}

impl Agent {
    /// The next message of the kind `pick` selects, skipping others.
    async fn next<T>(&mut self, pick: impl Fn(pb::scheduler_message::Msg) -> Option<T>) -> T {
        let wait = async {
            loop {
                let m = self.inbound.next().await.unwrap().unwrap();
                if let Some(v) = m.msg.and_then(&pick) {
                    return v;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("no such message within 10 s")
    }

    async fn registered(&mut self) -> pb::Registered {
        self.next(|m| match m {
            pb::scheduler_message::Msg::Registered(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn peers(&mut self) -> Vec<(String, String, String)> {
        self.next(|m| match m {
            pb::scheduler_message::Msg::Peers(p) => Some(
                p.peers
                    .into_iter()
                    .map(|p| (p.node_id, p.address, p.subnet))
                    .collect(),
            ),
            _ => None,
        })
        .await
    }
}

/// Agents racing to register through two schedulers.
const NODES: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_hand_out_one_subnet_twice() {
    let cluster = Cluster::start(2, SubnetConfig::default()).await;
    // Other tests of this binary run one scheduler each: their
    // registrations never conflict, so what this counter gains is ours.
    let conflicts_before = drover_scheduler::cluster::write_conflicts("node");
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..NODES {
        let addr = cluster.addrs[i % 2].clone();
        joins.spawn(async move {
            // `drover agent` tries a registration the scheduler gave up on
            // (ABORTED: too many conflicting writes) again; here that
            // safety net must never be needed: only registrations that
            // truly collide (the same subnet) conflict, and a node that
            // lost looks elsewhere next.
            let mut aborted = 0;
            let mut a = loop {
                match connect(&addr, &format!("n{i:02}"), "127.0.0.1").await {
                    Ok(a) => break a,
                    Err(s) if s.code() == tonic::Code::Aborted && aborted < 5 => {
                        eprintln!("n{i:02}: {s}");
                        aborted += 1;
                    }
                    Err(s) => panic!("n{i:02} could not register: {s}"),
                }
            };
            let r = a.registered().await;
            (a, r, aborted)
        });
    }
    let mut agents = Vec::new();
    let mut subnets = BTreeSet::new();
    let mut aborted = 0;
    while let Some(j) = joins.join_next().await {
        let (a, r, n) = j.unwrap();
        aborted += n;
        assert_eq!(r.cluster_cidr, "10.89.0.0/16");
        assert!(
            r.subnet.starts_with("10.89.") && r.subnet.ends_with(".0/24"),
            "{r:?}"
        );
        assert!(
            subnets.insert(r.subnet.clone()),
            "subnet {} handed out twice",
            r.subnet
        );
        agents.push(a);
    }
    assert_eq!(subnets.len(), NODES);
    let conflicts = drover_scheduler::cluster::write_conflicts("node") - conflicts_before;
    let most = drover_scheduler::cluster::most_attempts("node");
    eprintln!(
        "{NODES} nodes on 2 schedulers: {conflicts} conflicting node registration writes, \
         at most {most} of {} attempts for one registration, \
         {aborted} registrations given up (ABORTED)",
        drover_scheduler::cluster::MAX_ATTEMPTS
    );
    assert_eq!(
        aborted, 0,
        "registrations ran out of attempts ({conflicts} conflicts in all)"
    );
    assert!(
        most < drover_scheduler::cluster::MAX_ATTEMPTS,
        "a registration took {most} attempts"
    );

    // Re-registering, through either scheduler, keeps the subnet.
    drop(agents);
    for i in [3usize, 10] {
        let first = {
            let mut a = connect(&cluster.addrs[0], &format!("n{i:02}"), "127.0.0.1")
                .await
                .unwrap();
            a.registered().await.subnet
        };
        let mut again = connect(&cluster.addrs[1], &format!("n{i:02}"), "127.0.0.1")
            .await
            .unwrap();
        assert_eq!(again.registered().await.subnet, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_cluster_cidr_refuses_registration_by_name() {
    let config = SubnetConfig::new("10.89.0.0/23".parse().unwrap(), 24).unwrap();
    let cluster = Cluster::start(1, config).await;
    let addr = &cluster.addrs[0];
    let mut a = connect(addr, "a", "127.0.0.1").await.unwrap();
    let mut b = connect(addr, "b", "127.0.0.1").await.unwrap();
    assert_eq!(a.registered().await.subnet, "10.89.0.0/24");
    assert_eq!(b.registered().await.subnet, "10.89.1.0/24");
    let refused = connect(addr, "c", "127.0.0.1")
        .await
        .err()
        .expect("a third node got a subnet of a /23 cut in /24s");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("10.89.0.0/23") && refused.message().contains("node c"),
        "{}",
        refused.message()
    );
    // A node that already holds one still gets back in.
    drop(a);
    let mut a = connect(addr, "a", "127.0.0.1").await.unwrap();
    assert_eq!(a.registered().await.subnet, "10.89.0.0/24");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_told_their_peers_as_nodes_join_and_go_down() {
    let cluster = Cluster::start(1, SubnetConfig::default()).await;
    let addr = &cluster.addrs[0];
    let mut a = connect(addr, "a", "198.18.0.10").await.unwrap();
    let ra = a.registered().await;
    assert_eq!(a.peers().await, vec![]);

    let mut b = connect(addr, "b", "198.18.0.11:4681").await.unwrap();
    let rb = b.registered().await;
    // The address goes without its port.
    assert_eq!(
        b.peers().await,
        vec![("a".into(), "198.18.0.10".into(), ra.subnet.clone())]
    );
    assert_eq!(
        a.peers().await,
        vec![("b".into(), "198.18.0.11".into(), rb.subnet.clone())]
    );

    // b goes silent: once the scheduler marks it down, a's list drops it.
    drop(b);
    assert_eq!(a.peers().await, vec![]);

    // b comes back with the same subnet, and both know each other again.
    let mut b = connect(addr, "b", "198.18.0.11").await.unwrap();
    assert_eq!(b.registered().await.subnet, rb.subnet);
    assert_eq!(
        b.peers().await,
        vec![("a".into(), "198.18.0.10".into(), ra.subnet.clone())]
    );
    assert_eq!(
        a.peers().await,
        vec![("b".into(), "198.18.0.11".into(), rb.subnet)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_an_agent_asks_for_is_given_only_when_it_is_free_and_inside() {
    let cluster = Cluster::start(1, SubnetConfig::default()).await;
    let addr = &cluster.addrs[0];
    let refused = |r: Result<Agent, tonic::Status>| -> tonic::Status {
        r.err().expect("registration was accepted")
    };
    // Free and inside the cluster CIDR: granted, and never handed out again.
    let mut a = connect_asking(addr, "a", "127.0.0.1", "10.89.7.0/24")
        .await
        .unwrap();
    assert_eq!(a.registered().await.subnet, "10.89.7.0/24");
    let mut b = connect(addr, "b", "127.0.0.1").await.unwrap();
    assert_eq!(b.registered().await.subnet, "10.89.0.0/24");

    // Not a whole node subnet: refused, naming the prefix.
    let e = refused(connect_asking(addr, "c", "127.0.0.1", "10.89.7.128/25").await);
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("not a /24 subnet"), "{}", e.message());
    // Another node's subnet: refused, naming both.
    let e = refused(connect_asking(addr, "c", "127.0.0.1", "10.89.7.0/24").await);
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("node c")
            && e.message().contains("10.89.7.0/24")
            && e.message().contains("node a"),
        "{}",
        e.message()
    );
    // Outside the cluster CIDR: refused, naming it.
    let e = refused(connect_asking(addr, "c", "127.0.0.1", "192.168.77.0/24").await);
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("10.89.0.0/16"), "{}", e.message());
    // A node that has a subnet cannot switch to another one.
    drop(b);
    let e = refused(connect_asking(addr, "b", "127.0.0.1", "10.89.9.0/24").await);
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("already has subnet 10.89.0.0/24"),
        "{}",
        e.message()
    );
    // Asking for the one it has is fine; nothing above changed any claim.
    let mut b = connect_asking(addr, "b", "127.0.0.1", "10.89.0.0/24")
        .await
        .unwrap();
    assert_eq!(b.registered().await.subnet, "10.89.0.0/24");
    let mut c = connect(addr, "c", "127.0.0.1").await.unwrap();
    assert_eq!(c.registered().await.subnet, "10.89.1.0/24");
}
