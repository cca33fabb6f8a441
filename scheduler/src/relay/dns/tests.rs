//! The relay without a store: chunking, the snapshot-then-batches order of
//! one feed, coalescing for a feed that fell behind, what a slow agent's
//! stream may hold, a feed too far behind resynchronised with a shared
//! snapshot, a re-list sent as its difference, and changes gathered while
//! a feed pauses ([`FEED_INTERVAL`]) sent as one message.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

fn kv(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    (key.as_bytes().to_vec(), value.as_bytes().to_vec())
}

fn put_change(key: &str, value: &str) -> KeyChange {
    KeyChange::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn rec(key: &str, size: usize) -> pb::DnsRecord {
    put(key, &vec![b'x'; size])
}

type Rx = Paced<ReceiverStream<Result<pb::SchedulerMessage, tonic::Status>>>;

/// A feed for `node` on a stream of `capacity` messages, read through
/// [`Paced`] as the agent service does.
fn start_feed(relay: &Arc<DnsRelay>, node: &str, capacity: usize, ended: &CancellationToken) -> Rx {
    let (tx, rx) = mpsc::channel(capacity);
    let pace = Arc::new(Pace::default());
    tokio::spawn(feed(
        relay.clone(),
        node.into(),
        tx,
        pace.clone(),
        ended.clone(),
    ));
    Paced::new(ReceiverStream::new(rx), pace)
}

/// The DNS updates an agent's stream holds now, unread.
fn queued(rx: &Rx) -> usize {
    rx.get_ref().as_ref().len()
}

/// The DNS updates an agent's stream carried so far.
async fn drain(rx: &mut Rx) -> Vec<pb::DnsUpdate> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(20), rx.next()).await {
        if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
            out.push(u);
        }
    }
    out
}

/// Receives DNS updates until `n` arrived, or panics after 5 s.
async fn take(rx: &mut Rx, n: usize) -> Vec<pb::DnsUpdate> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("an update within 5 s")
            .expect("an open stream")
            .expect("no error");
        if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
            out.push(u);
        }
    }
    out
}

/// An agent's copy of the records, as it applies whole batches.
#[derive(Debug, Default)]
struct Agent {
    records: BTreeMap<String, Vec<u8>>,
    staged: Vec<pb::DnsUpdate>,
    revision: i64,
    messages: usize,
    resets: usize,
}

impl Agent {
    fn take(&mut self, u: pb::DnsUpdate) {
        self.messages += 1;
        let more = u.more;
        self.staged.push(u);
        if more {
            return;
        }
        let batch = std::mem::take(&mut self.staged);
        if batch[0].reset {
            self.records.clear();
            self.resets += 1;
        }
        for u in batch {
            self.revision = self.revision.max(u.revision);
            for r in u.records {
                if r.deleted {
                    self.records.remove(&r.key);
                } else {
                    self.records.insert(r.key, r.value);
                }
            }
        }
    }

    /// Reads `rx` until this copy is the relay's, or panics after 10 s.
    async fn follow(&mut self, rx: &mut Rx, relay: &DnsRelay) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (want, revision) = {
                let state = lock(&relay.state);
                (state.records.clone(), state.revision)
            };
            if self.staged.is_empty() && self.records == want && self.revision == revision {
                return;
            }
            let m = tokio::time::timeout_at(deadline, rx.next())
                .await
                .expect("the relay's records within 10 s")
                .expect("an open stream")
                .expect("no error");
            if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
                self.take(u);
            }
        }
    }
}

fn built(relay: &DnsRelay) -> u64 {
    lock(&relay.state).snapshots_built
}

fn keys(u: &pb::DnsUpdate) -> Vec<String> {
    u.records
        .iter()
        .map(|r| {
            if r.deleted {
                format!("-{}", r.key)
            } else {
                r.key.clone()
            }
        })
        .collect()
}

