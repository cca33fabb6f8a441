//! The scheduler relays the store's `/skydns/` records to agents over
//! their `Connect` stream, against the embedded store run as a child
//! process (so it can be killed and restarted on its address): a fake
//! agent gets `Registered`, then a reset snapshot, then each watch
//! response as one batch; after the store restarts, only the changes made
//! since (the watch resumed, no new snapshot); after a compaction it
//! missed, the re-listed difference as one plain batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::{Core, Timing};
use drover_store::Store;
use drover_tests::etcd::EmbeddedChild;
use etcd_client::{Client, Txn, TxnOp};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(200),
    node_grace: Duration::from_secs(30),
    reconcile: Duration::from_secs(1),
};

/// How long a relayed change may take (the relay's watch retries with a
/// backoff of up to 5 s while the store is down).
const DEADLINE: Duration = Duration::from_secs(30);

const WEB: &str = "/skydns/internal/drover/service/web/";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_embedded_store"))
}

fn endpoint(host: &str) -> String {
    format!(r#"{{"host":"{host}","port":8080}}"#)
}

async fn client(store: &EmbeddedChild) -> Client {
    Client::connect([store.endpoint()], None).await.unwrap()
}

/// A scheduler on loopback over the store at `store`; stopped on drop.
struct Scheduler {
    addr: String,
    stop: CancellationToken,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Scheduler {
    async fn start(store: &str) -> Scheduler {
        let stop = CancellationToken::new();
        let store = Store::connect(&[store.to_owned()], "/drover/")
            .await
            .unwrap();
        let core = Core::new(store, TIMING);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(drover_scheduler::serve(core, l, stop.clone(), None));
        Scheduler { addr, stop }
    }
}

/// An agent that registers, heartbeats, and hands the test every message
/// after `Registered` that is a DNS update; its first message must be
/// `Registered`. Dropping it ends its stream.
struct Agent {
    updates: mpsc::UnboundedReceiver<pb::DnsUpdate>,
    stop: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Agent {
    async fn connect(scheduler: &Scheduler, id: &str) -> Agent {
        let channel = Endpoint::from_shared(scheduler.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        tx.send(register(id)).await.unwrap();
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = inbound.next().await.unwrap().unwrap();
        assert!(
            matches!(first.msg, Some(pb::scheduler_message::Msg::Registered(_))),
            "{first:?}"
        );
        let (up, updates) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = beat.tick() => {
                        let hb = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 })) };
                        if tx.send(hb).await.is_err() { return; }
                    }
                    m = inbound.next() => {
                        let Some(Ok(m)) = m else { return };
                        if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
                            if up.send(u).is_err() { return; }
                        }
                    }
                }
            }
        });
        Agent { updates, stop }
    }

    /// The next DNS update, within the deadline.
    async fn next(&mut self, what: &str) -> pb::DnsUpdate {
        tokio::time::timeout(DEADLINE, self.updates.recv())
            .await
            .unwrap_or_else(|_| panic!("no DNS update within {DEADLINE:?}: {what}"))
            .expect("the agent's stream ended")
    }
}

fn register(id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            node: Some(pb::Node {
                id: id.into(),
                hostname: id.into(),
                // A name, not an IP: the scheduler writes no node record
                // of its own, so the relayed records are only the test's.
                address: format!("{id}.example"),
                cpu_millis: 1000,
                memory_mb: 1024,
                ..Default::default()
            }),
            running: vec![],
            partial_assignments: false,
            partial_peers: false,
        })),
    }
}

