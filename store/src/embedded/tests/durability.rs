//! What the log's fsync buys, tested on a fake disk that keeps only synced
//! bytes across a power cut: no write is acknowledged (or shown to
//! watchers) before the sync covering it completed, a power cut keeps
//! every acknowledged write and replay cuts the torn rest cleanly, and a
//! failed sync fails the write and the log.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::etcd::etcdserverpb::{kv_server::Kv, PutRequest, PutResponse, RangeRequest};
use futures::FutureExt;
use tonic::{Code, Request, Response, Status};

use super::super::kv::KvService;
use super::super::{EmbeddedEtcd, StoreOptions};
use super::fake_disk::FakeDisk;

/// How long the writer thread may take to reach a sync. Only a broken
/// writer (one that never syncs) waits this out.
const WAIT: Duration = Duration::from_secs(10);
const PATH: &str = "/fake/store.wal";

type PutFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<PutResponse>, Status>> + Send + 'a>>;

fn open(disk: &FakeDisk) -> EmbeddedEtcd {
    EmbeddedEtcd::with_log(PathBuf::from(PATH), disk.clone(), StoreOptions::default()).unwrap()
}

fn kv_service(etcd: &EmbeddedEtcd) -> KvService {
    KvService::new(Arc::clone(&etcd.shared))
}

/// A put as the gRPC service runs it; polling it once queues its record.
fn put<'a>(kv: &'a KvService, key: &str, value: &str) -> PutFuture<'a> {
    kv.put(Request::new(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }))
}

/// True if `fut` resolved when polled once; panics if it resolved with an
/// error.
fn acked_now(fut: &mut PutFuture<'_>) -> bool {
    match fut.now_or_never() {
        None => false,
        Some(r) => {
            r.unwrap();
            true
        }
    }
}

/// Every key in the store.
fn keys(etcd: &EmbeddedEtcd) -> Vec<String> {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let resp = etcd.shared.lock().range(&all).unwrap();
    resp.kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect()
}

#[tokio::test]
async fn no_write_is_acknowledged_before_its_sync_completes() {
    let disk = FakeDisk::default();
    let etcd = open(&disk);
    let kv = kv_service(&etcd);
    let mut events = etcd.shared.durable.events.subscribe();
    disk.hold_syncs();
    let mut put = put(&kv, "a", "1");
    assert!(
        !acked_now(&mut put),
        "put acknowledged before the writer ran"
    );
    assert!(
        disk.wait_for_syncs_begun(1, WAIT),
        "the writer never synced the put's record"
    );
    // The writer is inside the sync that covers the put: nothing of the
    // put may be visible to its caller or to watchers yet.
    assert!(
        !acked_now(&mut put),
        "put acknowledged while the sync covering it was still running"
    );
    assert_eq!(
        etcd.handle().revision(),
        1,
        "revision published before its sync"
    );
    assert!(events.try_recv().is_err(), "watchers told before the sync");
    disk.release_syncs();
    let resp = put.await.unwrap().into_inner();
    assert_eq!(resp.header.unwrap().revision, 2);
    assert_eq!((disk.syncs_done(), disk.unsynced_len()), (1, 0));
    assert_eq!(events.try_recv().unwrap().rev, 2);
    assert_eq!(etcd.handle().revision(), 2);
}

#[tokio::test]
async fn writes_queued_during_a_sync_share_the_next_one() {
    let disk = FakeDisk::default();
    let etcd = open(&disk);
    let kv = kv_service(&etcd);
    disk.hold_syncs();
    let mut first = put(&kv, "k/0", "v");
    assert!(
        !acked_now(&mut first),
        "put acknowledged before the writer ran"
    );
    assert!(
        disk.wait_for_syncs_begun(1, WAIT),
        "the writer never synced"
    );
    assert!(!acked_now(&mut first), "put acknowledged during its sync");
    let mut rest: Vec<_> = (1..10).map(|i| put(&kv, &format!("k/{i}"), "v")).collect();
    for p in &mut rest {
        assert!(
            !acked_now(p),
            "put acknowledged during another write's sync"
        );
    }
    disk.release_syncs();
    first.await.unwrap();
    for p in rest {
        p.await.unwrap();
    }
    assert_eq!(
        disk.syncs_done(),
        2,
        "the nine writes queued during the first sync should share one sync (group commit)"
    );
}

