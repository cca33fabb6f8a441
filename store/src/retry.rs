//! Requests that never left this process, sent again.
//!
//! The etcd client balances requests over every endpoint, but its balancer
//! (tonic's) keeps a member that is down in the rotation: a request it
//! picks that member for fails at connect, although the other members
//! would have answered. Such a request was never sent, so sending it again
//! is safe even for a write or a transaction; [`unsent`] does, a few times,
//! so that one member down has no visible effect. Any other error (a
//! timeout, a lost leader, a refused request) is returned as it is: the
//! request may have been applied.

use std::future::Future;

/// Attempts in all. With one member of three down, each attempt picks it
/// with a probability of at most one in three.
const ATTEMPTS: usize = 8;

/// Whether `e` is a failure to connect, before any byte of the request
/// was sent.
pub(crate) fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect error")
        }
        etcd_client::Error::TransportError(t) => {
            let text = format!("{t:?}");
            text.contains("ConnectError") || text.contains("tcp connect error")
        }
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails otherwise than [`never_sent`], or
/// has been tried [`ATTEMPTS`] times.
pub(crate) async fn unsent<T, F, Fut>(what: &'static str, op: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let started = std::time::Instant::now();
    let result = send(what, op).await;
    crate::metrics::client_request(what, started, result.is_ok());
    result
}

async fn send<T, F, Fut>(what: &'static str, mut op: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if never_sent(&e) && attempt < ATTEMPTS => {
                tracing::debug!(op = what, attempt, error = %e, "etcd member unreachable; trying another");
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn refused() -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::unavailable("tcp connect error"))
    }

    #[tokio::test]
    async fn a_request_that_never_left_is_sent_again_until_it_succeeds() {
        let calls = AtomicUsize::new(0);
        let r = unsent("get", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(refused())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried_and_attempts_are_bounded() {
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = unsent("txn", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                "etcdserver: leader changed",
            )))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = unsent("put", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(refused())
        })
        .await;
        assert!(r.is_err_and(|e| never_sent(&e)));
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }
}