#[test]
fn chunks_split_big_batches_and_mark_all_but_the_last() {
    let records: Vec<_> = (0..10)
        .map(|i| rec(&format!("/skydns/k{i}"), CHUNK_BYTES / 4))
        .collect();
    let out = chunks(true, 7, records);
    // About three records fit a chunk (each is a quarter plus its key).
    assert_eq!(
        out.len(),
        4,
        "{:?}",
        out.iter().map(|u| u.records.len()).collect::<Vec<_>>()
    );
    assert_eq!(out.iter().map(|u| u.records.len()).sum::<usize>(), 10);
    assert!(out.iter().all(|u| u.reset && u.revision == 7));
    assert_eq!(
        out.iter().map(|u| u.more).collect::<Vec<_>>(),
        [true, true, true, false]
    );
    // Order is kept across chunks.
    let all: Vec<String> = out.iter().flat_map(keys).collect();
    assert_eq!(all[0], "/skydns/k0");
    assert_eq!(all[9], "/skydns/k9");

    // One record over the limit goes alone, between others.
    let out = chunks(
        false,
        3,
        vec![rec("/a", 10), rec("/b", CHUNK_BYTES * 2), rec("/c", 10)],
    );
    assert_eq!(
        out.iter().map(keys).collect::<Vec<_>>(),
        [vec!["/a"], vec!["/b"], vec!["/c"]]
    );

    // An empty reset still empties the agent; an empty batch is nothing.
    let out = chunks(true, 9, Vec::new());
    assert_eq!(out.len(), 1);
    assert!(out[0].reset && !out[0].more && out[0].records.is_empty());
    assert!(chunks(false, 9, Vec::new()).is_empty());
}

#[tokio::test]
async fn a_feed_sends_a_snapshot_then_each_change_and_nothing_before_the_first_load() {
    let relay = Arc::new(DnsRelay::default());
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    let mut rx = start_feed(&relay, "n1", 64, &ended);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        drain(&mut rx).await.is_empty(),
        "a snapshot before the store was read"
    );

    relay.load(vec![kv("/skydns/internal/drover/service/web/a1", "{}")], 10);
    let first = take(&mut rx, 1).await;
    assert!(first[0].reset && !first[0].more);
    assert_eq!(first[0].revision, 10);
    assert_eq!(keys(&first[0]), ["/skydns/internal/drover/service/web/a1"]);

    relay.apply(
        vec![
            put_change("/skydns/internal/drover/service/web/b2", "{}"),
            KeyChange::Delete {
                key: b"/skydns/internal/drover/service/web/a1".to_vec(),
            },
        ],
        12,
    );
    let next = take(&mut rx, 1).await;
    assert!(!next[0].reset && next[0].revision == 12);
    assert_eq!(
        keys(&next[0]),
        [
            "/skydns/internal/drover/service/web/b2",
            "-/skydns/internal/drover/service/web/a1"
        ]
    );
    // A progress notification carries nothing to send.
    relay.apply(Vec::new(), 13);
    relay.apply(vec![put_change("/skydns/x/y", "{}")], 14);
    let next = take(&mut rx, 1).await;
    assert_eq!(
        (next[0].reset, next[0].revision, keys(&next[0])),
        (false, 14, vec!["/skydns/x/y".to_owned()])
    );
    assert_eq!(relay.size(), (2, 14));
    assert!(drain(&mut rx).await.is_empty());
}

