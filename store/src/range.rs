//! Reading a whole key prefix in pages.
//!
//! One range read of a large prefix is capped by the gRPC response size
//! (4 MiB by default on the client: about 10,000 allocation records), so
//! [`range_prefix`] reads at most a page of keys at a time: the first page
//! at the store's current revision, the others at that same revision
//! (`RangeRequest.revision`), each starting just after the last key of the
//! one before. The result is one consistent snapshot, as a single read
//! would have been. A page whose response is still too large is read
//! again at half the size.
//!
//! If the store compacts that revision away between pages (it only keeps
//! history so long), the read starts over at the new current revision.

use etcd_client::{GetOptions, KeyValue, KvClient};

/// Keys per page of a prefix read.
pub const LIST_PAGE: i64 = 1000;

/// How many times a paged read starts over after its revision was
/// compacted away under it.
const RESTARTS: u32 = 3;

/// Every key under `prefix` at one revision, in key order, with that
/// revision; `page` keys per request at most.
pub(crate) async fn range_prefix(
    kv: &mut KvClient,
    prefix: &[u8],
    page: i64,
) -> Result<(Vec<KeyValue>, i64), etcd_client::Error> {
    let mut restarts = 0;
    loop {
        match read_pages(kv, prefix, page.max(1)).await {
            Err(e) if is_compacted(&e) && restarts < RESTARTS => restarts += 1,
            other => return other,
        }
    }
}

async fn read_pages(
    kv: &mut KvClient,
    prefix: &[u8],
    mut page: i64,
) -> Result<(Vec<KeyValue>, i64), etcd_client::Error> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    let mut from = prefix.to_vec();
    let mut revision = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let got = crate::retry::unsent("range", || {
            let (mut kv, from, opts) = (kv.clone(), from.clone(), opts.clone());
            async move { kv.get(from, Some(opts)).await }
        })
        .await;
        let mut resp = match got {
            Ok(r) => r,
            Err(e) if too_large(&e) && page > 1 => {
                page /= 2;
                tracing::debug!(page, "range response too large; reading smaller pages");
                continue;
            }
            Err(e) => return Err(e),
        };
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        let Some(last) = kvs.last() else {
            return Ok((out, revision));
        };
        from = last.key().to_vec();
        from.push(0);
        out.extend(kvs);
        if !more {
            return Ok((out, revision));
        }
    }
}

/// The end of the range of every key starting with `prefix`, as etcd's
/// `WithPrefix` computes it: the prefix with its last byte below 0xff
/// incremented and what follows dropped (`\0`, every key, when there is
/// none).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&b) = end.last() {
        if b < 0xff {
            if let Some(last) = end.last_mut() {
                *last = b + 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

fn status_of(e: &etcd_client::Error) -> Option<&tonic::Status> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        _ => None,
    }
}

/// The response exceeded the client's message size limit.
fn too_large(e: &etcd_client::Error) -> bool {
    status_of(e).is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ) || s.message().contains("message length too large")
    })
}

/// The revision read has been compacted away.
fn is_compacted(e: &etcd_client::Error) -> bool {
    status_of(e).is_some_and(|s| s.message().contains("compacted"))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/drover/allocs/"), b"/drover/allocs0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
