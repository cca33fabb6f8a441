//! Durability of the embedded server across `kill -9`: the server runs as a
//! child process (`embedded_store`), the test streams writes at it, kills
//! it mid-stream, restarts it on the same data directory and checks that
//! everything it acknowledged is still there.
//!
//! `kill -9` keeps the page cache, so this tests crash-only restart, not
//! fsync: what the log's sync buys across a power cut is tested in
//! drover-store's unit tests (`embedded/tests/durability.rs`), on a fake
//! disk that keeps only synced bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use drover_tests::etcd::EmbeddedChild;
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

const IN_FLIGHT: usize = 16;
/// Acknowledged writes to see before the kill.
const ACKED_BEFORE_KILL: usize = 600;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_embedded_store"))
}

async fn client(server: &EmbeddedChild) -> Result<Client> {
    Ok(Client::connect([server.endpoint()], None).await?)
}

/// One acknowledged put: key, value, the revision the server answered.
type Ack = (String, String, i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_mid_stream_loses_no_acknowledged_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = EmbeddedChild::start(bin(), dir.path()).await?;
    let c = client(&server).await?;

    let acked: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop, c) = (Arc::clone(&acked), Arc::clone(&stop), c.clone());
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            let mut tasks = JoinSet::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
                let (mut c, acked) = (c.clone(), Arc::clone(&acked));
                let key = format!("crash/{i:08}");
                let value = format!("value-{i}-{}", i.wrapping_mul(0x9e37_79b9));
                i += 1;
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Ok(r) = c.put(key.as_str(), value.as_str(), None).await {
                        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                        acked.lock().unwrap().push((key, value, rev));
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        ensure!(Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Writes are still in flight at this moment.
    server.kill9()?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(20), writer).await??;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    ensure!(acked.len() >= ACKED_BEFORE_KILL);
    let revs: HashSet<i64> = acked.iter().map(|a| a.2).collect();
    assert_eq!(
        revs.len(),
        acked.len(),
        "every acknowledged put has its own revision"
    );
    let max_acked = acked.iter().map(|a| a.2).max().unwrap();

    let server = EmbeddedChild::start(bin(), dir.path()).await?;
    let mut c = client(&server).await?;
    let all = c
        .get("crash/", Some(GetOptions::new().with_prefix()))
        .await?;
    let now_rev = all.header().unwrap().revision();
    assert!(
        now_rev >= max_acked,
        "revision went back: {now_rev} < {max_acked}"
    );
    let stored: std::collections::HashMap<&[u8], (&[u8], i64)> = all
        .kvs()
        .iter()
        .map(|kv| (kv.key(), (kv.value(), kv.mod_revision())))
        .collect();
    for (key, value, rev) in &acked {
        let got = stored
            .get(key.as_bytes())
            .with_context(|| format!("acknowledged {key} (rev {rev}) is missing"))?;
        assert_eq!(
            (got.0, got.1),
            (value.as_bytes(), *rev),
            "{key} differs after restart"
        );
    }
    // Whatever else survived (written but not yet acknowledged) is whole.
    let mut seen = HashSet::new();
    for kv in all.kvs() {
        assert!(seen.insert(kv.mod_revision()), "duplicate revision");
        assert!(kv.value_str()?.starts_with("value-"));
    }
    eprintln!(
        "{} acknowledged before kill -9, {} present after restart, revision {now_rev}",
        acked.len(),
        all.kvs().len()
    );

    // Revisions carry on from where they were, and watches resume from the
    // next one.
    let mut w = c
        .watch(
            "crash/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(now_rev + 1),
            ),
        )
        .await?;
    let next = c.put("crash/after", "x", None).await?;
    let next_rev = next.header().unwrap().revision();
    assert_eq!(next_rev, now_rev + 1);
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = w.message().await?.context("watch ended")?;
            if let Some(e) = r.events().first() {
                return anyhow::Ok(e.kv().unwrap().mod_revision());
            }
        }
    })
    .await??;
    assert_eq!(got, next_rev);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_survives_kill9_with_ttl_at_most_granted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = EmbeddedChild::start(bin(), dir.path()).await?;
    let mut c = client(&server).await?;
    let lease = c.lease_grant(20, None).await?;
    c.put(
        "owned",
        "by-lease",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await?;
    let short = c.lease_grant(2, None).await?;
    c.put("short", "x", Some(PutOptions::new().with_lease(short.id())))
        .await?;
    server.kill9()?;

    let server = EmbeddedChild::start(bin(), dir.path()).await?;
    let mut c = client(&server).await?;
    let t = c
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(t.granted_ttl(), 20);
    assert!((1..=20).contains(&t.ttl()), "ttl {} after restart", t.ttl());
    assert_eq!(t.keys(), [b"owned".to_vec()]);
    let kv = c.get("owned", None).await?;
    assert_eq!(kv.kvs()[0].lease(), lease.id());

    // The short lease still expires after the restart, taking its key.
    let end = Instant::now() + Duration::from_secs(10);
    while !c.get("short", None).await?.kvs().is_empty() {
        ensure!(
            Instant::now() < end,
            "short lease never expired after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.lease_revoke(lease.id()).await?;
    assert!(c.get("owned", None).await?.kvs().is_empty());
    Ok(())
}

/// The typed watch survives its server dying: it re-watches from the
/// revision after the last one it delivered, so across a `kill -9` and
/// restart every change arrives exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_watch_resumes_across_server_restart() -> Result<()> {
    use drover_store::{Kind, Store, WatchEvent};

    let dir = tempfile::tempdir()?;
    let mut server = EmbeddedChild::start(bin(), dir.path()).await?;
    let addr = server.addr()?;
    let store = Store::connect(&[server.endpoint().to_string()], "/crash/").await?;
    let mut want = Vec::new();
    for i in 0..30 {
        want.push((
            format!("n{}", i % 4),
            store.put(Kind::Node, &format!("n{}", i % 4), &i).await?,
        ));
    }
    let mut rx = store.watch(Kind::Node, want[0].1).await?;
    server.kill9()?;
    let _server = EmbeddedChild::start_on(bin(), dir.path(), Some(addr)).await?;
    // The client reconnects on its own; wait until it has.
    let end = Instant::now() + Duration::from_secs(15);
    while store.list::<i32>(Kind::Node).await.is_err() {
        ensure!(Instant::now() < end, "client never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 30..60 {
        want.push((
            format!("n{}", i % 4),
            store.put(Kind::Node, &format!("n{}", i % 4), &i).await?,
        ));
    }
    let mut got = Vec::new();
    while got.len() < want.len() {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(WatchEvent::Change(c))) => got.push((c.name, c.revision)),
            other => anyhow::bail!("after {} changes: {other:?}", got.len()),
        }
    }
    assert_eq!(got, want, "every change once, in order, across the restart");
    Ok(())
}

