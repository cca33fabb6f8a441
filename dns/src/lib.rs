//! Drover's DNS server for service discovery.
//!
//! Every allocation of a service is published in the store under the
//! SkyDNS etcd layout (the one CoreDNS's `etcd` plugin reads):
//! `/skydns/internal/drover/service/web/<alloc-id>` holds
//! `{"host":"10.89.3.7","port":8080,"priority":10,"weight":10,"ttl":5}`,
//! so that `web.service.drover.internal.` names every allocation of `web`
//! and `<alloc-id>.web.service.drover.internal.` one of them. Tasks reach
//! the server on their bridge address, which their `/etc/resolv.conf`
//! names, with `service.drover.internal` as the search domain.
//!
//! The modules, from the data to the socket:
//!
//! - [`index`]: the in-memory index of endpoints, fed with the store's put
//!   and delete events, and [`SharedIndex`], the one index the server reads
//!   and the watch loop writes. Pure.
//! - [`config`] and [`resolv`]: the zone's configuration, checked once into
//!   a [`config::Zone`]; the upstreams from the host's resolv.conf.
//! - [`answer`]: what the zone answers to a question. Pure, so that every
//!   record kind and negative answer is tested without a socket.
//! - [`fit`]: cutting an answer to the client's UDP size, with TC.
//! - [`forward`]: names outside the zone, to the upstreams.
//! - [`handler`]: hickory-server's `RequestHandler`, gluing the above.
//! - [`wire`]: the same path on bytes, without a socket
//!   ([`Handler::answer_bytes`](handler::Handler::answer_bytes)), for the
//!   fuzz target in `dns/fuzz` and the tests.
//! - [`server`]: UDP loops of our own (`udp`: the datagram answered in
//!   the task that received it) and hickory's TCP loop, on sockets the
//!   caller bound, until a cancellation token fires.
//! - [`metrics`]: queries by type and rcode, latency, index size.
//! - [`watch`]: the loop keeping the index equal to etcd's `/skydns/`
//!   (load, watch, resume, reload after compaction); thin, as it only
//!   moves events from the store.
//!
//! hickory-server logs every request at `info` (target `hickory_server`);
//! a node's subscriber should filter that target to `warn`.
//!
//! Wiring it (what `drover dns`, the agent and `drover dev` do):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use drover_dns::{config::ZoneConfig, forward::Forwarder, handler::Handler};
//! let config = ZoneConfig::default();
//! let zone = config.zone()?;
//! let (upstreams, _skipped) = config.upstreams()?;
//! let forwarder = Forwarder::new(upstreams, config.forward_timeout());
//! let index = drover_dns::SharedIndex::default();
//! let stop = tokio_util::sync::CancellationToken::new();
//! let etcd = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
//! let watch = drover_dns::watch::Watch::new(etcd, index.clone());
//! tokio::spawn(watch.run(stop.clone()));
//! let handler = Handler::new(zone, index, Some(forwarder));
//! let udp = tokio::net::UdpSocket::bind("127.0.0.1:8600").await?;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8600").await?;
//! drover_dns::server::serve(handler, vec![udp], vec![tcp], stop).await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod answer;
pub mod config;
pub mod fit;
pub mod forward;
pub mod handler;
pub mod index;
pub mod metrics;
pub mod resolv;
pub mod server;
mod udp;
pub mod watch;
pub mod wire;

pub use index::{
    parse_endpoint, parse_key, Endpoint, Event, Index, IndexError, ServiceKey, SharedIndex,
    Transport, PREFIX,
};
