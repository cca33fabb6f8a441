//! The UDP loops: each receives a datagram, answers it through
//! [`Handler::answer_bytes`] and sends the reply, in one task.
//!
//! hickory's own UDP loop spawns a task per datagram and hands each reply
//! back through a channel to the one task that owns the socket: with a
//! handler that answers from memory in microseconds, that task hopping
//! and the threads waking for it cost more than the answer (a profile
//! under dnsperf showed the workers mostly in the scheduler's context
//! switches). Here several loops share the socket, one per worker thread,
//! and an answer from the zone is sent by the loop that received the
//! question, without a task or a channel.
//!
//! Only a question that must wait (a name forwarded to an upstream) leaves
//! the loop: its future is polled once in place, which sends the upstream
//! query, and, if it is not ready, finishes in a task of its own, so that a
//! slow upstream never holds the loop. On shutdown a loop stops receiving
//! and waits for those tasks.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::handler::Handler;

/// The largest datagram read; longer ones are cut (and then fail to
/// parse), as in hickory's loop.
const MAX_DATAGRAM: usize = 4096;

/// A reply in the making.
type Pending = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// Receives and answers on `socket` until `shutdown`; then waits for the
/// forwarded questions still in flight. Fails only on a socket error that
/// will not go away.
pub(crate) async fn serve_udp(
    handler: Handler,
    socket: Arc<UdpSocket>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut waiting = JoinSet::new();
    let ended = loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = shutdown.cancelled() => break Ok(()),
        };
        while waiting.try_join_next().is_some() {}
        let (len, src) = match received {
            Ok(r) => r,
            Err(e) if is_fatal(&e) => break Err(e),
            Err(e) => {
                debug!(error = %e, "receiving a DNS datagram");
                continue;
            }
        };
        if !answerable(src) {
            debug!(%src, "not answering a datagram from an unusable source");
            continue;
        }
        let handler = handler.clone();
        let raw = buf[..len].to_vec();
        let mut reply: Pending =
            Box::pin(async move { handler.answer_bytes(&raw, Protocol::Udp).await });
        let polled = reply.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        match polled {
            Poll::Ready(Some(bytes)) => send(&socket, &bytes, src).await,
            Poll::Ready(None) => {}
            Poll::Pending => {
                // Polled again by the task, with its own waker: every
                // future re-registers its waker on each poll.
                let socket = socket.clone();
                waiting.spawn(async move {
                    if let Some(bytes) = reply.await {
                        send(&socket, &bytes, src).await;
                    }
                });
            }
        }
    };
    while waiting.join_next().await.is_some() {}
    ended
}

async fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, dst).await {
        warn!(%dst, %error, "sending a DNS response");
    }
}

/// Whether replies can go to `src` (as hickory checks): not port 0, not an
/// unspecified or broadcast address.
fn answerable(src: SocketAddr) -> bool {
    let ip = src.ip();
    let broadcast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    src.port() != 0 && !ip.is_unspecified() && !broadcast
}

/// Errors after which the socket is of no use (as hickory decides).
fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use super::answerable;

    #[test]
    fn unusable_sources_are_not_answered() {
        for (src, ok) in [
            ("127.0.0.1:5353", true),
            ("[::1]:5353", true),
            ("127.0.0.1:0", false),
            ("0.0.0.0:53", false),
            ("[::]:53", false),
            ("255.255.255.255:53", false),
        ] {
            let parsed = src.parse().unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(answerable(parsed), ok, "{src}");
        }
    }
}