/// What a fresh server replaying `image` holds, and its disk afterwards.
fn replay(image: &[u8]) -> (EmbeddedEtcd, FakeDisk) {
    let disk = FakeDisk::with_contents(image.to_vec());
    (open(&disk), disk)
}

#[tokio::test]
async fn power_cut_keeps_every_acknowledged_write_and_cuts_the_torn_rest() {
    let disk = FakeDisk::default();
    let etcd = open(&disk);
    let kv = kv_service(&etcd);
    let mut acked = Vec::new();
    for i in 0..5 {
        let key = format!("k/{i}");
        put(&kv, &key, "v").await.unwrap();
        acked.push(key);
    }
    // Power cut right after the acknowledgements.
    let (now, _) = replay(&disk.synced());
    let have = keys(&now);
    for k in &acked {
        assert!(
            have.contains(k),
            "acknowledged write {k} lost by a power cut"
        );
    }

    // Power cut while the next write's sync runs.
    let begun = disk.syncs_begun();
    disk.hold_syncs();
    let mut last = put(&kv, "k/5", "v");
    // Polling queues the record; a correct writer cannot acknowledge it
    // before the held sync completes, and a power cut is all that follows.
    let mut last_acked = acked_now(&mut last);
    assert!(
        disk.wait_for_syncs_begun(begun + 1, WAIT),
        "the writer never synced"
    );
    last_acked = last_acked || acked_now(&mut last);
    if last_acked {
        acked.push("k/5".into());
    }
    let synced = disk.synced().len();
    let in_flight = disk.unsynced_len();
    assert!(in_flight > 8, "the in-flight record was not written");
    let image = disk.power_cut(in_flight);
    if !last_acked {
        let err = last.await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    // Any prefix of the in-flight record may have reached the platter, and
    // the file's size may have grown past it (the rest reads as zeros).
    let mut tails = vec![(in_flight, 0)];
    for torn in 0..in_flight {
        tails.extend([(torn, 0), (torn, in_flight - torn)]);
    }
    for (torn, zeros) in tails {
        let tail = [&image[synced..synced + torn], &vec![0; zeros][..]].concat();
        let case = format!("{torn} of {in_flight} in-flight bytes kept, then {zeros} zero bytes");
        let (after, replayed) = replay(&[&image[..synced], &tail[..]].concat());
        let have = keys(&after);
        for k in &acked {
            assert!(
                have.contains(k),
                "acknowledged write {k} lost by a power cut ({case})"
            );
        }
        if tail == image[synced..] {
            // The whole record made it (zeros can complete it: its lease
            // field is 0): the write survives, unacknowledged.
            assert!(have.iter().any(|k| k == "k/5"));
            continue;
        }
        assert!(
            !have.iter().any(|k| k == "k/5"),
            "torn record replayed ({case})"
        );
        assert_eq!(
            (replayed.contents().len(), replayed.synced().len()),
            (synced, synced),
            "torn tail not cut durably ({case})"
        );
        // Appends continue where the cut was: the next open sees them.
        put(&kv_service(&after), "after", "v").await.unwrap();
        drop(after);
        let (again, _) = replay(&replayed.synced());
        assert!(keys(&again).iter().any(|k| k == "after"), "{case}");
    }
}

#[tokio::test]
async fn failed_sync_fails_the_write_and_the_log() {
    let disk = FakeDisk::default();
    let etcd = open(&disk);
    let kv = kv_service(&etcd);
    let mut events = etcd.shared.durable.events.subscribe();
    put(&kv, "a", "1").await.unwrap();
    assert_eq!(events.try_recv().unwrap().rev, 2);

    disk.fail_next_sync();
    let err = put(&kv, "b", "2").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(PATH) && err.message().contains("injected EIO"),
        "{err:?}"
    );
    assert!(etcd.shared.durable.failed.load(Ordering::SeqCst));
    assert_eq!(
        etcd.handle().revision(),
        2,
        "a failed write's revision published"
    );
    assert!(
        events.try_recv().is_err(),
        "watchers told of a write whose sync failed"
    );

    // The log no longer matches memory: later writes are refused and
    // nothing more is appended.
    let written = disk.contents().len();
    let err = put(&kv, "c", "3").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("store log failed"), "{err:?}");
    assert_eq!(
        disk.contents().len(),
        written,
        "a failed log was appended to"
    );
}
