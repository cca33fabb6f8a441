//! Forwarding names outside the zone to the upstream resolvers.
//!
//! Each question goes to the upstreams in order, over UDP from a socket of
//! its own (a fresh random source port, with a random ID: what an
//! off-path attacker would have to guess), and a reply counts only if it
//! comes from that upstream, answers that ID and repeats the question;
//! anything else on the socket is ignored until the upstream's time is
//! up. A truncated UDP reply is asked again over TCP. An upstream that
//! does not answer in time, refuses the port (ICMP: at once), answers
//! garbage, SERVFAIL, REFUSED or NOTIMP is skipped for the next one; when
//! none is left the caller answers SERVFAIL. So a client waits at most
//! `timeout` per upstream.
//!
//! There is no cache: upstreams are the host's resolvers, which cache, and
//! a second cache here would only be one more place for a stale answer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::serialize::binary::DecodeError;
use hickory_server::proto::ProtoError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// The EDNS0 payload size advertised to upstreams: DNS Flag Day 2020's
/// value, as upstreams may be across a real network.
const UPSTREAM_PAYLOAD: u16 = 1232;

/// The largest UDP datagram read from an upstream.
const RECV_BUF: usize = 65535;

/// Why one upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream is configured.
    #[error("no upstream resolver is configured")]
    NoUpstream,
    /// The upstream did not answer in time.
    #[error("upstream {upstream}: no answer within {timeout:?}")]
    Timeout {
        /// The upstream.
        upstream: SocketAddr,
        /// Its time.
        timeout: Duration,
    },
    /// A socket operation failed.
    #[error("upstream {upstream}: {op}: {source}")]
    Io {
        /// The upstream.
        upstream: SocketAddr,
        /// What was being done (`udp send`, `tcp connect`, ...).
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The question could not be encoded.
    #[error("upstream {upstream}: {source}")]
    Proto {
        /// The upstream.
        upstream: SocketAddr,
        /// The error.
        #[source]
        source: ProtoError,
    },
    /// A TCP reply could not be decoded.
    #[error("upstream {upstream}: undecodable TCP reply: {source}")]
    Decode {
        /// The upstream.
        upstream: SocketAddr,
        /// The error.
        #[source]
        source: DecodeError,
    },
    /// A TCP reply answered another query.
    #[error("upstream {upstream}: the TCP reply does not answer the query")]
    Mismatch {
        /// The upstream.
        upstream: SocketAddr,
    },
    /// The upstream answered with an error code worth trying elsewhere.
    #[error("upstream {upstream} answered {rcode}")]
    Failed {
        /// The upstream.
        upstream: SocketAddr,
        /// SERVFAIL, REFUSED or NOTIMP.
        rcode: ResponseCode,
    },
    /// Every upstream failed; each one's error, in order.
    #[error("every upstream failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<ForwardError>),
}

/// The upstream resolvers and how long each may take.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

/// The header bits of the client's question that travel upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryFlags {
    /// RD: the client wants recursion.
    pub recursion_desired: bool,
    /// CD: the client validates DNSSEC itself.
    pub checking_disabled: bool,
}

