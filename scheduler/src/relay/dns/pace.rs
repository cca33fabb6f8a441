//! How many DNS messages a feed may have queued on its agent's stream.
//!
//! The stream's queue (a bounded channel shared with assignments, peers
//! and the other relays) holds decoded messages, one copy per stream; a
//! feed that filled it with DNS chunks while its agent read slowly would
//! hold up to the queue's length in chunks, per agent. With a pace, a feed
//! queues its next DNS message only once the stream has taken the previous
//! ones ([`IN_FLIGHT`] at most): until then it queues nothing, and when it
//! may, it sends what changed meanwhile, coalesced, or a snapshot.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use drover_proto::v1 as pb;
use futures::Stream;
use tokio::sync::{Semaphore, SemaphorePermit};

/// DNS messages one stream may hold that its sender has not yet taken.
pub const IN_FLIGHT: usize = 2;

/// One stream's DNS pace: permits taken by the feed for each DNS message it
/// queues, given back as the stream takes them.
#[derive(Debug)]
pub struct Pace {
    slots: Semaphore,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            slots: Semaphore::new(IN_FLIGHT),
        }
    }
}

impl Pace {
    /// Waits until the feed may queue one more DNS message.
    pub(crate) async fn slot(&self) -> Slot<'_> {
        // The semaphore is never closed.
        Slot(self.slots.acquire().await.ok())
    }

    /// The stream took one DNS message.
    fn taken(&self) {
        self.slots.add_permits(1);
    }
}

/// Leave to queue one DNS message; dropped unused, it is given back.
#[derive(Debug)]
pub(crate) struct Slot<'a>(Option<SemaphorePermit<'a>>);

impl Slot<'_> {
    /// The message was queued: the slot is freed when the stream takes it.
    pub(crate) fn used(mut self) {
        if let Some(p) = self.0.take() {
            p.forget();
        }
    }
}

/// A stream of scheduler messages that frees a pace slot for every DNS
/// message it yields.
pub struct Paced<S> {
    inner: S,
    pace: Arc<Pace>,
}

impl<S> Paced<S> {
    /// `inner`, reporting the DNS messages it yields to `pace`.
    pub fn new(inner: S, pace: Arc<Pace>) -> Self {
        Paced { inner, pace }
    }

    /// The wrapped stream.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = Result<pb::SchedulerMessage, E>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(m))) = &next {
            if matches!(m.msg, Some(pb::scheduler_message::Msg::DnsUpdate(_))) {
                self.pace.taken();
            }
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
