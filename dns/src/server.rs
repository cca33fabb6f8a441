//! The DNS server: UDP loops of our own ([`crate::udp`]: one per worker
//! thread on each socket, each answering in place through
//! [`Handler::answer_bytes`]) and hickory-server's TCP loop around the
//! same [`Handler`], on sockets the caller has already bound, until a
//! cancellation token fires.
//!
//! The caller binds because only it knows where: the agent on its bridge
//! address, `drover dev` on a host port (0 in tests, which then read the
//! bound port), `drover dns` wherever it is told; and a bind that fails is
//! then the caller's error to report with its address. The token, not a
//! handle's drop, stops the server, so that several servers and the watch
//! loop of one process stop together (style habit 8).
//!
//! Before serving, upstreams that are this very server are dropped, since
//! forwarding to them would loop: an upstream equal to a bound address, or
//! a loopback upstream on the port of a socket bound to the unspecified
//! address (the usual `nameserver 127.0.0.1` while we hold `0.0.0.0:53`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::NetError;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::handler::Handler;
use crate::udp::serve_udp;

/// How long a TCP connection may stay idle between queries (RFC 7766
/// recommends seconds, not minutes, for a server's idle timeout).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;

/// Why the server could not run or stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Neither a UDP socket nor a TCP listener was given.
    #[error("the DNS server was given no socket to serve on")]
    NoSocket,
    /// A socket's local address could not be read.
    #[error("reading the local address of a DNS {kind} socket: {source}")]
    LocalAddr {
        /// `udp` or `tcp`.
        kind: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The address could not be bound (taken, or not an address of the
    /// host).
    #[error("cannot listen on {addr} ({kind}) for DNS: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        kind: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// With port 0, no port was free for both UDP and TCP.
    #[error("no port on {ip} is free for both UDP and TCP")]
    NoCommonPort {
        /// The address asked for.
        ip: std::net::IpAddr,
    },
    /// A socket loop ended although no shutdown was asked for.
    #[error("the DNS server stopped on its own: {source}")]
    Stopped {
        /// hickory's error.
        #[source]
        source: NetError,
    },
    /// A UDP loop ended although no shutdown was asked for.
    #[error("the DNS server's UDP loop stopped on its own: {reason}")]
    UdpStopped {
        /// The socket error, or the task's panic.
        reason: String,
    },
}

/// A UDP socket and a TCP listener on the same address; with port 0, on
/// the same free port (tried again when TCP finds it taken).
pub async fn bind_pair(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), ServerError> {
    let failed = |kind, addr, source| ServerError::Bind { addr, kind, source };
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| failed("udp", listen, e))?;
        let addr = udp.local_addr().map_err(|e| failed("udp", listen, e))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(failed("tcp", addr, e)),
        }
    }
    Err(ServerError::NoCommonPort { ip: listen.ip() })
}

