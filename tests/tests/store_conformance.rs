//! One conformance suite, run with identical expectations against the
//! embedded server (`embedded::*`) and a real etcd 3.4 started on loopback
//! (`real_etcd::*`). Each case is an `async fn case(endpoints)` that knows
//! nothing about which server it talks to; every case gets a fresh server,
//! so revisions start at 1 on both.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseTimeToLiveOptions,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
    WatchStream,
};
use tokio::time::Instant;

async fn client(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, None).await?)
}

fn status(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// The next watch response, or an error after `within`.
async fn next(stream: &mut WatchStream, within: Duration) -> Result<WatchResponse> {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(r))) => Ok(r),
        Ok(Ok(None)) => bail!("watch stream ended"),
        Ok(Err(e)) => bail!("watch stream failed: {e}"),
        Err(_) => bail!("no watch response within {within:?}"),
    }
}

/// Collects events (type, key, value, mod_revision, prev value) until `n`
/// have arrived.
async fn events(
    stream: &mut WatchStream,
    n: usize,
) -> Result<Vec<(EventType, String, String, i64, Option<String>)>> {
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let r = next(stream, left).await?;
        ensure!(!r.canceled(), "watch canceled: {}", r.cancel_reason());
        for e in r.events() {
            let kv = e.kv().context("event without kv")?;
            out.push((
                e.event_type(),
                kv.key_str()?.to_string(),
                kv.value_str()?.to_string(),
                kv.mod_revision(),
                e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
            ));
        }
    }
    Ok(out)
}

fn s(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap()
}

// ---------------------------------------------------------------- KV