impl Forwarder {
    /// Forwards to `upstreams`, in order, each given `timeout`.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { upstreams, timeout }
    }

    /// The upstreams, in the order they are tried.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Drops the upstreams for which `is_self` holds (the server's own
    /// addresses: forwarding there would loop); returns the dropped ones.
    pub fn remove_upstreams(&mut self, is_self: impl Fn(&SocketAddr) -> bool) -> Vec<SocketAddr> {
        let (dropped, kept) = self.upstreams.iter().partition(|u| is_self(u));
        self.upstreams = kept;
        dropped
    }

    /// Asks the upstreams `query`; the first usable reply wins.
    pub async fn forward(&self, query: &Query, flags: QueryFlags) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let mut errors = Vec::new();
        for &upstream in &self.upstreams {
            match self.ask(upstream, query, flags).await {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed, trying the next");
                    errors.push(e);
                }
            }
        }
        Err(ForwardError::AllFailed(errors))
    }

    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &Query,
        flags: QueryFlags,
    ) -> Result<Message, ForwardError> {
        let deadline = Instant::now() + self.timeout;
        let timed_out = || ForwardError::Timeout {
            upstream,
            timeout: self.timeout,
        };
        let id: u16 = rand::random();
        let request = encode(upstream, id, query, flags)?;
        let reply = timeout_at(deadline, ask_udp(upstream, &request, id, query))
            .await
            .map_err(|_| timed_out())??;
        let reply = if reply.metadata.truncation {
            timeout_at(deadline, ask_tcp(upstream, &request, id, query))
                .await
                .map_err(|_| timed_out())??
        } else {
            reply
        };
        match reply.metadata.response_code {
            rcode @ (ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp) => {
                Err(ForwardError::Failed { upstream, rcode })
            }
            _ => Ok(reply),
        }
    }
}

fn encode(
    upstream: SocketAddr,
    id: u16,
    query: &Query,
    flags: QueryFlags,
) -> Result<Vec<u8>, ForwardError> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = flags.recursion_desired;
    message.metadata.checking_disabled = flags.checking_disabled;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    message.set_edns(edns);
    message
        .to_vec()
        .map_err(|source| ForwardError::Proto { upstream, source })
}

/// Whether `reply` answers our question: a response with our ID that
/// repeats the question.
fn answers(reply: &Message, id: u16, query: &Query) -> bool {
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && reply.queries[0].name().eq_ignore_root(query.name())
        && reply.queries[0].query_type() == query.query_type()
        && reply.queries[0].query_class() == query.query_class()
}

/// Maps an I/O error of `op` with `upstream` to [`ForwardError::Io`].
fn io_err(upstream: SocketAddr, op: &'static str) -> impl FnOnce(std::io::Error) -> ForwardError {
    move |source| ForwardError::Io {
        upstream,
        op,
        source,
    }
}

async fn ask_udp(
    upstream: SocketAddr,
    request: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ForwardError> {
    let io = |op| io_err(upstream, op);
    let any: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await.map_err(io("udp bind"))?;
    // Connected: the kernel drops datagrams from anyone else, and a
    // closed port comes back as an error at once.
    socket.connect(upstream).await.map_err(io("udp connect"))?;
    socket.send(request).await.map_err(io("udp send"))?;
    let mut buf = vec![0; RECV_BUF];
    loop {
        let len = socket.recv(&mut buf).await.map_err(io("udp receive"))?;
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        match Message::from_vec(datagram) {
            Ok(reply) if answers(&reply, id, query) => return Ok(reply),
            Ok(_) => tracing::debug!(%upstream, "ignoring a reply that does not answer our query"),
            Err(error) => tracing::debug!(%upstream, %error, "ignoring an undecodable reply"),
        }
    }
}

async fn ask_tcp(
    upstream: SocketAddr,
    request: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ForwardError> {
    let io = |op| io_err(upstream, op);
    let mut stream = TcpStream::connect(upstream)
        .await
        .map_err(io("tcp connect"))?;
    let len = u16::try_from(request.len()).map_err(|_| ForwardError::Io {
        upstream,
        op: "tcp send",
        source: io::Error::new(io::ErrorKind::InvalidInput, "query over 65535 bytes"),
    })?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await.map_err(io("tcp send"))?;
    let len = stream.read_u16().await.map_err(io("tcp receive"))?;
    let mut buf = vec![0; usize::from(len)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(io("tcp receive"))?;
    let reply =
        Message::from_vec(&buf).map_err(|source| ForwardError::Decode { upstream, source })?;
    if answers(&reply, id, query) {
        Ok(reply)
    } else {
        Err(ForwardError::Mismatch { upstream })
    }
}
