//! A scheduler served in the test process on an embedded store, both on
//! loopback ports: for tests that drive the agent stream by hand or with
//! simulated agents ([`crate::sim`]). Stopped when dropped.

use drover_scheduler::{Core, Timing};
use drover_store::embedded::EmbeddedEtcd;
use drover_store::Store;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// An embedded store and a scheduler on loopback ports, stopped on drop.
pub struct Scheduler {
    _dir: tempfile::TempDir,
    /// The scheduler's `http://` URL.
    pub url: String,
    stop: CancellationToken,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Scheduler {
    /// Starts the store and a scheduler with `timing` on it.
    ///
    /// # Panics
    ///
    /// When a temp dir, a port or the store cannot be had (a test harness).
    pub async fn start(timing: Timing) -> Scheduler {
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let etcd = EmbeddedEtcd::open(dir.path()).expect("embedded store");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let store_addr = l.local_addr().expect("bound address");
        tokio::spawn(etcd.serve(l, stop.clone()));
        let store = Store::connect(&[format!("http://{store_addr}")], "/drover/")
            .await
            .expect("connecting to the embedded store");
        let core = Core::new(store, timing);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", l.local_addr().expect("bound address"));
        tokio::spawn(drover_scheduler::serve(core, l, stop.clone(), None));
        Scheduler {
            _dir: dir,
            url,
            stop,
        }
    }

    /// A channel to the scheduler.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone())
            .expect("a valid URL")
            .connect()
            .await
            .expect("connecting to the scheduler")
    }
}