async fn range_single_prefix_limit_revision_sort(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let empty = c.get("nothing", None).await?;
    assert_eq!(empty.header().unwrap().revision(), 1);
    assert!(empty.kvs().is_empty());
    assert_eq!(empty.count(), 0);

    c.put("/a/2", "two", None).await?; // rev 2
    c.put("/a/1", "one", None).await?; // rev 3
    c.put("/a/3", "three", None).await?; // rev 4
    c.put("/b/1", "bee", None).await?; // rev 5
    c.put("/a/1", "uno", None).await?; // rev 6

    let one = c.get("/a/1", None).await?;
    assert_eq!(one.header().unwrap().revision(), 6);
    let kv = &one.kvs()[0];
    assert_eq!((s(kv.key()), s(kv.value())), ("/a/1", "uno"), "single key");
    assert_eq!(
        (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        ),
        (3, 6, 2, 0)
    );

    let p = c.get("/a/", Some(GetOptions::new().with_prefix())).await?;
    let keys: Vec<&str> = p.kvs().iter().map(|kv| s(kv.key())).collect();
    assert_eq!(keys, ["/a/1", "/a/2", "/a/3"]);
    assert_eq!((p.count(), p.more()), (3, false));

    let range = c
        .get("/a/2", Some(GetOptions::new().with_range("/b/1")))
        .await?;
    let keys: Vec<&str> = range.kvs().iter().map(|kv| s(kv.key())).collect();
    assert_eq!(keys, ["/a/2", "/a/3"], "[key, range_end)");

    let limited = c
        .get("/a/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await?;
    assert_eq!(limited.kvs().len(), 2);
    assert_eq!((limited.count(), limited.more()), (3, true));

    let old = c
        .get(
            "/a/",
            Some(GetOptions::new().with_prefix().with_revision(3)),
        )
        .await?;
    let old: Vec<(&str, &str)> = old
        .kvs()
        .iter()
        .map(|kv| (s(kv.key()), s(kv.value())))
        .collect();
    assert_eq!(old, [("/a/1", "one"), ("/a/2", "two")], "as of revision 3");

    let keys_only = c
        .get(
            "/a/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    assert_eq!(keys_only.kvs().len(), 3);
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(keys_only.kvs()[0].mod_revision(), 6);

    let count_only = c
        .get(
            "/a/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    assert!(count_only.kvs().is_empty());
    assert_eq!(count_only.count(), 3);

    let desc = c
        .get(
            "/a/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await?;
    let keys: Vec<&str> = desc.kvs().iter().map(|kv| s(kv.key())).collect();
    assert_eq!(keys, ["/a/3", "/a/2", "/a/1"]);

    let by_mod = c
        .get(
            "/a/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Ascend),
            ),
        )
        .await?;
    let keys: Vec<&str> = by_mod.kvs().iter().map(|kv| s(kv.key())).collect();
    assert_eq!(keys, ["/a/2", "/a/3", "/a/1"]);

    let by_value_limit = c
        .get(
            "/a/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(1),
            ),
        )
        .await?;
    assert_eq!(s(by_value_limit.kvs()[0].value()), "uno");

    let from = c
        .get("/a/3", Some(GetOptions::new().with_from_key()))
        .await?;
    let keys: Vec<&str> = from.kvs().iter().map(|kv| s(kv.key())).collect();
    assert_eq!(keys, ["/a/3", "/b/1"]);

    let future = c
        .get("/a/1", Some(GetOptions::new().with_revision(99)))
        .await;
    let (code, msg) = status(future.unwrap_err());
    assert_eq!(code, tonic::Code::OutOfRange, "{msg}");
    assert!(msg.contains("future revision"), "{msg}");
    Ok(())
}

async fn put_prev_kv_and_lease(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let first = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert!(first.prev_key().is_none());
    let second = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await?;
    let prev = second.prev_key().unwrap();
    assert_eq!(
        (s(prev.value()), prev.mod_revision(), prev.version()),
        ("v1", 2, 1)
    );
    assert_eq!(second.header().unwrap().revision(), 3);

    let lease = c.lease_grant(30, None).await?;
    c.put(
        "leased",
        "x",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await?;
    let got = c.get("leased", None).await?;
    assert_eq!(got.kvs()[0].lease(), lease.id());
    let ttl = c
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    let keys: Vec<&str> = ttl.keys().iter().map(|k| s(k)).collect();
    assert_eq!(keys, ["leased"]);

    let empty = c.put("", "x", None).await;
    let (code, msg) = status(empty.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
    assert!(msg.contains("key is not provided"), "{msg}");
    Ok(())
}

async fn delete_prefix_with_prev_kv(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    for (k, v) in [("/d/1", "a"), ("/d/2", "b"), ("/d/3", "c"), ("/e", "z")] {
        c.put(k, v, None).await?;
    }
    let none = c
        .delete("/nope/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    assert_eq!(none.deleted(), 0);
    assert_eq!(
        none.header().unwrap().revision(),
        5,
        "no-op delete adds no revision"
    );
    let d = c
        .delete(
            "/d/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    assert_eq!(d.deleted(), 3);
    assert_eq!(
        d.header().unwrap().revision(),
        6,
        "one revision for the whole delete"
    );
    let prev: Vec<(&str, &str)> = d
        .prev_kvs()
        .iter()
        .map(|kv| (s(kv.key()), s(kv.value())))
        .collect();
    assert_eq!(prev, [("/d/1", "a"), ("/d/2", "b"), ("/d/3", "c")]);
    let left = c.get("/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(left.count(), 1);
    Ok(())
}

async fn txn_compares_and_nested_ops(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    c.put("t/a", "1", None).await?; // rev 2
    c.put("t/a", "2", None).await?; // rev 3, version 2
    c.put("t/b", "x", None).await?; // rev 4

    let txn = Txn::new()
        .when([
            Compare::value("t/a", CompareOp::Equal, "2"),
            Compare::version("t/a", CompareOp::Equal, 2),
            Compare::create_revision("t/a", CompareOp::Equal, 2),
            Compare::mod_revision("t/b", CompareOp::Less, 5),
            Compare::create_revision("t/missing", CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::put("t/c", "new", None),
            TxnOp::get("t/a", None),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::value("t/b", CompareOp::Greater, "a")])
                    .and_then([TxnOp::delete(
                        "t/b",
                        Some(DeleteOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::put("t/never", "1", None)]),
            ),
        ])
        .or_else([TxnOp::put("t/never", "1", None)]);
    let r = c.txn(txn).await?;
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 5, "a txn is one revision");
    let ops = r.op_responses();
    assert_eq!(ops.len(), 3);
    match &ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(s(g.kvs()[0].value()), "2"),
        other => bail!("expected a get response, got {other:?}"),
    }
    match &ops[2] {
        TxnOpResponse::Txn(t) => {
            assert!(t.succeeded());
            match &t.op_responses()[0] {
                TxnOpResponse::Delete(d) => {
                    assert_eq!(d.deleted(), 1);
                    assert_eq!(s(d.prev_kvs()[0].value()), "x");
                }
                other => bail!("expected a delete response, got {other:?}"),
            }
        }
        other => bail!("expected a txn response, got {other:?}"),
    }
    let c_kv = c.get("t/c", None).await?;
    assert_eq!(c_kv.kvs()[0].mod_revision(), 5);
    assert!(c.get("t/b", None).await?.kvs().is_empty());

    // A failing compare takes the failure branch.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::mod_revision("t/a", CompareOp::Equal, 2)])
                .and_then([TxnOp::put("t/never", "1", None)])
                .or_else([TxnOp::get("t/", Some(GetOptions::new().with_prefix()))]),
        )
        .await?;
    assert!(!r.succeeded());
    assert_eq!(
        r.header().unwrap().revision(),
        5,
        "a read-only branch adds no revision"
    );
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.count(), 2),
        other => bail!("expected a get response, got {other:?}"),
    }
    assert!(c.get("t/never", None).await?.kvs().is_empty());

    // Compare NotEqual and on a missing key's value (missing never equals).
    let r = c
        .txn(Txn::new().when([Compare::value("t/missing", CompareOp::NotEqual, "x")]))
        .await?;
    assert!(
        !r.succeeded(),
        "a compare on a missing key's value is false"
    );
    Ok(())
}

async fn txn_op_limit(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("ops/{i}"), "v", None))
            .collect()
    };
    let ok = c.txn(Txn::new().and_then(ops(128))).await?;
    assert!(ok.succeeded());
    let too_many = c.txn(Txn::new().and_then(ops(129))).await;
    let (code, msg) = status(too_many.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
    assert!(msg.contains("too many operations in txn request"), "{msg}");
    let in_failure = c.txn(Txn::new().or_else(ops(129))).await;
    assert_eq!(code_of(in_failure), tonic::Code::InvalidArgument);
    Ok(())
}