/// Puts with [`IN_FLIGHT`] in flight until stopped, recording each
/// acknowledged one.
struct Stream {
    acked: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn start(c: &Client) -> Self {
        let acked: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, s, c) = (Arc::clone(&acked), Arc::clone(&stop), c.clone());
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            let mut tasks = JoinSet::new();
            let mut i = 0u64;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
                let (mut c, acked) = (c.clone(), Arc::clone(&a));
                // Few keys, many revisions: what snapshots compact.
                let key = format!("snap/{:03}", i % 97);
                let value = format!("value-{i}");
                i += 1;
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Ok(r) = c.put(key.as_str(), value.as_str(), None).await {
                        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                        acked.lock().unwrap().push((key, value, rev));
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        });
        Self { acked, stop, task }
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while self.acked.lock().unwrap().len() < n {
            ensure!(
                Instant::now() < deadline,
                "fewer than {n} writes acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn finish(self) -> Result<Vec<Ack>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(20), self.task).await??;
        Ok(std::mem::take(&mut *self.acked.lock().unwrap()))
    }
}

/// Restarts the store on `dir` and checks that each key holds its last
/// acknowledged value (or a later, unacknowledged one) and that the
/// revision did not go back.
async fn check_after_restart(dir: &Path, acked: &[Ack]) -> Result<EmbeddedChild> {
    let server = EmbeddedChild::start(bin(), dir).await?;
    let mut c = client(&server).await?;
    let all = c
        .get("snap/", Some(GetOptions::new().with_prefix()))
        .await?;
    let now_rev = all.header().unwrap().revision();
    let max_acked = acked.iter().map(|a| a.2).max().unwrap_or(0);
    ensure!(
        now_rev >= max_acked,
        "revision went back: {now_rev} < {max_acked}"
    );
    let mut last: std::collections::HashMap<&str, &Ack> = std::collections::HashMap::new();
    for a in acked {
        let e = last.entry(a.0.as_str()).or_insert(a);
        if a.2 > e.2 {
            *e = a;
        }
    }
    for (key, (_, value, rev)) in &last {
        let kv = all
            .kvs()
            .iter()
            .find(|kv| kv.key() == key.as_bytes())
            .with_context(|| format!("acknowledged {key} (rev {rev}) is missing"))?;
        ensure!(
            kv.mod_revision() >= *rev,
            "{key} went back to rev {}",
            kv.mod_revision()
        );
        if kv.mod_revision() == *rev {
            ensure!(kv.value() == value.as_bytes(), "{key} at rev {rev} differs");
        }
    }
    eprintln!(
        "{} acknowledged, {} keys after restart at revision {now_rev}",
        acked.len(),
        all.kvs().len()
    );
    Ok(server)
}

