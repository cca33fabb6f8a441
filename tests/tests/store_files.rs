//! The embedded store's files: one server per data directory (a second
//! is refused, naming the directory and the pid holding it), the directory
//! 0700 and its files 0600 even under umask 0, and a backup taken with
//! `etcdctl snapshot save` that `restore` turns back into a store.
//!
//! This binary sets its umask to 0 (process-wide): every test in it checks
//! modes under that umask.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use drover_store::embedded::{
    restore, CancellationToken, EmbeddedError, EmbeddedEtcd, StoreOptions,
};
use drover_tests::etcd::EmbeddedChild;
use etcd_client::{Client, GetOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_embedded_store"))
}

fn permissive_umask() {
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
    unsafe { libc::umask(0) };
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A store served in this process; stopped (and awaited) on `stop`.
struct Served {
    client: Client,
    endpoint: String,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), EmbeddedError>>>,
}

impl Served {
    async fn start(dir: &Path, opts: StoreOptions) -> Result<Self> {
        let etcd = EmbeddedEtcd::open_with(dir, opts)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = Some(tokio::spawn(etcd.serve(listener, stop.clone())));
        let endpoint = format!("http://{addr}");
        let client = Client::connect([endpoint.as_str()], None).await?;
        Ok(Self {
            client,
            endpoint,
            stop,
            task,
        })
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t).await???;
        }
        Ok(())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_server_on_a_directory_is_refused_naming_it_and_the_pid() -> Result<()> {
    permissive_umask();
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");

    // In this process: refused while the first is open, fine once it stopped.
    let first = Served::start(&store, StoreOptions::default()).await?;
    let err = match EmbeddedEtcd::open(&store) {
        Ok(_) => bail!("a second server opened {}", store.display()),
        Err(e) => e.to_string(),
    };
    let pid = std::process::id();
    ensure!(err.contains(&store.display().to_string()), "{err}");
    ensure!(err.contains(&format!("pid {pid}")), "{err}");
    first.stop().await?;
    let again = Served::start(&store, StoreOptions::default()).await?;
    again.stop().await?;

    // Across processes: the second server exits with the message.
    let child = EmbeddedChild::start(bin(), &store).await?;
    let out = Command::new(bin())
        .arg(&store)
        .stdin(Stdio::null())
        .output()
        .context("running a second embedded_store")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "second server started: {stderr}");
    ensure!(stderr.contains(&store.display().to_string()), "{stderr}");
    ensure!(stderr.contains(&format!("pid {}", child.pid())), "{stderr}");
    drop(child);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_is_0700_and_files_0600_even_under_umask_0() -> Result<()> {
    permissive_umask();
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    // As an older build left it: world-readable directory and log.
    std::fs::create_dir(&store)?;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777))?;
    std::fs::write(store.join("store.wal"), b"")?;
    std::fs::set_permissions(
        store.join("store.wal"),
        std::fs::Permissions::from_mode(0o666),
    )?;
    let opts = StoreOptions {
        snapshot_after_records: 20,
        ..StoreOptions::default()
    };
    let mut served = Served::start(&store, opts).await?;
    for i in 0..100 {
        served
            .client
            .put(format!("env/{}", i % 5), "SECRET=1", None)
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.join("store.snap").exists() {
        ensure!(Instant::now() < deadline, "no snapshot after 100 writes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.stop().await?;
    assert_eq!(mode(&store), 0o700, "store directory");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&store)? {
        let e = e?;
        names.push(e.file_name().to_string_lossy().into_owned());
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
    names.sort();
    assert_eq!(names, ["store.lock", "store.snap", "store.wal"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_is_a_backup_that_restore_installs() -> Result<()> {
    permissive_umask();
    let dir = tempfile::tempdir()?;
    let opts = StoreOptions {
        snapshot_after_records: 50,
        ..StoreOptions::default()
    };
    let mut served = Served::start(&dir.path().join("a"), opts).await?;
    let c = &mut served.client;
    let lease = c.lease_grant(60, None).await?.id();
    for i in 0..200 {
        c.put(format!("k/{:02}", i % 40), format!("v{i}"), None)
            .await?;
    }
    c.put(
        "owned",
        "x",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await?;
    let want = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    let backup = dir.path().join("backup.db");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", served.endpoint()))
        .arg("snapshot")
        .arg("save")
        .arg(&backup)
        .output()
        .context("running etcdctl")?;
    ensure!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    served.stop().await?;

    let target = dir.path().join("b");
    let image = std::fs::read(&backup)?;
    let r = restore(&image, &backup, &target)?;
    assert_eq!(r.revision, want.header().unwrap().revision());
    assert_eq!(r.keys, 41);
    // Restoring over a store is refused.
    let err = restore(&image, &backup, &target).unwrap_err().to_string();
    ensure!(err.contains("already holds a store"), "{err}");
    // A damaged backup is refused before anything is written.
    let mut bad = image.clone();
    bad.truncate(bad.len() - 1);
    let fresh = dir.path().join("c");
    ensure!(restore(&bad, &backup, &fresh).is_err());
    ensure!(!fresh.join("store.snap").exists());

    let mut restored = Served::start(&target, StoreOptions::default()).await?;
    let c = &mut restored.client;
    let got = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    let pairs = |r: &etcd_client::GetResponse| {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(&got), pairs(&want));
    assert_eq!(got.header().unwrap().revision(), r.revision);
    // The lease came back with its keys; revisions carry on.
    let ttl = c.lease_time_to_live(lease, None).await?;
    assert_eq!(ttl.granted_ttl(), 60);
    let next = c.put("after", "1", None).await?;
    assert_eq!(next.header().unwrap().revision(), r.revision + 1);
    restored.stop().await?;
    Ok(())
}

/// After a restart from a snapshot, revisions carry on, a watch from a
/// recent revision replays it from the history the snapshot carried, and
/// older revisions answer "compacted" as after an etcd compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_and_watches_carry_on_across_a_snapshot_restart() -> Result<()> {
    use etcd_client::WatchOptions;

    permissive_umask();
    let dir = tempfile::tempdir()?;
    let opts = StoreOptions {
        snapshot_after_records: 200,
        ..StoreOptions::default()
    };
    let mut served = Served::start(dir.path(), opts).await?;
    let mut last = 0;
    // Enough revisions that the last snapshot carries only the newest 1,000.
    for i in 0..3000 {
        let r = served
            .client
            .put(format!("w/{}", i % 5), format!("v{i}"), None)
            .await?;
        last = r.header().unwrap().revision();
    }
    let want = served
        .client
        .get("w/", Some(GetOptions::new().with_prefix()))
        .await?;
    served.stop().await?;
    ensure!(dir.path().join("store.snap").exists(), "no snapshot");

    let mut served = Served::start(dir.path(), StoreOptions::default()).await?;
    let c = &mut served.client;
    let got = c.get("w/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(got.header().unwrap().revision(), last);
    let view = |r: &etcd_client::GetResponse| {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&got), view(&want));

    let from = last - 5;
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = c.watch("w/", Some(opts)).await?;
    let mut revs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while revs.len() < 6 {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .context("watch replay")??
            .context("watch ended")?;
        revs.extend(msg.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    assert_eq!(revs, (from..=last).collect::<Vec<_>>());

    let opts = WatchOptions::new().with_prefix().with_start_revision(2);
    let mut old = c.watch("w/", Some(opts)).await?;
    let compacted = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), old.message())
            .await
            .context("compacted watch")??
            .context("watch ended")?;
        if msg.compact_revision() > 0 {
            break msg.compact_revision();
        }
        ensure!(
            msg.events().is_empty(),
            "revision 2 was replayed after the restart"
        );
    };
    ensure!(
        compacted > 2 && compacted <= last,
        "compact revision {compacted}"
    );
    let err = c
        .get("w/0", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err()
        .to_string();
    ensure!(err.contains("compacted"), "{err}");
    let next = c.put("w/after", "1", None).await?;
    assert_eq!(next.header().unwrap().revision(), last + 1);
    served.stop().await
}