fn code_of<T>(r: Result<T, etcd_client::Error>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(e) => status(e).0,
    }
}

/// etcd 3.4 limits the *request* to `--max-request-bytes` (1.5 MiB); it has
/// no separate key-length limit, so a 2 KiB key is accepted.
async fn size_limits(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let long_key = "k".repeat(2048);
    c.put(long_key.as_str(), "v", None).await?;
    assert_eq!(c.get(long_key.as_str(), None).await?.count(), 1);
    let big_key = "k".repeat(100 * 1024);
    c.put(big_key.as_str(), "v", None).await?;

    c.put("ok", vec![b'v'; 1024 * 1024], None).await?;
    let (code, msg) = status(
        c.put("big", vec![b'v'; 1_572_864 + 1], None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
    assert!(msg.contains("request is too large"), "{msg}");
    let huge_key = "k".repeat(1_600_000);
    let (code, msg) = status(c.put(huge_key.as_str(), "v", None).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
    // Past the gRPC limit (1.5 MiB + 512 KiB) the transport itself refuses.
    let r = c.put("huge", vec![b'v'; 3 * 1024 * 1024], None).await;
    assert_eq!(code_of(r), tonic::Code::ResourceExhausted);
    assert!(c.get("big", None).await?.kvs().is_empty());
    Ok(())
}

async fn compact_and_historical_reads(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    for i in 0..5 {
        c.put("h", format!("v{i}"), None).await?; // revs 2..=6
    }
    c.compact(4, None).await?;
    let (code, msg) = status(
        c.get("h", Some(GetOptions::new().with_revision(3)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, tonic::Code::OutOfRange, "{msg}");
    assert!(msg.contains("compacted"), "{msg}");
    let at4 = c.get("h", Some(GetOptions::new().with_revision(4))).await?;
    assert_eq!(s(at4.kvs()[0].value()), "v2");
    let again = c.compact(4, None).await;
    assert_eq!(code_of(again), tonic::Code::OutOfRange);
    Ok(())
}

// ------------------------------------------------------------- Watch

async fn watch_start_revision_and_prev_kv(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    c.put("/w/a", "1", None).await?; // 2
    c.put("/w/b", "1", None).await?; // 3
    c.put("/x", "1", None).await?; // 4
    c.put("/w/a", "2", None).await?; // 5
    let mut w = c
        .watch(
            "/w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(3)
                    .with_prev_key(),
            ),
        )
        .await?;
    let created = next(&mut w, Duration::from_secs(5)).await?;
    assert!(created.created());
    c.delete("/w/b", None).await?; // 6
    let got = events(&mut w, 3).await?;
    assert_eq!(
        got,
        [
            (EventType::Put, "/w/b".into(), "1".into(), 3, None),
            (
                EventType::Put,
                "/w/a".into(),
                "2".into(),
                5,
                Some("1".into())
            ),
            (
                EventType::Delete,
                "/w/b".into(),
                "".into(),
                6,
                Some("1".into())
            ),
        ]
    );
    Ok(())
}

async fn watch_cancel(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let mut w = c.watch("k", None).await?;
    let created = next(&mut w, Duration::from_secs(5)).await?;
    assert!(created.created());
    let id = created.watch_id();
    c.put("k", "1", None).await?;
    assert_eq!(events(&mut w, 1).await?.len(), 1);
    w.cancel(id).await?;
    let canceled = next(&mut w, Duration::from_secs(5)).await?;
    assert!(canceled.canceled());
    assert_eq!(canceled.watch_id(), id);
    // A second watch on the same stream still works.
    w.watch("k2", None).await?;
    let created = next(&mut w, Duration::from_secs(5)).await?;
    assert!(created.created());
    assert_ne!(created.watch_id(), id);
    c.put("k", "2", None).await?;
    c.put("k2", "x", None).await?;
    let got = events(&mut w, 1).await?;
    assert_eq!(got[0].1, "k2", "the canceled watch delivers nothing");
    Ok(())
}

async fn watch_compacted_revision(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    for i in 0..5 {
        c.put("c", format!("{i}"), None).await?; // revs 2..=6
    }
    c.compact(5, None).await?;
    let mut w = c
        .watch("c", Some(WatchOptions::new().with_start_revision(2)))
        .await?;
    // etcd answers "created", then cancels with the compact revision.
    let mut resp = next(&mut w, Duration::from_secs(5)).await?;
    if resp.created() && !resp.canceled() {
        resp = next(&mut w, Duration::from_secs(5)).await?;
    }
    assert!(resp.canceled());
    assert_eq!(resp.compact_revision(), 5);
    assert!(resp.events().is_empty());
    Ok(())
}

/// A live event reaches the watcher about as fast as the put is answered
/// (the embedded server once took ~40 ms here: Nagle on the watch stream).
/// Each put reaches a prefix watcher on its own, without a later write to
/// push it out, in order and with the revision the put answered. How fast
/// is bench/store's "watch delivery" figure, not asserted here: a loaded
/// CI machine has no latency bound.
async fn watch_delivers_each_put_in_order(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let mut w = c
        .watch("p/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(next(&mut w, Duration::from_secs(5)).await?.created());
    for i in 0..21 {
        let key = format!("p/{i}");
        let put = c.put(key.as_str(), "v", None).await?;
        let rev = put.header().unwrap().revision();
        let got = events(&mut w, 1).await?;
        assert_eq!(got, [(EventType::Put, key, "v".to_string(), rev, None)]);
    }
    Ok(())
}

// ------------------------------------------------------------- Lease

async fn lease_grant_keepalive_ttl_revoke(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let g = c.lease_grant(30, None).await?;
    assert_eq!(g.ttl(), 30);
    assert!(g.id() > 0);
    c.put("l/a", "1", Some(PutOptions::new().with_lease(g.id())))
        .await?;
    c.put("l/b", "1", Some(PutOptions::new().with_lease(g.id())))
        .await?;
    let t = c
        .lease_time_to_live(g.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(t.granted_ttl(), 30);
    assert!((29..=30).contains(&t.ttl()), "ttl {}", t.ttl());
    let mut keys: Vec<&str> = t.keys().iter().map(|k| s(k)).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["l/a", "l/b"]);

    let (mut keeper, mut acks) = c.lease_keep_alive(g.id()).await?;
    keeper.keep_alive().await?;
    let ack = acks.message().await?.context("keep-alive stream ended")?;
    assert_eq!((ack.id(), ack.ttl()), (g.id(), 30));

    let listed = c.leases().await?;
    assert!(listed.leases().iter().any(|l| l.id() == g.id()));

    let mut w = c
        .watch("l/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(next(&mut w, Duration::from_secs(5)).await?.created());
    let rev_before = c.get("x", None).await?.header().unwrap().revision();
    let r = c.lease_revoke(g.id()).await?;
    assert_eq!(
        r.header().unwrap().revision(),
        rev_before + 1,
        "one revision"
    );
    let got = events(&mut w, 2).await?;
    assert!(got
        .iter()
        .all(|e| e.0 == EventType::Delete && e.3 == rev_before + 1));
    assert!(c
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await?
        .kvs()
        .is_empty());
    let gone = c.lease_time_to_live(g.id(), None).await?;
    assert_eq!(gone.ttl(), -1);
    Ok(())
}

async fn lease_expiry_deletes_keys_and_notifies(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let g = c.lease_grant(2, None).await?;
    assert_eq!(g.ttl(), 2);
    c.put("exp/a", "1", Some(PutOptions::new().with_lease(g.id())))
        .await?;
    c.put("exp/keep", "1", None).await?;
    let mut w = c
        .watch("exp/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(next(&mut w, Duration::from_secs(5)).await?.created());
    let started = Instant::now();
    let got = events(&mut w, 1).await?;
    let waited = started.elapsed();
    assert_eq!((got[0].0, got[0].1.as_str()), (EventType::Delete, "exp/a"));
    assert!(
        waited >= Duration::from_millis(1000),
        "expired early: {waited:?}"
    );
    assert!(c.get("exp/a", None).await?.kvs().is_empty());
    assert_eq!(c.get("exp/keep", None).await?.count(), 1);
    assert_eq!(c.lease_time_to_live(g.id(), None).await?.ttl(), -1);
    Ok(())
}

/// etcd raises a TTL below its minimum (1.5 × election timeout, rounded
/// up: 2 s with the defaults) to that minimum.
async fn lease_minimum_ttl(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let g = c.lease_grant(1, None).await?;
    assert_eq!(g.ttl(), 2);
    let t = c.lease_time_to_live(g.id(), None).await?;
    assert_eq!(t.granted_ttl(), 2);
    Ok(())
}

async fn unknown_lease_is_not_found(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let bogus = 0x1234_5678;
    let (code, msg) = status(c.lease_revoke(bogus).await.unwrap_err());
    assert_eq!(code, tonic::Code::NotFound, "{msg}");
    assert!(msg.contains("requested lease not found"), "{msg}");
    let put = c
        .put("k", "v", Some(PutOptions::new().with_lease(bogus)))
        .await;
    assert_eq!(code_of(put), tonic::Code::NotFound);
    let t = c.lease_time_to_live(bogus, None).await?;
    assert_eq!(t.ttl(), -1);
    // The server answers TTL 0, which etcd-client turns into an error.
    let ka = c.lease_keep_alive(bogus).await;
    assert!(
        matches!(ka, Err(etcd_client::Error::LeaseKeepAliveError(_))),
        "{ka:?}"
    );
    let txn = c
        .txn(Txn::new().and_then([TxnOp::put(
            "k",
            "v",
            Some(PutOptions::new().with_lease(bogus)),
        )]))
        .await;
    assert_eq!(code_of(txn), tonic::Code::NotFound);
    Ok(())
}

async fn maintenance_status(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    c.put("a", "1", None).await?;
    let st = c.status().await?;
    assert!(st.version().starts_with("3."), "version {}", st.version());
    assert_eq!(st.header().unwrap().revision(), 2);
    assert_ne!(st.leader(), 0);
    assert_eq!(st.leader(), st.header().unwrap().member_id());
    assert!(st.db_size() > 0);
    Ok(())
}

#[path = "store_conformance/backup.rs"]
mod backup;
#[path = "store_conformance/paged.rs"]
mod paged;
#[path = "store_conformance/typed.rs"]
mod typed;
use backup::*;
use paged::*;
use typed::*;

// ----------------------------------------------------------- runner

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    let server = drover_tests::etcd::Embedded::start().await?;
                    super::$case(&server.endpoints()).await
                }
            )*
        }
        mod real_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    let server = drover_tests::etcd::RealEtcd::start().await?;
                    super::$case(&server.endpoints()).await
                }
            )*
        }
    };
}

