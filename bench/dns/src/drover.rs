//! Drover's side, in this process: the embedded etcd-API store on a
//! loopback port over a temp dir, the DNS watch loop feeding an index
//! from it (as `drover dns --etcd` does), and the DNS server (zone only,
//! as knot serves only its zone) on one UDP socket and one TCP listener of
//! a loopback port. Everything stops on drop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drover_dns::config::ZoneConfig;
use drover_dns::handler::Handler;
use drover_dns::watch::Watch;
use drover_dns::SharedIndex;
use drover_store::embedded::{CancellationToken, EmbeddedEtcd};
use hickory_server::proto::rr::Name;
use tempfile::TempDir;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::zone::{Instance, ZONE};

/// Writes in flight while loading the zone into the store.
const LOAD_IN_FLIGHT: usize = 64;

/// The store, the watch loop and the DNS server.
pub struct Drover {
    /// Where the DNS server answers, UDP and TCP.
    pub addr: SocketAddr,
    /// A client of the store.
    pub etcd: etcd_client::Client,
    /// The index the server answers from.
    pub index: SharedIndex,
    stop: CancellationToken,
    _dir: TempDir,
}

impl Drover {
    /// Starts the store, the watch and the server; waits until the server
    /// answers.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("drover-bench-dns-")
            .tempdir()?;
        let stop = CancellationToken::new();
        let store = EmbeddedEtcd::open(dir.path()).context("opening the embedded store")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let store_addr = listener.local_addr()?;
        tokio::spawn(store.serve(listener, stop.clone()));
        let etcd = etcd_client::Client::connect([format!("http://{store_addr}")], None)
            .await
            .with_context(|| format!("connecting to the embedded store at {store_addr}"))?;
        let index = SharedIndex::default();
        tokio::spawn(Watch::new(etcd.clone(), index.clone()).run(stop.clone()));
        let config = ZoneConfig {
            zone: ZONE.to_owned(),
            zone_only: true,
            ..ZoneConfig::default()
        };
        let handler = Handler::new(config.zone()?, index.clone(), None);
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        tokio::spawn(drover_dns::server::serve(
            handler,
            vec![udp],
            vec![tcp],
            stop.clone(),
        ));
        let zone = Name::from_ascii(format!("{ZONE}."))?;
        Client::new(addr)
            .await?
            .wait_ready(&zone, Duration::from_secs(20))
            .await?;
        Ok(Self {
            addr,
            etcd,
            index,
            stop,
            _dir: dir,
        })
    }

    /// Writes `instances` to the store and waits until the index holds
    /// them all.
    pub async fn load(&self, instances: &[Instance]) -> Result<()> {
        let mut writes = JoinSet::new();
        for instance in instances {
            if writes.len() >= LOAD_IN_FLIGHT {
                writes.join_next().await.context("a write task")???;
            }
            let mut etcd = self.etcd.clone();
            let (key, value) = (instance.key(), instance.value());
            writes.spawn(async move { etcd.put(key, value, None).await.map(drop) });
        }
        while let Some(done) = writes.join_next().await {
            done??;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let want = instances.len();
        loop {
            let have = self.index.read(|i| i.len());
            if have >= want {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the index holds {have} of the {want} endpoints written after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Drover {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A UDP socket and a TCP listener on one loopback port.
async fn bind_pair() -> Result<(UdpSocket, TcpListener)> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        if let Ok(tcp) = TcpListener::bind(udp.local_addr()?).await {
            return Ok((udp, tcp));
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}
