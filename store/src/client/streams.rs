//! The long-running halves of [`Store::keep_alive`](super::Store::keep_alive)
//! and [`Store::watch`](super::Store::watch): background loops that outlive
//! one gRPC stream and re-open it after a failure.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::{Change, StoreError, WatchEvent};

pub(super) async fn keep_alive_loop(
    lc: etcd_client::LeaseClient,
    lease: i64,
    period: Duration,
    expired: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut lc = lc.clone();
        let (mut keeper, mut acks) = match lc.keep_alive(lease).await {
            Ok(pair) => pair,
            // etcd answered TTL 0: the lease lapsed while we were cut off.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                tracing::warn!(lease_id = lease, "lease expired or revoked");
                let _ = expired.send(true);
                return;
            }
            Err(error) => {
                tracing::warn!(lease_id = lease, %error, "lease keep-alive stream failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(period);
                continue;
            }
        };
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match acks.message().await {
                Ok(Some(ack)) if ack.ttl() > 0 => backoff = Duration::from_millis(100),
                Ok(Some(_)) => {
                    tracing::warn!(lease_id = lease, "lease expired or revoked");
                    let _ = expired.send(true);
                    return;
                }
                Ok(None) | Err(_) => break,
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Opens a watch on `dir` and waits for etcd to confirm it; returns the
/// stream and the store revision at creation.
pub(super) async fn open_watch(
    client: &Client,
    dir: &str,
    from_revision: i64,
) -> Result<(etcd_client::WatchStream, i64), StoreError> {
    let mut opts = WatchOptions::new().with_prefix();
    if from_revision > 0 {
        opts = opts.with_start_revision(from_revision);
    }
    let err = |source| StoreError::Etcd {
        op: "watch",
        key: dir.to_string(),
        source,
    };
    let mut wc = client.watch_client();
    let mut stream = wc.watch(dir.as_bytes(), Some(opts)).await.map_err(err)?;
    // etcd answers a create with a `created` response first.
    match stream.message().await.map_err(err)? {
        Some(r) if r.created() && !r.canceled() => {
            let at = r.header().map(|h| h.revision()).unwrap_or(0);
            Ok((stream, at))
        }
        Some(r) if r.compact_revision() > 0 => Err(StoreError::Compacted {
            key: dir.to_string(),
            from_revision,
            compact_revision: r.compact_revision(),
        }),
        other => Err(err(etcd_client::Error::WatchError(format!(
            "unexpected first watch response: {other:?}"
        )))),
    }
}

/// Forwards changes, re-watching after a broken stream from the revision
/// after the last one delivered.
pub(super) async fn watch_loop(
    client: Client,
    dir: String,
    mut next: i64,
    mut stream: etcd_client::WatchStream,
    tx: &mpsc::Sender<WatchEvent>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(prefix = %dir, %error, "etcd watch broke; re-watching");
                    break;
                }
            };
            if resp.compact_revision() > 0 {
                let _ = tx
                    .send(WatchEvent::Compacted {
                        compact_revision: resp.compact_revision(),
                    })
                    .await;
                return;
            }
            if resp.canceled() {
                tracing::warn!(prefix = %dir, reason = resp.cancel_reason(), "etcd watch canceled; re-watching");
                break;
            }
            backoff = Duration::from_millis(50);
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                // A re-watch may overlap what was already delivered.
                if kv.mod_revision() < next {
                    continue;
                }
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let name = key.strip_prefix(&dir).unwrap_or(&key).to_string();
                let change = Change {
                    name,
                    value: match ev.event_type() {
                        EventType::Put => Some(kv.value().to_vec()),
                        EventType::Delete => None,
                    },
                    revision: kv.mod_revision(),
                };
                if tx.send(WatchEvent::Change(change)).await.is_err() {
                    return;
                }
            }
            // Every event of a revision comes in one response, so the next
            // one to deliver is past the last revision seen.
            if let Some(last) = resp
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision())
                .max()
            {
                next = next.max(last + 1);
            }
        }
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            match open_watch(&client, &dir, next).await {
                Ok((s, _)) => {
                    stream = s;
                    break;
                }
                Err(StoreError::Compacted {
                    compact_revision, ..
                }) => {
                    let _ = tx.send(WatchEvent::Compacted { compact_revision }).await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(prefix = %dir, %error, "re-watch failed; retrying");
                }
            }
        }
    }
}