conformance!(
    range_single_prefix_limit_revision_sort,
    put_prev_kv_and_lease,
    delete_prefix_with_prev_kv,
    txn_compares_and_nested_ops,
    txn_op_limit,
    size_limits,
    compact_and_historical_reads,
    watch_start_revision_and_prev_kv,
    watch_cancel,
    watch_compacted_revision,
    watch_delivers_each_put_in_order,
    lease_grant_keepalive_ttl_revoke,
    lease_expiry_deletes_keys_and_notifies,
    lease_minimum_ttl,
    unknown_lease_is_not_found,
    maintenance_status,
    snapshot_stream_is_checksummed,
    typed_guarded_commit_conflict,
    typed_watch_from_revision_exactly_once,
    typed_watch_compacted_is_reported,
    typed_leases,
    typed_skydns_raw_keys,
    election_campaign_observe_resign_fence,
    typed_list_reads_many_pages_at_one_revision,
);

/// Not a conformance case (it reads the embedded server's own counter):
/// dropping a typed watch or an election observer releases the watcher on
/// the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_dropped_typed_watches_leak_nothing() -> Result<()> {
    use drover_store::{election::Election, Kind, Store};

    let server = drover_tests::etcd::Embedded::start().await?;
    let store = Store::connect(&server.endpoints(), "/leak/").await?;
    let count = || server.handle().watcher_count();
    let watch = store.watch(Kind::Job, 0).await?;
    let observer = Election::new(store.clone(), "x", 5).observe().await?;
    let until = |want: usize| async move {
        let end = Instant::now() + Duration::from_secs(5);
        while count() != want {
            ensure!(Instant::now() < end, "{} watchers, want {want}", count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    };
    until(2).await?;
    drop(watch);
    drop(observer);
    until(0).await?;
    Ok(())
}
