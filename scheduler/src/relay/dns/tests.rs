//! The relay without a store: chunking, the snapshot-then-batches order of
//! one feed, a slow agent resynchronised with a snapshot while a fast one
//! gets every batch, and a re-list sent as its difference.

use std::time::Duration;

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

/// The DNS updates an agent's stream carried so far.
fn drain(
    rx: &mut mpsc::Receiver<Result<pb::SchedulerMessage, tonic::Status>>,
) -> Vec<pb::DnsUpdate> {
    let mut out = Vec::new();
    while let Ok(Ok(m)) = rx.try_recv() {
        if let Some(pb::scheduler_message::Msg::DnsUpdate(u)) = m.msg {
            out.push(u);
        }
    }
    out
}

/// Receives DNS updates until `n` arrived, or panics after 5 s.
async fn take(
    rx: &mut mpsc::Receiver<Result<pb::SchedulerMessage, tonic::Status>>,
    n: usize,
) -> Vec<pb::DnsUpdate> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
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
async fn a_feed_sends_a_snapshot_then_each_batch_and_nothing_before_the_first_load() {
    let relay = Arc::new(DnsRelay::default());
    let (tx, mut rx) = mpsc::channel(64);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    tokio::spawn(feed(relay.clone(), "n1".into(), tx, ended.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        drain(&mut rx).is_empty(),
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
    // A progress notification carries nothing to send.
    relay.apply(Vec::new(), 13);
    relay.apply(vec![put_change("/skydns/x/y", "{}")], 14);
    let next = take(&mut rx, 2).await;
    assert!(!next[0].reset && next[0].revision == 12);
    assert_eq!(
        keys(&next[0]),
        [
            "/skydns/internal/drover/service/web/b2",
            "-/skydns/internal/drover/service/web/a1"
        ]
    );
    assert_eq!(
        (next[1].revision, keys(&next[1])),
        (14, vec!["/skydns/x/y".to_owned()])
    );
    assert_eq!(relay.size(), (2, 14));
}

#[tokio::test]
async fn a_slow_agent_gets_a_fresh_snapshot_and_a_fast_one_every_batch() {
    let relay = Arc::new(DnsRelay::default());
    relay.load(Vec::new(), 1);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    // The slow agent's stream holds one message and nobody reads it yet.
    let (slow_tx, mut slow_rx) = mpsc::channel(1);
    let (fast_tx, mut fast_rx) = mpsc::channel(1024);
    tokio::spawn(feed(relay.clone(), "slow".into(), slow_tx, ended.clone()));
    tokio::spawn(feed(relay.clone(), "fast".into(), fast_tx, ended.clone()));
    let fast_reset = take(&mut fast_rx, 1).await;
    assert!(fast_reset[0].reset);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Far more batches than a queue holds, without ever waiting.
    let n = QUEUE * 3;
    for i in 0..n {
        let rev = 2 + i as i64;
        relay.apply(vec![put_change(&format!("/skydns/k/{i:04}"), "{}")], rev);
        // Let the fast feed keep up, as a reading agent does.
        if i % 32 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let last = 1 + n as i64;
    let fast = take(&mut fast_rx, n).await;
    assert!(fast.iter().all(|u| !u.reset));
    assert_eq!(fast.last().map(|u| u.revision), Some(last));

    // The slow agent reads now: its first messages were queued before it
    // fell behind; then a snapshot holding every record, then nothing
    // older than it.
    let mut got = Vec::new();
    loop {
        let u = take(&mut slow_rx, 1).await.remove(0);
        let done = u.reset && u.revision == last && !u.more;
        got.push(u);
        if done {
            break;
        }
    }
    let snapshot = got.last().expect("a snapshot");
    assert_eq!(snapshot.records.len(), n, "the snapshot misses records");
    assert!(got.iter().skip(1).any(|u| u.reset), "no resync snapshot");
    relay.apply(vec![put_change("/skydns/k/after", "{}")], last + 1);
    let after = take(&mut slow_rx, 1).await;
    assert_eq!((after[0].reset, after[0].revision), (false, last + 1));
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
    let (tx, mut rx) = mpsc::channel(64);
    let ended = CancellationToken::new();
    let _stop = ended.clone().drop_guard();
    tokio::spawn(feed(relay.clone(), "n1".into(), tx, ended.clone()));
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
    assert!(drain(&mut rx).is_empty());
}
