//! Snapshots and log rotation: the core's state survives encoding whole,
//! a power cut after snapshots keeps every acknowledged write, a crash
//! between installing a snapshot and replacing the log applies nothing
//! twice, and a log newer than its snapshot is refused.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::etcd::etcdserverpb::{
    kv_server::Kv, CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};
use drover_proto::etcd::mvccpb::KeyValue;
use tokio::time::Instant;
use tonic::Request;

use super::super::kv::KvService;
use super::super::mvcc::snapshot::lease_keys;
use super::super::mvcc::Store;
use super::super::record::{Mutation, Record};
use super::super::{snapshot, wal, EmbeddedEtcd, StoreOptions};
use super::fake_disk::FakeDisk;

const PATH: &str = "/fake/store.wal";

fn all(s: &Store, rev: i64) -> Vec<KeyValue> {
    let req = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..RangeRequest::default()
    };
    s.range(&req).unwrap().kvs
}

fn put_req(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..PutRequest::default()
    }
}

#[test]
fn snapshot_keeps_keys_revisions_leases_and_recent_history() {
    let now = Instant::now();
    let mut s = Store::new(7);
    let (lease, _, _) = s.lease_grant(0, 30, now).unwrap();
    for i in 0..50 {
        let lease = if i % 10 == 0 { lease } else { 0 };
        s.put(&put_req(&format!("k/{}", i % 7), &format!("v{i}"), lease))
            .unwrap();
    }
    s.delete_range(&DeleteRangeRequest {
        key: b"k/3".to_vec(),
        ..DeleteRangeRequest::default()
    })
    .unwrap();
    s.compact(&CompactionRequest {
        revision: 20,
        physical: false,
    })
    .unwrap();
    let rev = s.revision();

    let back = Store::from_snapshot(&s.encode_snapshot(), now).unwrap();
    assert_eq!(back.revision(), rev);
    assert_eq!(all(&back, 0), all(&s, 0));
    // Older revisions read the same as long as the carried history covers them.
    assert_eq!(all(&back, rev - 10), all(&s, rev - 10));
    assert_eq!(back.compact_revision(), 20);
    assert_eq!(lease_keys(&back), lease_keys(&s));
    assert_eq!(back.lease_info(lease, now).map(|l| l.1), Some(30));
    assert_eq!(back.history_since(rev - 5), s.history_since(rev - 5));
    // A damaged body is refused, not half-loaded.
    let mut body = s.encode_snapshot();
    body.truncate(body.len() - 3);
    assert!(Store::from_snapshot(&body, now).is_err());
}

fn open(disk: &FakeDisk, every: u64) -> EmbeddedEtcd {
    let opts = StoreOptions {
        snapshot_after_records: every,
        ..StoreOptions::default()
    };
    EmbeddedEtcd::with_log(PathBuf::from(PATH), disk.clone(), opts).unwrap()
}

async fn wait_for_installs(disk: &FakeDisk, n: u64) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while disk.snapshot_steps().1 < n {
        assert!(std::time::Instant::now() < end, "no snapshot was taken");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn power_cut_after_snapshots_keeps_every_acknowledged_write() {
    let disk = FakeDisk::default();
    let etcd = open(&disk, 10);
    let kv = KvService::new(Arc::clone(&etcd.shared));
    let mut acked = Vec::new();
    for i in 0..45 {
        let key = format!("k/{}", i % 12);
        let r = kv
            .put(Request::new(put_req(&key, &format!("v{i}"), 0)))
            .await;
        acked.push((
            key,
            format!("v{i}"),
            r.unwrap().into_inner().header.unwrap().revision,
        ));
    }
    // The first after 10 records, later ones once the log also outgrew the
    // snapshot (which carries recent history).
    wait_for_installs(&disk, 2).await;
    let before = all(&etcd.shared.lock(), 0);
    let last = acked.last().unwrap().2;
    let log = disk.power_cut(0);
    // The log holds only what followed the last snapshot.
    let whole: usize = 45
        * wal::frame(
            &Record::Write {
                rev: 10,
                muts: vec![Mutation::Put {
                    key: b"k/10".to_vec(),
                    value: b"v10".to_vec(),
                    lease: 0,
                }],
            }
            .encode(),
        )
        .len();
    assert!(
        log.len() < whole / 2,
        "log of {} bytes after snapshots, {whole} without",
        log.len()
    );
    drop(kv);
    drop(etcd);

    let disk = FakeDisk::with_files(log, disk.snapshot());
    let etcd = open(&disk, 10);
    let s = etcd.shared.lock();
    assert_eq!(s.revision(), last);
    assert_eq!(all(&s, 0), before);
    // A watch resuming a few revisions back still finds them.
    let recent = s.history_since(last - 3).unwrap();
    assert_eq!(
        recent.iter().map(|r| r.rev).collect::<Vec<_>>(),
        (last - 3..=last).collect::<Vec<_>>()
    );
}

/// The log of revisions 2..=n putting `k/<i % 3>`, and the store it makes.
fn history(n: i64) -> (Vec<u8>, Store) {
    let mut s = Store::new(1);
    let mut log = Vec::new();
    for rev in 2..=n {
        let rec = Record::Write {
            rev,
            muts: vec![Mutation::Put {
                key: format!("k/{}", rev % 3).into_bytes(),
                value: format!("v{rev}").into_bytes(),
                lease: 0,
            }],
        };
        log.extend_from_slice(&wal::frame(&rec.encode()));
        s.replay(rec, Instant::now()).unwrap();
    }
    (log, s)
}

#[tokio::test]
async fn crash_between_snapshot_and_new_log_applies_nothing_twice() {
    let (log, s) = history(30);
    let snap = snapshot::encode(1, &s.encode_snapshot());
    // Snapshot generation 1 is in place, the log is still generation 0.
    let disk = FakeDisk::with_files(log.clone(), Some(snap.clone()));
    let etcd = open(&disk, 1000);
    assert_eq!(etcd.shared.lock().revision(), 30);
    assert_eq!(all(&etcd.shared.lock(), 0), all(&s, 0));
    // The covered log was replaced by an empty generation-1 log.
    assert_eq!(
        disk.contents(),
        wal::frame(&Record::LogStart { gen: 1 }.encode())
    );
    drop(etcd);

    // A log that follows a newer snapshot than the one present is refused.
    let ahead = wal::frame(&Record::LogStart { gen: 2 }.encode());
    let disk = FakeDisk::with_files(ahead, Some(snap));
    let err = EmbeddedEtcd::with_log(PathBuf::from(PATH), disk, StoreOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("generation 2") && err.contains(PATH), "{err}");

    // A damaged snapshot is refused naming the file.
    let mut bad = snapshot::encode(1, &s.encode_snapshot());
    let n = bad.len();
    bad[n - 2] ^= 1;
    let disk = FakeDisk::with_files(log, Some(bad));
    let err = EmbeddedEtcd::with_log(PathBuf::from(PATH), disk, StoreOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("/fake/store.snap") && err.contains("CRC"),
        "{err}"
    );
}