#[tokio::test]
async fn a_feed_that_fell_behind_sends_the_batches_since_coalesced() {
    let relay = Arc::new(DnsRelay::default());
    relay.load(vec![kv("/skydns/a", "0")], 1);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    let mut rx = start_feed(&relay, "n1", 64, &ended);
    let mut agent = Agent::default();
    agent.follow(&mut rx, &relay).await;
    assert_eq!((agent.messages, agent.resets), (1, 1));

    // 200 batches while the agent reads nothing: 100 joins, and the same
    // key changed 100 times.
    for i in 0..100 {
        let rev = 2 + 2 * i;
        relay.apply(vec![put_change(&format!("/skydns/n/{i:03}"), "{}")], rev);
        relay.apply(vec![put_change("/skydns/a", &i.to_string())], rev + 1);
        tokio::task::yield_now().await;
    }
    agent.follow(&mut rx, &relay).await;
    // The stream held at most IN_FLIGHT messages while nobody read, then
    // the rest came as one: each key once.
    assert!(
        agent.messages <= 1 + pace::IN_FLIGHT + 1,
        "{} messages for 200 batches",
        agent.messages
    );
    assert_eq!(agent.resets, 1, "caught up from the log, not a snapshot");
    assert_eq!(
        agent.records.get("/skydns/a").map(Vec::as_slice),
        Some(&b"99"[..])
    );
    assert_eq!(agent.records.len(), 101);
}

#[tokio::test]
async fn a_slow_stream_holds_at_most_in_flight_messages() {
    let relay = Arc::new(DnsRelay::default());
    relay.load(Vec::new(), 1);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    // Room for 64 messages; nobody reads.
    let mut rx = start_feed(&relay, "slow", 64, &ended);
    for i in 0..500 {
        relay.apply(vec![put_change(&format!("/skydns/k/{i:04}"), "{}")], 2 + i);
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        queued(&rx) <= pace::IN_FLIGHT,
        "{} DNS messages queued on a stream nobody reads",
        queued(&rx)
    );
    let mut agent = Agent::default();
    agent.follow(&mut rx, &relay).await;
    assert_eq!(agent.records.len(), 500);
}

#[tokio::test]
async fn a_feed_the_log_no_longer_covers_gets_a_snapshot_and_a_fast_one_every_change() {
    // No pause: the fast feed keeps up with every batch as it comes.
    let relay = Arc::new(DnsRelay::with_interval(Duration::ZERO));
    relay.load(Vec::new(), 1);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    let mut slow = start_feed(&relay, "slow", 64, &ended);
    let mut fast = start_feed(&relay, "fast", 64, &ended);
    let (mut slow_agent, mut fast_agent) = (Agent::default(), Agent::default());
    slow_agent.follow(&mut slow, &relay).await;
    fast_agent.follow(&mut fast, &relay).await;

    // More batches than the log keeps; the fast agent reads as they come.
    let n = LOG_BATCHES + 100;
    for i in 0..n {
        relay.apply(
            vec![put_change(&format!("/skydns/k/{i:05}"), "{}")],
            2 + i as i64,
        );
        if i % 64 == 0 {
            tokio::task::yield_now().await;
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(1), fast.next()).await
            {
                if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
                    fast_agent.take(u);
                }
            }
        }
    }
    fast_agent.follow(&mut fast, &relay).await;
    assert_eq!(fast_agent.resets, 1, "the fast agent was resynchronised");
    assert_eq!(fast_agent.records.len(), n);

    // The slow agent reads now: what it had queued, then a snapshot
    // holding every record.
    slow_agent.follow(&mut slow, &relay).await;
    assert_eq!(slow_agent.resets, 2, "no resync snapshot");
    assert_eq!(slow_agent.records.len(), n);
    relay.apply(vec![put_change("/skydns/k/after", "{}")], 10 + n as i64);
    let after = take(&mut slow, 1).await;
    assert!(!after[0].reset);
    assert_eq!(keys(&after[0]), ["/skydns/k/after"]);
}