/// `+key` for a put, `-key` for a delete, the instance only.
fn changes(u: &pb::DnsUpdate) -> Vec<String> {
    u.records
        .iter()
        .map(|r| {
            let id = r.key.strip_prefix(WEB).unwrap_or(&r.key);
            format!("{}{id}", if r.deleted { '-' } else { '+' })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_a_snapshot_then_batches_across_store_restarts_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedChild::start(bin(), dir.path()).await.unwrap();
    let addr = store.addr().unwrap();
    let mut c = client(&store).await;
    c.put(format!("{WEB}a1"), endpoint("10.89.3.7"), None)
        .await
        .unwrap();
    // Not the layout's: relayed all the same (the agent's index judges).
    let last_put = c
        .put(
            "/skydns/internal/drover/node/n1",
            r#"{"host":"10.0.0.1"}"#,
            None,
        )
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("/elsewhere/x", "not relayed", None).await.unwrap();
    let scheduler = Scheduler::start(store.endpoint()).await;

    // Registered, then the snapshot of every record under /skydns/.
    let mut agent = Agent::connect(&scheduler, "n1").await;
    let reset = agent.next("the snapshot").await;
    assert!(reset.reset && !reset.more, "{reset:?}");
    assert_eq!(changes(&reset), ["+/skydns/internal/drover/node/n1", "+a1"]);
    // The revision the relay read at (registering the node wrote to the
    // store since: the relay's revision moves with /skydns/ only).
    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    assert!(
        (last_put..=now).contains(&reset.revision),
        "{} not in {last_put}..={now}",
        reset.revision
    );

    // One transaction, one watch response, one batch.
    let txn = Txn::new().and_then([
        TxnOp::put(format!("{WEB}b2"), endpoint("10.89.3.8"), None),
        TxnOp::delete(format!("{WEB}a1"), None),
    ]);
    let done = c.txn(txn).await.unwrap().header().unwrap().revision();
    let batch = agent.next("the transaction").await;
    assert!(!batch.reset && !batch.more);
    assert_eq!(changes(&batch), ["+b2", "-a1"]);
    assert_eq!(batch.revision, done);
    // A second agent joining now gets the state as it is: a snapshot
    // (one shared between joiners, so perhaps taken before the
    // transaction) and the batches since, up to the transaction.
    let mut late = Agent::connect(&scheduler, "n2").await;
    let mut got = late.next("the second agent's snapshot").await;
    assert!(got.reset);
    let mut state = std::collections::BTreeSet::new();
    loop {
        for change in changes(&got) {
            let (sign, key) = change.split_at(1);
            if sign == "+" {
                state.insert(key.to_string());
            } else {
                state.remove(key);
            }
        }
        if got.revision >= done {
            break;
        }
        got = late.next("the second agent catching up").await;
        assert!(!got.reset, "a second snapshot: {got:?}");
    }
    assert_eq!(
        state.into_iter().collect::<Vec<_>>(),
        ["/skydns/internal/drover/node/n1", "b2"]
    );

    // The store restarts where it was: the relay resumes its watch, so
    // the agents get only what changed since, never a new snapshot.
    store.kill9().unwrap();
    store = EmbeddedChild::start_on(bin(), dir.path(), Some(addr))
        .await
        .unwrap();
    let mut c = client(&store).await;
    c.put(format!("{WEB}c3"), endpoint("10.89.4.2"), None)
        .await
        .unwrap();
    for a in [&mut agent, &mut late] {
        let after = a.next("a change after the restart").await;
        assert!(
            !after.reset,
            "a snapshot after a resumable restart: {after:?}"
        );
        assert_eq!(changes(&after), ["+c3"]);
    }

    // Changes and a compaction the relay cannot see (the store serves
    // elsewhere meanwhile): it re-lists and sends the difference.
    store.kill9().unwrap();
    let aside = EmbeddedChild::start(bin(), dir.path()).await.unwrap();
    let mut c = client(&aside).await;
    c.delete(format!("{WEB}b2"), None).await.unwrap();
    let put = c
        .put(format!("{WEB}d4"), endpoint("10.89.4.3"), None)
        .await
        .unwrap();
    let compacted = put.header().unwrap().revision();
    c.compact(compacted, None).await.unwrap();
    drop(aside);
    let store = EmbeddedChild::start_on(bin(), dir.path(), Some(addr))
        .await
        .unwrap();
    let diff = agent.next("the difference after the compaction").await;
    assert!(!diff.reset, "{diff:?}");
    assert_eq!(changes(&diff), ["-b2", "+d4"]);
    assert_eq!(diff.revision, compacted);
    // And it watches again after the reload.
    let mut c = client(&store).await;
    c.delete(format!("{WEB}c3"), None).await.unwrap();
    assert_eq!(
        changes(&agent.next("a change after the reload").await),
        ["-c3"]
    );
}
