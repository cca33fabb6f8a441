//! End-to-end tests of the embedded etcd-compatible store, driven by the
//! real `etcd-client` crate and by `etcdctl` 3.4.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drover_store::embedded::{CancellationToken, EmbeddedError, EmbeddedEtcd, EmbeddedHandle};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::task::JoinHandle;

/// A running server; stops it on drop, even when the test fails.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), EmbeddedError>>>,
    handle: EmbeddedHandle,
}

impl Server {
    async fn start(dir: &Path) -> Result<Self> {
        let etcd = EmbeddedEtcd::open(dir)?;
        let handle = etcd.handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(etcd.serve(listener, stop.clone()));
        Ok(Self {
            addr,
            stop,
            task: Some(task),
            handle,
        })
    }

    async fn client(&self) -> Result<Client> {
        Ok(Client::connect([format!("http://{}", self.addr)], None).await?)
    }

    /// Clean shutdown, waiting for the server to return.
    async fn shutdown(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await???;
        }
        Ok(())
    }

    /// Crash-like stop: the serve future is dropped mid-flight.
    async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn status_of(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn poll_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let end = tokio::time::Instant::now() + deadline;
    while !f() {
        if tokio::time::Instant::now() > end {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_put_get_prefix_delete_txn_and_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let mut c = server.client().await?;

    let empty = c.get("nothing", None).await?;
    assert_eq!(empty.header().unwrap().revision(), 1);
    assert!(empty.kvs().is_empty());

    let r = c.put("/a/1", "one", None).await?;
    assert_eq!(r.header().unwrap().revision(), 2);
    c.put("/a/2", "two", None).await?;
    c.put("/b/1", "bee", None).await?;
    let prev = c
        .put("/a/1", "uno", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert_eq!(prev.prev_key().unwrap().value(), b"one");

    let got = c.get("/a/1", None).await?;
    let kv = &got.kvs()[0];
    assert_eq!(
        (
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version()
        ),
        (&b"uno"[..], 2, 5, 2)
    );
    let prefix = c.get("/a/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(prefix.count(), 2);
    let old = c
        .get("/a/1", Some(GetOptions::new().with_revision(2)))
        .await?;
    assert_eq!(old.kvs()[0].value(), b"one");
    let limited = c
        .get("/", Some(GetOptions::new().with_prefix().with_limit(1)))
        .await?;
    assert!(limited.more());
    assert_eq!(limited.kvs().len(), 1);

    let del = c
        .delete("/a/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await?;
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.header().unwrap().revision(), 6);

    // Create-if-absent, twice: the second one fails its compare.
    for (want, rev) in [(true, 7), (false, 7)] {
        let txn = Txn::new()
            .when([Compare::version("/lock", CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put("/lock", "me", None),
                TxnOp::put("/lock-owner", "me", None),
            ])
            .or_else([TxnOp::get("/lock", None)]);
        let r = c.txn(txn).await?;
        assert_eq!(r.succeeded(), want);
        assert_eq!(r.header().unwrap().revision(), rev);
    }
    let owner = c.get("/lock-owner", None).await?;
    assert_eq!(owner.kvs()[0].mod_revision(), 7);

    let s = status_of(c.put("", "v", None).await.unwrap_err());
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided"
        )
    );
    let s = status_of(c.put("big", vec![0u8; 1_600_000], None).await.unwrap_err());
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large"
        )
    );
    let s = status_of(
        c.put("k", "v", Some(PutOptions::new().with_lease(12345)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )
    );
    let many: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let s = status_of(c.txn(Txn::new().and_then(many)).await.unwrap_err());
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: too many operations in txn request"
        )
    );
    let s = status_of(
        c.get("/a/1", Some(GetOptions::new().with_revision(1000)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    c.compact(5, None).await?;
    let s = status_of(
        c.get("/a/1", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );

    let status = c.status().await?;
    assert_eq!(status.version(), "3.4.0-drover");
    assert_eq!(status.raft_index(), 7);
    let members = c.member_list().await?;
    assert_eq!(
        members.members()[0].client_urls(),
        [format!("http://{}", server.addr)]
    );
    server.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_events_resume_compaction_and_cancel() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let mut c = server.client().await?;
    let mut w = c
        .watch(
            "/w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    let created = w.message().await?.context("stream ended")?;
    assert!(created.created());
    let id = created.watch_id();

    c.put("/w/x", "1", None).await?; // 2
    c.put("/other", "1", None).await?; // 3
    c.put("/w/x", "2", None).await?; // 4
    c.delete("/w/x", None).await?; // 5
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = w.message().await?.context("stream ended")?;
        assert_eq!(r.watch_id(), id);
        for ev in r.events() {
            let kv = ev.kv().unwrap();
            seen.push((
                ev.event_type(),
                kv.mod_revision(),
                ev.prev_kv().map(|p| p.value().to_vec()),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, 2, None),
            (EventType::Put, 4, Some(b"1".to_vec())),
            (EventType::Delete, 5, Some(b"2".to_vec())),
        ]
    );

    // Resume from a past revision on a second watch of the same stream.
    w.watch(
        "/w/x",
        Some(WatchOptions::new().with_start_revision(4).with_watch_id(7)),
    )
    .await?;
    let created = w.message().await?.context("stream ended")?;
    assert!(created.created());
    assert_eq!(created.watch_id(), 7);
    let replay = w.message().await?.context("stream ended")?;
    assert_eq!(replay.watch_id(), 7);
    assert_eq!(replay.events()[0].kv().unwrap().mod_revision(), 4);
    let replay = w.message().await?.context("stream ended")?;
    assert_eq!(replay.events()[0].event_type(), EventType::Delete);

    w.request_progress().await?;
    let progress = w.message().await?.context("stream ended")?;
    assert_eq!(progress.watch_id(), -1);
    assert_eq!(progress.header().unwrap().revision(), 5);

    w.cancel(7).await?;
    let canceled = w.message().await?.context("stream ended")?;
    assert!(canceled.canceled());
    assert_eq!(canceled.watch_id(), 7);

    // Below the compacted revision: created, then canceled with the compaction point.
    c.compact(4, None).await?;
    let mut old = c
        .watch(
            "/w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2)),
        )
        .await?;
    assert!(old.message().await?.context("stream ended")?.created());
    let r = old.message().await?.context("stream ended")?;
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), 4);
    server.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_expire_keep_alive_and_revoke() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let mut c = server.client().await?;

    let short = c.lease_grant(1, None).await?.id();
    assert!(short > 0);
    c.put("/svc/a", "x", Some(PutOptions::new().with_lease(short)))
        .await?;
    let mut w = c
        .watch("/svc/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(w.message().await?.context("stream ended")?.created());
    let expired = tokio::time::timeout(Duration::from_secs(10), w.message())
        .await??
        .context("stream ended")?;
    assert_eq!(expired.events()[0].event_type(), EventType::Delete);
    assert!(c.get("/svc/a", None).await?.kvs().is_empty());
    assert_eq!(c.lease_time_to_live(short, None).await?.ttl(), -1);

    let long = c
        .lease_grant(2, Some(etcd_client::LeaseGrantOptions::new().with_id(4242)))
        .await?;
    assert_eq!(long.id(), 4242);
    let dup = status_of(
        c.lease_grant(2, Some(etcd_client::LeaseGrantOptions::new().with_id(4242)))
            .await
            .unwrap_err(),
    );
    assert_eq!(dup.message(), "etcdserver: lease already exists");
    c.put("/svc/b", "y", Some(PutOptions::new().with_lease(4242)))
        .await?;
    let (mut keeper, mut stream) = c.lease_keep_alive(4242).await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        keeper.keep_alive().await?;
        let r = stream.message().await?.context("keepalive stream ended")?;
        assert_eq!(r.ttl(), 2);
    }
    assert_eq!(c.get("/svc/b", None).await?.count(), 1);
    let ttl = c
        .lease_time_to_live(4242, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(
        (ttl.granted_ttl(), ttl.keys().to_vec()),
        (2, vec![b"/svc/b".to_vec()])
    );
    assert_eq!(c.leases().await?.leases().len(), 1);

    c.lease_revoke(4242).await?;
    let revoked = w.message().await?.context("stream ended")?;
    assert_eq!(revoked.events()[0].kv().unwrap().key(), b"/svc/b");
    assert!(c.lease_keep_alive(4242).await.is_err());
    let s = status_of(c.lease_revoke(4242).await.unwrap_err());
    assert_eq!(
        (s.code(), s.message()),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )
    );
    drop((keeper, stream));
    server.shutdown().await
}

fn wal_path(dir: &Path) -> PathBuf {
    dir.join("store.wal")
}

/// Byte offsets of each record in the log.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 8 <= bytes.len() {
        out.push(off);
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        off += 8 + len;
    }
    out
}

/// Acknowledged writes survive a restart without a clean shutdown (the
/// serve task is aborted; the process and its page cache live on, so this
/// does not test fsync: drover-store's unit tests do, on a fake disk that
/// loses unsynced bytes), a torn tail is cut and mid-log corruption refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_across_restart_abort_corruption_and_torn_tail() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let c = server.client().await?;
    // 64 concurrent writers, all acknowledged. That queued writes share a
    // sync (group commit) is a drover-store unit test; how fast they go is
    // bench/store's "64 in flight" figure.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put(format!("/k/{i:02}"), format!("v{i}"), None).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut c2 = c.clone();
    let lease = c2.lease_grant(60, None).await?.id();
    c2.put("/leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await?;
    drop((c, c2));
    server.kill().await; // no clean shutdown
    tokio::time::sleep(Duration::from_millis(100)).await;

    let server = Server::start(dir.path()).await?;
    let mut c = server.client().await?;
    let all = c.get("/k/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(all.count(), 64);
    assert_eq!(all.header().unwrap().revision(), 66);
    let mut revs: Vec<i64> = all.kvs().iter().map(|kv| kv.mod_revision()).collect();
    revs.sort_unstable();
    assert_eq!(revs, (2..=65).collect::<Vec<_>>());
    let ttl = c.lease_time_to_live(lease, None).await?;
    assert_eq!(ttl.granted_ttl(), 60);
    assert!(ttl.ttl() > 50);
    assert_eq!(c.get("/leased", None).await?.kvs()[0].lease(), lease);
    drop(c);
    server.shutdown().await?;

    // Torn tail: half a record appended is cut off on open.
    let path = wal_path(dir.path());
    let good = std::fs::read(&path)?;
    let mut torn = good.clone();
    torn.extend_from_slice(&good[..good.len().min(13)]);
    std::fs::write(&path, &torn)?;
    let server = Server::start(dir.path()).await?;
    assert_eq!(std::fs::read(&path)?, good);
    assert_eq!(server.client().await?.get("/k/00", None).await?.count(), 1);
    server.shutdown().await?;

    // A flipped byte in a middle record: refused, named, file untouched.
    let offsets = record_offsets(&good);
    let victim = offsets[offsets.len() / 2];
    let mut bad = good.clone();
    bad[victim + 10] ^= 0x5a;
    std::fs::write(&path, &bad)?;
    let err = match EmbeddedEtcd::open(dir.path()) {
        Ok(_) => bail!("opened a corrupt log"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&format!("offset {victim}")), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&path)?, bad);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_client_leaks_no_watchers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let mut c = server.client().await?;
    let mut streams = Vec::new();
    for i in 0..50 {
        let mut w = c.watch(format!("/leak/{i}"), None).await?;
        assert!(w.message().await?.context("stream ended")?.created());
        streams.push(w);
    }
    let h = server.handle.clone();
    poll_until("50 watchers", Duration::from_secs(5), || {
        h.watcher_count() == 50
    })
    .await?;
    drop(streams);
    drop(c);
    poll_until("watchers to drain", Duration::from_secs(10), || {
        h.watcher_count() == 0
    })
    .await?;
    server.shutdown().await
}

async fn etcdctl(addr: SocketAddr, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("/usr/bin/etcdctl");
    cmd.env("ETCDCTL_API", "3")
        // Scheme-less: `endpoint status` dials the endpoint string verbatim
        // and would send `http://…` as the HTTP/2 :authority, which the Rust
        // HTTP/2 server rejects as malformed (etcd's Go server tolerates it).
        .arg(format!("--endpoints={addr}"))
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning etcdctl")?;
    let mut input = child.stdin.take().context("etcdctl stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes()).await?;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await??;
    if !out.status.success() {
        bail!(
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_3_4_works_against_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let a = server.addr;
    assert_eq!(etcdctl(a, &["put", "/e/one", "1"], None).await?, "OK\n");
    etcdctl(a, &["put", "/e/two", "2"], None).await?;
    assert_eq!(
        etcdctl(a, &["get", "--prefix", "/e/"], None).await?,
        "/e/one\n1\n/e/two\n2\n"
    );

    // A watch from revision 2 replays history, then sees a live put.
    let mut watch = tokio::process::Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints=http://{a}"),
            "watch".into(),
            "--rev=2".into(),
            "/e/one".into(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        watch.stdout.take().context("watch stdout")?,
    ));
    let mut seen = Vec::new();
    let mut live_sent = false;
    while seen.len() < 6 {
        if seen.len() == 3 && !live_sent {
            etcdctl(a, &["put", "/e/one", "again"], None).await?;
            live_sent = true;
        }
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await??
            .context("etcdctl watch ended")?;
        seen.push(line);
    }
    assert_eq!(seen, ["PUT", "/e/one", "1", "PUT", "/e/one", "again"]);
    watch.kill().await?;

    assert_eq!(etcdctl(a, &["del", "/e/one"], None).await?, "1\n");
    let grant = etcdctl(a, &["lease", "grant", "30"], None).await?;
    let id = grant
        .split_whitespace()
        .nth(1)
        .context("lease id")?
        .to_string();
    etcdctl(a, &["put", "--lease", &id, "/e/leased", "v"], None).await?;
    let leased = etcdctl(a, &["get", "/e/leased", "-w", "json"], None).await?;
    assert!(leased.contains("\"lease\":"), "{leased}");

    let txn = "value(\"/e/two\") = \"2\"\n\nput /e/txn yes\n\nput /e/txn no\n\n";
    let out = etcdctl(a, &["txn"], Some(txn)).await?;
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        etcdctl(a, &["get", "--print-value-only", "/e/txn"], None).await?,
        "yes\n"
    );

    let status = etcdctl(a, &["endpoint", "status", "-w", "json"], None).await?;
    assert!(status.contains("3.4.0-drover"), "{status}");
    let members = etcdctl(a, &["member", "list"], None).await?;
    assert!(members.contains(&a.to_string()), "{members}");
    server.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_watcher_catches_up_without_gaps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let c = server.client().await?;
    let mut w = c
        .clone()
        .watch("/slow/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(w.message().await?.context("stream ended")?.created());
    // Far more revisions than the live buffer holds, while nobody reads:
    // the stream falls behind and must refill from history.
    const WRITERS: usize = 64;
    const EACH: usize = 100;
    let value = vec![b'x'; 4096];
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let mut c = c.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                c.put(format!("/slow/{t}/{i}"), value.clone(), None).await?;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut revs = Vec::new();
    while revs.len() < WRITERS * EACH {
        let r = tokio::time::timeout(Duration::from_secs(10), w.message())
            .await??
            .context("stream ended")?;
        assert!(!r.canceled(), "watch canceled: {r:?}");
        revs.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    let want: Vec<i64> = (2..2 + (WRITERS * EACH) as i64).collect();
    assert_eq!(revs, want);
    server.shutdown().await
}