#[tokio::test]
async fn joining_feeds_share_a_snapshot_while_the_log_covers_it() {
    let relay = Arc::new(DnsRelay::default());
    relay.load(vec![kv("/skydns/a", "1")], 1);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    let mut streams: Vec<Rx> = (0..20)
        .map(|i| start_feed(&relay, &format!("n{i}"), 64, &ended))
        .collect();
    for rx in &mut streams {
        Agent::default().follow(rx, &relay).await;
    }
    assert_eq!(built(&relay), 1, "one snapshot for 20 feeds");

    // Joins the log still covers: the same snapshot, then the changes.
    for i in 0..50 {
        relay.apply(vec![put_change(&format!("/skydns/n/{i}"), "{}")], 2 + i);
    }
    let mut late = start_feed(&relay, "late", 64, &ended);
    let mut agent = Agent::default();
    agent.follow(&mut late, &relay).await;
    assert_eq!(built(&relay), 1);
    assert_eq!((agent.resets, agent.records.len()), (1, 51));

    // Once the log has moved past it, a new one.
    for i in 0..LOG_BATCHES as i64 {
        relay.apply(vec![put_change(&format!("/skydns/m/{i}"), "{}")], 100 + i);
    }
    let mut later = start_feed(&relay, "later", 64, &ended);
    Agent::default().follow(&mut later, &relay).await;
    assert_eq!(built(&relay), 2);
}

#[tokio::test]
async fn a_reload_after_compaction_is_sent_as_its_difference() {
    let relay = Arc::new(DnsRelay::default());
    relay.load(
        vec![
            kv("/skydns/a", "1"),
            kv("/skydns/b", "1"),
            kv("/skydns/c", "1"),
        ],
        5,
    );
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    let mut rx = start_feed(&relay, "n1", 64, &ended);
    assert!(take(&mut rx, 1).await[0].reset);

    // a unchanged, b changed, c deleted, d new.
    relay.load(
        vec![
            kv("/skydns/a", "1"),
            kv("/skydns/b", "2"),
            kv("/skydns/d", "1"),
        ],
        20,
    );
    let diff = take(&mut rx, 1).await.remove(0);
    assert!(!diff.reset);
    assert_eq!(diff.revision, 20);
    assert_eq!(keys(&diff), ["-/skydns/c", "/skydns/b", "/skydns/d"]);
    assert_eq!(diff.records[1].value, b"2");
    // An identical reload sends nothing.
    relay.load(
        vec![
            kv("/skydns/a", "1"),
            kv("/skydns/b", "2"),
            kv("/skydns/d", "1"),
        ],
        21,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(drain(&mut rx).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn changes_while_a_feed_pauses_go_as_one_message_to_an_agent_that_keeps_up() {
    let relay = Arc::new(DnsRelay::default());
    relay.load(vec![kv("/skydns/a", "0")], 1);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    let mut rx = start_feed(&relay, "n1", 64, &ended);
    let mut agent = Agent::default();
    agent.follow(&mut rx, &relay).await;
    assert_eq!(agent.messages, 1, "the snapshot");

    // The agent reads every message as soon as it is queued, so the
    // stream's pace never holds the feed back: only the interval does.
    let (got_tx, mut got) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
                let _ = got_tx.send(u);
            }
        }
    });
    // 100 joins, one a millisecond: all within the pause that followed the
    // snapshot.
    for i in 0..100 {
        relay.apply(vec![put_change(&format!("/skydns/n/{i:03}"), "{}")], 2 + i);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(FEED_INTERVAL * 4).await;
    let mut updates = Vec::new();
    while let Ok(u) = got.try_recv() {
        updates.push(u);
    }
    assert!(
        (1..=2).contains(&updates.len()),
        "{} messages for 100 changes",
        updates.len()
    );
    for u in updates {
        agent.take(u);
    }
    assert_eq!(agent.records.len(), 101);
    assert_eq!((agent.resets, agent.revision), (1, 101));

    // Idle again: a lone change goes at once, not after an interval.
    tokio::time::sleep(FEED_INTERVAL * 4).await;
    let sent = tokio::time::Instant::now();
    relay.apply(vec![put_change("/skydns/lone", "{}")], 200);
    let lone = tokio::time::timeout(FEED_INTERVAL * 10, got.recv())
        .await
        .expect("the lone change")
        .expect("an open stream");
    assert_eq!(keys(&lone), ["/skydns/lone"]);
    assert!(sent.elapsed() < FEED_INTERVAL, "{:?}", sent.elapsed());
}
