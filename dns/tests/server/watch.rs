//! The watch loop against the embedded etcd-API store: it loads, follows
//! puts and deletes, keeps the last state while the store is down,
//! resumes from its revision after a restart, and reloads after a
//! compaction.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use drover_dns::config::ZoneConfig;
use drover_dns::watch::{Watch, WatchStatus};
use drover_dns::SharedIndex;
use drover_store::embedded::{CancellationToken, EmbeddedError, EmbeddedEtcd};
use etcd_client::Client;
use tokio::task::JoinHandle;

use crate::harness::{init_tracing, poll_until, TestServer, SVC};

/// How long a change may take to reach the index.
const DEADLINE: Duration = Duration::from_secs(15);

/// The embedded store serving a data directory; stopped on drop.
struct Store {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), EmbeddedError>>>,
}

impl Store {
    /// Serves `dir` on `addr` (port 0: any), retrying while a port just
    /// released is still held.
    async fn start(dir: &Path, addr: SocketAddr) -> Result<Self> {
        let etcd = EmbeddedEtcd::open(dir)?;
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(%e, "rebinding the store's port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("binding {addr}: {e}"),
            }
        };
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(etcd.serve(listener, stop.clone()));
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    async fn client(&self) -> Result<Client> {
        Ok(Client::connect([format!("http://{}", self.addr)], None).await?)
    }

    async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await???;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn endpoint(host: &str) -> String {
    format!(r#"{{"host":"{host}","port":8080}}"#)
}

/// The sorted instances of `web`.
fn web(index: &SharedIndex) -> Vec<String> {
    index.read(|i| {
        i.service("web.service.drover.internal.")
            .map(|(id, ep)| format!("{id}={}", ep.host))
            .collect()
    })
}

/// A watch loop on `store`, feeding a fresh index; stopped with `stop`.
async fn start_watch(
    store: &Store,
    stop: &CancellationToken,
) -> Result<(SharedIndex, WatchStatus)> {
    let index = SharedIndex::default();
    let watch = Watch::new(store.client().await?, index.clone())
        .with_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let status = watch.status();
    tokio::spawn(watch.run(stop.clone()));
    Ok((index, status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_the_store() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = Store::start(dir.path(), any_port()).await?;
    let mut c = store.client().await?;
    c.put(format!("{SVC}web/a1"), endpoint("10.89.3.7"), None)
        .await?;
    c.put(format!("{SVC}web/b2"), endpoint("10.89.3.8"), None)
        .await?;
    c.put("/skydns/internal/drover/service/Bad/x", "{}", None)
        .await?;
    c.put("/elsewhere/web/x", endpoint("10.0.0.1"), None)
        .await?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (index, status) = start_watch(&store, &stop).await?;
    poll_until("the first load", DEADLINE, || web(&index).len() == 2).await?;
    assert_eq!(web(&index), ["a1=10.89.3.7", "b2=10.89.3.8"]);

    c.put(format!("{SVC}web/c3"), endpoint("10.89.4.2"), None)
        .await?;
    c.delete(format!("{SVC}web/a1"), None).await?;
    c.put(format!("{SVC}web/b2"), endpoint("10.89.3.9"), None)
        .await?;
    let want = ["b2=10.89.3.9", "c3=10.89.4.2"];
    poll_until("the changes", DEADLINE, || web(&index) == want).await?;
    let revision = c.get("x", None).await?.header().map_or(0, |h| h.revision());
    poll_until("the revision", DEADLINE, || status.revision() == revision).await?;
    assert!(status.is_connected());
    assert_eq!(status.loads(), 1);
    assert_eq!(index.read(|i| i.revision()), revision);

    // The whole path: the server answers what the store says.
    let config = ZoneConfig {
        zone_only: true,
        ..ZoneConfig::default()
    };
    let server = TestServer::start_with(config, Vec::new(), index.clone()).await?;
    let dig = server.dig(&["web.service.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.3.9", "10.89.4.2"]);
    let dig = server.dig(&["drover.internal", "SOA"]).await?;
    assert!(
        dig.answer[0].data.contains(&format!(" {revision} ")),
        "{}",
        dig.text
    );
    stop.cancel();
    store.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_store_resumes_the_watch_and_dns_answers_meanwhile() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = Store::start(dir.path(), any_port()).await?;
    let addr = store.addr;
    let mut c = store.client().await?;
    c.put(format!("{SVC}web/a1"), endpoint("10.89.3.7"), None)
        .await?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (index, status) = start_watch(&store, &stop).await?;
    poll_until("the first load", DEADLINE, || web(&index).len() == 1).await?;
    poll_until("the watch", DEADLINE, || status.is_connected()).await?;
    let config = ZoneConfig {
        zone_only: true,
        ..ZoneConfig::default()
    };
    let server = TestServer::start_with(config, Vec::new(), index.clone()).await?;

    store.stop().await?;
    poll_until("the loop to notice", DEADLINE, || !status.is_connected()).await?;
    let dig = server.dig(&["web.service.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.3.7"], "the last known state");

    let store = Store::start(dir.path(), addr).await?;
    let mut c = store.client().await?;
    c.put(format!("{SVC}web/b2"), endpoint("10.89.3.8"), None)
        .await?;
    poll_until("the change after the restart", DEADLINE, || {
        web(&index).len() == 2
    })
    .await?;
    assert!(status.is_connected());
    assert_eq!(status.loads(), 1, "resumed from its revision, not reloaded");
    let dig = server.dig(&["web.service.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.3.7", "10.89.3.8"]);
    stop.cancel();
    store.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_history_reloads_the_index() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = Store::start(dir.path(), any_port()).await?;
    let addr = store.addr;
    let mut c = store.client().await?;
    c.put(format!("{SVC}web/a1"), endpoint("10.89.3.7"), None)
        .await?;
    c.put(format!("{SVC}web/b2"), endpoint("10.89.3.8"), None)
        .await?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (index, status) = start_watch(&store, &stop).await?;
    poll_until("the first load", DEADLINE, || web(&index).len() == 2).await?;
    store.stop().await?;

    // While the loop cannot see it (another port), the store changes and
    // compacts its history past the loop's revision.
    let aside = Store::start(dir.path(), any_port()).await?;
    let mut c = aside.client().await?;
    c.delete(format!("{SVC}web/a1"), None).await?;
    let put = c
        .put(format!("{SVC}web/c3"), endpoint("10.89.4.2"), None)
        .await?;
    let revision = put.header().map_or(0, |h| h.revision());
    c.compact(revision, None).await?;
    aside.stop().await?;

    let store = Store::start(dir.path(), addr).await?;
    let want = ["b2=10.89.3.8", "c3=10.89.4.2"];
    poll_until("the reload", DEADLINE, || web(&index) == want).await?;
    assert_eq!(status.loads(), 2);
    // And it watches again after the reload.
    let mut c = store.client().await?;
    c.put(format!("{SVC}web/d4"), endpoint("10.89.4.3"), None)
        .await?;
    poll_until("a change after the reload", DEADLINE, || {
        web(&index).len() == 3
    })
    .await?;
    stop.cancel();
    store.stop().await
}