/// Serves `handler` on `udp` and `tcp` until `shutdown` is cancelled;
/// then stops accepting, lets the requests in flight finish and returns.
pub async fn serve(
    mut handler: Handler,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if udp.is_empty() && tcp.is_empty() {
        return Err(ServerError::NoSocket);
    }
    let local_addr = |kind| move |source| ServerError::LocalAddr { kind, source };
    let udp_addrs = udp
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .map_err(local_addr("udp"))?;
    let tcp_addrs = tcp
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .map_err(local_addr("tcp"))?;
    drop_self_upstreams(&mut handler, &udp_addrs);
    let upstreams = handler
        .forwarder()
        .map(|f| f.upstreams().to_vec())
        .unwrap_or_default();
    if handler.zone().forwarding && upstreams.is_empty() {
        warn!("no upstream resolver: names outside the zone will get SERVFAIL");
    }
    info!(
        zone = %handler.zone().origin,
        udp = ?udp_addrs,
        tcp = ?tcp_addrs,
        ?upstreams,
        forwarding = handler.zone().forwarding,
        "DNS server serving"
    );
    let loops = std::thread::available_parallelism().map_or(1, usize::from);
    let mut udp_loops = JoinSet::new();
    for socket in udp {
        let socket = Arc::new(socket);
        for _ in 0..loops {
            udp_loops.spawn(serve_udp(handler.clone(), socket.clone(), shutdown.clone()));
        }
    }
    let mut tcp_server = (!tcp.is_empty()).then(|| {
        let mut server = hickory_server::Server::new(handler);
        for listener in tcp {
            server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        }
        server
    });
    let tcp_ended = async {
        match tcp_server.as_mut() {
            Some(server) => server.block_until_done().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        ended = tcp_ended => {
            let source = match ended {
                Ok(()) => NetError::from("every TCP loop ended"),
                Err(e) => e,
            };
            return Err(ServerError::Stopped { source });
        }
        Some(ended) = udp_loops.join_next() => {
            if !shutdown.is_cancelled() {
                let reason = match ended {
                    Ok(Ok(())) => "it returned".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(ServerError::UdpStopped { reason });
            }
        }
    }
    info!("DNS server stopping");
    while udp_loops.join_next().await.is_some() {}
    match tcp_server {
        Some(mut server) => server
            .shutdown_gracefully()
            .await
            .map_err(|source| ServerError::Stopped { source }),
        None => Ok(()),
    }
}

fn drop_self_upstreams(handler: &mut Handler, bound: &[SocketAddr]) {
    let Some(mut forwarder) = handler.forwarder().cloned() else {
        return;
    };
    let is_self = |up: &SocketAddr| {
        bound.iter().any(|b| {
            b == up
                || (b.ip().is_unspecified()
                    && up.ip().is_loopback()
                    && b.port() == up.port()
                    && b.is_ipv4() == up.is_ipv4())
        })
    };
    let dropped = forwarder.remove_upstreams(is_self);
    if !dropped.is_empty() {
        warn!(
            ?dropped,
            "not forwarding to this server's own addresses (a loop)"
        );
        handler.set_forwarder(Some(forwarder));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ZoneConfig;
    use crate::forward::Forwarder;
    use crate::index::SharedIndex;

    fn handler(upstreams: &[&str]) -> Handler {
        let upstreams = upstreams.iter().map(|u| u.parse().unwrap()).collect();
        let forwarder = Forwarder::new(upstreams, Duration::from_secs(1));
        let zone = ZoneConfig::default().zone().unwrap();
        Handler::new(zone, SharedIndex::default(), Some(forwarder))
    }

    #[test]
    fn the_servers_own_addresses_are_not_upstreams() {
        let mut h = handler(&["127.0.0.1:53", "127.0.0.53:53", "10.0.0.2:53", "[::1]:53"]);
        drop_self_upstreams(&mut h, &["0.0.0.0:53".parse().unwrap()]);
        let left: Vec<String> = h
            .forwarder()
            .unwrap()
            .upstreams()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(left, ["10.0.0.2:53", "[::1]:53"]);
        let mut h = handler(&["10.89.0.1:53", "10.89.0.1:5353", "127.0.0.1:53"]);
        drop_self_upstreams(&mut h, &["10.89.0.1:53".parse().unwrap()]);
        assert_eq!(h.forwarder().unwrap().upstreams().len(), 2);
    }

    #[tokio::test]
    async fn port_zero_binds_udp_and_tcp_on_one_port() {
        let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let u = udp.local_addr().unwrap();
        assert_eq!(u, tcp.local_addr().unwrap());
        assert_ne!(u.port(), 0);
        // Taken: the error names the address.
        let err = bind_pair(u).await.unwrap_err();
        assert!(err.to_string().contains(&u.to_string()), "{err}");
    }

    #[tokio::test]
    async fn serving_needs_a_socket() {
        let err = serve(
            handler(&[]),
            Vec::new(),
            Vec::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ServerError::NoSocket), "{err}");
    }
}