/// The tag byte of the log's first record: 5 is the LogStart a snapshot's
/// log begins with.
fn first_record_tag(dir: &Path) -> Result<u8> {
    let log = std::fs::read(dir.join("store.wal"))?;
    log.get(8).copied().context("store.wal has no record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_frequent_snapshots_loses_no_acknowledged_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let env = [("DROVER_TEST_SNAPSHOT_RECORDS", "50")];
    let mut server = EmbeddedChild::start_with_env(bin(), dir.path(), None, &env).await?;
    let c = client(&server).await?;
    let stream = Stream::start(&c);
    stream.wait_for(3000, Duration::from_secs(60)).await?;
    ensure!(dir.path().join("store.snap").exists(), "no snapshot taken");
    server.kill9()?;
    let acked = stream.finish().await?;
    let server = check_after_restart(dir.path(), &acked).await?;
    // The log was rotated: it holds the tail after a snapshot, not history.
    assert_eq!(first_record_tag(dir.path())?, 5);
    drop(server);
    Ok(())
}

/// The process dies at each step of its first snapshot, with writes in
/// flight; a restart keeps every acknowledged write and applies none twice
/// (a double apply would be refused as a revision gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_each_snapshot_step_loses_no_acknowledged_write() -> Result<()> {
    for (at, log_tag_before_restart) in [("after-snapshot", 1u8), ("after-rotate", 5u8)] {
        let dir = tempfile::tempdir()?;
        let env = [
            ("DROVER_TEST_SNAPSHOT_RECORDS", "300"),
            ("DROVER_TEST_CRASH_AT", at),
        ];
        let mut server = EmbeddedChild::start_with_env(bin(), dir.path(), None, &env).await?;
        let c = client(&server).await?;
        let stream = Stream::start(&c);
        let status = server.wait_exit(Duration::from_secs(60)).await?;
        ensure!(
            !status.success(),
            "{at}: the store exited cleanly: {status}"
        );
        let acked = stream.finish().await?;
        ensure!(!acked.is_empty(), "{at}: nothing acknowledged");
        ensure!(dir.path().join("store.snap").exists(), "{at}: no snapshot");
        // After the snapshot, before the new log: the old log is still in place.
        assert_eq!(
            first_record_tag(dir.path())?,
            log_tag_before_restart,
            "{at}"
        );
        let server = check_after_restart(dir.path(), &acked).await?;
        assert_eq!(first_record_tag(dir.path())?, 5, "{at}: log not restarted");
        drop(server);
    }
    Ok(())
}
