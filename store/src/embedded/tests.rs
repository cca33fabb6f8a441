//! Unit tests for the MVCC core and the log format; what the log's
//! fsync guarantees is tested in `durability`, on a fake disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod durability;
mod fake_disk;
mod snapshots;

use drover_proto::etcd::etcdserverpb::{
    compare, range_request, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use tokio::time::{Duration, Instant};

use super::mvcc::{Store, StoreError, HISTORY_BYTES, HISTORY_LIMIT, MAX_TXN_OPS};
use super::record::{Mutation, Record};
use super::wal;

fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        })),
    }
}

fn put(s: &mut Store, k: &str, v: &str) -> i64 {
    s.put(&PutRequest {
        key: k.into(),
        value: v.into(),
        ..PutRequest::default()
    })
    .unwrap();
    s.revision()
}

fn get(s: &Store, k: &str, end: &[u8], rev: i64) -> Vec<(String, String)> {
    s.range(&RangeRequest {
        key: k.into(),
        range_end: end.to_vec(),
        revision: rev,
        ..RangeRequest::default()
    })
    .unwrap()
    .kvs
    .into_iter()
    .map(|kv| {
        (
            String::from_utf8(kv.key).unwrap(),
            String::from_utf8(kv.value).unwrap(),
        )
    })
    .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn revisions_versions_and_deletes() {
    let mut s = Store::new(1);
    assert_eq!(s.revision(), 1);
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "a", "2"), 3);
    let kv = &s
        .range(&RangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap()
        .kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let del = s
        .delete_range(&DeleteRangeRequest {
            key: "a".into(),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(del.out.deleted, 1);
    assert_eq!(del.out.prev_kvs[0].value, b"2");
    assert_eq!(s.revision(), 4);
    // Deleting nothing writes no revision.
    let none = s
        .delete_range(&DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(none.record.is_none());
    assert_eq!(s.revision(), 4);
    put(&mut s, "a", "3");
    let kv = &s
        .range(&RangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap()
        .kvs[0];
    assert_eq!((kv.create_revision, kv.version), (5, 1));
}

#[test]
fn range_end_semantics_limit_sort() {
    let mut s = Store::new(1);
    for k in ["a", "b", "b/1", "b/2", "c"] {
        put(&mut s, k, k);
    }
    assert_eq!(get(&s, "b", b"", 0), pairs(&[("b", "b")]));
    assert_eq!(
        get(&s, "b/", b"b0", 0),
        pairs(&[("b/1", "b/1"), ("b/2", "b/2")])
    );
    assert_eq!(get(&s, "b", b"\0", 0).len(), 4);
    assert_eq!(get(&s, "\0", b"\0", 0).len(), 5);
    assert!(get(&s, "c", b"a", 0).is_empty());
    let r = s
        .range(&RangeRequest {
            key: "a".into(),
            range_end: b"\0".to_vec(),
            limit: 2,
            sort_order: range_request::SortOrder::Descend as i32,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.count, r.more, r.kvs.len()), (5, true, 2));
    assert_eq!(r.kvs[0].key, b"c");
    let r = s
        .range(&RangeRequest {
            key: "a".into(),
            range_end: b"\0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.count, r.kvs.len()), (5, 0));
}

#[test]
fn historical_reads_and_compaction() {
    let mut s = Store::new(1);
    put(&mut s, "k", "v1"); // 2
    put(&mut s, "k", "v2"); // 3
    s.delete_range(&DeleteRangeRequest {
        key: "k".into(),
        ..Default::default()
    })
    .unwrap(); // 4
    put(&mut s, "j", "x"); // 5
    assert_eq!(get(&s, "k", b"", 2), pairs(&[("k", "v1")]));
    assert_eq!(get(&s, "k", b"", 3), pairs(&[("k", "v2")]));
    assert!(get(&s, "k", b"", 4).is_empty());
    assert!(get(&s, "j", b"", 4).is_empty());
    let fut = s.range(&RangeRequest {
        key: "k".into(),
        revision: 99,
        ..Default::default()
    });
    assert_eq!(fut.unwrap_err(), StoreError::FutureRevision);
    s.compact(&CompactionRequest {
        revision: 3,
        physical: false,
    })
    .unwrap();
    assert_eq!(get(&s, "k", b"", 3), pairs(&[("k", "v2")]));
    let old = s.range(&RangeRequest {
        key: "k".into(),
        revision: 2,
        ..Default::default()
    });
    assert_eq!(old.unwrap_err(), StoreError::Compacted);
    assert_eq!(s.history_since(2).unwrap_err(), 3);
    assert_eq!(s.history_since(3).unwrap().len(), 3);
    assert_eq!(
        s.compact(&CompactionRequest {
            revision: 3,
            physical: false
        })
        .unwrap_err(),
        StoreError::Compacted
    );
}

#[test]
fn history_is_bounded() {
    let mut s = Store::new(1);
    for i in 0..HISTORY_LIMIT + 10 {
        put(&mut s, "k", &i.to_string());
    }
    assert_eq!(s.compact_revision(), 12);
    assert!(s.history_since(11).is_err());
    assert_eq!(s.history_since(12).unwrap().len(), HISTORY_LIMIT);
}

#[test]
fn history_is_bounded_by_bytes() {
    let mut s = Store::new(1);
    let big = "x".repeat(1 << 20);
    let n = HISTORY_BYTES / (1 << 20) + 8;
    for _ in 0..n {
        put(&mut s, "k", &big);
    }
    // Each revision holds the value twice (kv and prev_kv).
    assert!(s.compact_revision() > (n / 2) as i64);
    assert!(s.history_since(s.compact_revision()).is_ok());
    assert_eq!(get(&s, "k", b"", 0)[0].1.len(), 1 << 20);
}

fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    u: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(u),
        range_end: Vec::new(),
    }
}

#[test]
fn txn_compares_and_one_revision() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let mut s = Store::new(1);
    put(&mut s, "a", "1"); // 2
    let txn = |c: Vec<Compare>| TxnRequest {
        compare: c,
        success: vec![put_op(b"x", b"yes"), put_op(b"y", b"yes")],
        failure: vec![put_op(b"x", b"no")],
    };
    let cases = [
        (cmp("a", T::Value, R::Equal, U::Value("1".into())), true),
        (cmp("a", T::Value, R::Greater, U::Value("0".into())), true),
        (cmp("a", T::Version, R::Equal, U::Version(1)), true),
        (cmp("a", T::Create, R::Less, U::CreateRevision(2)), false),
        (cmp("a", T::Mod, R::NotEqual, U::ModRevision(2)), false),
        (cmp("a", T::Lease, R::Equal, U::Lease(0)), true),
        (cmp("missing", T::Version, R::Equal, U::Version(0)), true),
        (
            cmp("missing", T::Create, R::Equal, U::CreateRevision(0)),
            true,
        ),
        (
            cmp("missing", T::Value, R::Equal, U::Value(Vec::new())),
            false,
        ),
    ];
    for (c, want) in cases {
        let before = s.revision();
        let r = s.txn(&txn(vec![c.clone()])).unwrap();
        assert_eq!(r.out.succeeded, want, "{c:?}");
        assert_eq!(s.revision(), before + 1);
    }
    let kv = &s
        .range(&RangeRequest {
            key: "y".into(),
            ..Default::default()
        })
        .unwrap()
        .kvs[0];
    let x = &s
        .range(&RangeRequest {
            key: "x".into(),
            ..Default::default()
        })
        .unwrap()
        .kvs[0];
    assert_eq!(x.mod_revision, s.revision());
    assert!(kv.mod_revision <= x.mod_revision);
    // Read-only txn writes no revision.
    let before = s.revision();
    let ro = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: "a".into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    assert!(s.txn(&ro).unwrap().record.is_none());
    assert_eq!(s.revision(), before);
}

#[test]
fn txn_validation_is_all_or_nothing() {
    let mut s = Store::new(1);
    let bad_lease = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: "b".into(),
            lease: 42,
            ..Default::default()
        })),
    };
    let req = TxnRequest {
        compare: vec![],
        success: vec![put_op(b"a", b"1"), bad_lease],
        failure: vec![],
    };
    assert_eq!(s.txn(&req).unwrap_err(), StoreError::LeaseNotFound);
    assert_eq!(s.len(), 0);
    assert_eq!(s.revision(), 1);
    let many = TxnRequest {
        compare: vec![],
        success: vec![put_op(b"a", b"1"); MAX_TXN_OPS + 1],
        failure: vec![],
    };
    assert_eq!(s.txn(&many).unwrap_err(), StoreError::TooManyOps);
    let many_compares = TxnRequest {
        compare: vec![Compare::default(); MAX_TXN_OPS + 1],
        success: vec![put_op(b"a", b"1")],
        failure: vec![],
    };
    assert_eq!(s.txn(&many_compares).unwrap_err(), StoreError::TooManyOps);
    let nested = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                compare: vec![],
                success: vec![put_op(b"n", b"1")],
                failure: vec![],
            })),
        }],
        failure: vec![],
    };
    assert!(s.txn(&nested).unwrap().out.succeeded);
    assert_eq!(get(&s, "n", b"", 0), pairs(&[("n", "1")]));
}

#[test]
fn lease_attach_expire_and_revoke() {
    let mut s = Store::new(100);
    let t0 = Instant::now();
    let (id, ttl, _) = s.lease_grant(0, 5, t0).unwrap();
    assert_eq!((id, ttl), (100, 5));
    assert_eq!(
        s.lease_grant(100, 5, t0).unwrap_err(),
        StoreError::LeaseExists
    );
    let missing = PutRequest {
        key: "k".into(),
        lease: 7,
        ..Default::default()
    };
    assert_eq!(s.put(&missing).unwrap_err(), StoreError::LeaseNotFound);
    s.put(&PutRequest {
        key: "k".into(),
        value: "v".into(),
        lease: id,
        ..Default::default()
    })
    .unwrap();
    s.put(&PutRequest {
        key: "k2".into(),
        lease: id,
        ..Default::default()
    })
    .unwrap();
    assert!(s.expired_leases(t0 + Duration::from_secs(4)).is_empty());
    assert_eq!(s.lease_keep_alive(id, t0 + Duration::from_secs(4)), Some(5));
    assert!(s.expired_leases(t0 + Duration::from_secs(8)).is_empty());
    let (left, granted, keys) = s.lease_info(id, t0 + Duration::from_secs(6)).unwrap();
    assert_eq!((left, granted, keys.len()), (3, 5, 2));
    assert_eq!(s.expired_leases(t0 + Duration::from_secs(9)), vec![id]);
    let rev = s.revision();
    let applied = s.lease_revoke(id).unwrap();
    assert_eq!(applied.published.unwrap().events.len(), 2);
    assert_eq!(s.revision(), rev + 1);
    assert_eq!(s.len(), 0);
    assert_eq!(s.lease_revoke(id).unwrap_err(), StoreError::LeaseNotFound);
}

#[test]
fn records_round_trip_and_replay_rebuilds_state() {
    let recs = vec![
        Record::LeaseGrant { id: 9, ttl: 30 },
        Record::Write {
            rev: 2,
            muts: vec![Mutation::Put {
                key: b"a".to_vec(),
                value: vec![0, 1],
                lease: 9,
            }],
        },
        Record::Write {
            rev: 3,
            muts: vec![Mutation::Put {
                key: b"b".to_vec(),
                value: vec![],
                lease: 0,
            }],
        },
        Record::LeaseRevoke {
            id: 9,
            rev: 4,
            muts: vec![Mutation::Delete { key: b"a".to_vec() }],
        },
        Record::Compact { rev: 3 },
    ];
    let mut s = Store::new(1);
    for r in &recs {
        assert_eq!(&Record::decode(&r.encode()).unwrap(), r);
        s.replay(r.clone(), Instant::now()).unwrap();
    }
    assert_eq!(s.revision(), 4);
    assert_eq!(s.compact_revision(), 3);
    assert_eq!(get(&s, "\0", b"\0", 0), pairs(&[("b", "")]));
    assert!(s.lease_ids().is_empty());
    assert!(Record::decode(&[1, 0]).is_err());
    let gap = Record::Write {
        rev: 9,
        muts: vec![Mutation::Delete { key: b"b".to_vec() }],
    };
    assert!(s.replay(gap, Instant::now()).is_err());
}

#[test]
fn replay_truncates_torn_tail_and_refuses_mid_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.wal");
    let a = wal::frame(&Record::LeaseGrant { id: 1, ttl: 5 }.encode());
    let b = wal::frame(&Record::LeaseGrant { id: 2, ttl: 5 }.encode());
    let mut bytes = [a.clone(), b.clone()].concat();
    bytes.extend_from_slice(&b[..5]);
    std::fs::write(&path, &bytes).unwrap();
    let mut n = 0;
    let len = wal::replay(&mut wal::open(dir.path()).unwrap(), &path, |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!((n, len as usize), (2, a.len() + b.len()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        a.len() + b.len()
    );

    let mut bad = [a.clone(), b.clone(), a.clone()].concat();
    bad[a.len() + 9] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let err = wal::replay(&mut wal::open(dir.path()).unwrap(), &path, |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("offset {}", a.len())), "{err}");
    assert!(err.contains("store.wal"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bad);
}

#[test]
fn log_errors_name_what_is_wrong() {
    let decode = |b: &[u8]| Record::decode(b).unwrap_err().to_string();
    assert_eq!(decode(&[9]), "unknown record tag 9");
    assert_eq!(decode(&[1, 0]), "truncated field at payload byte 1");
    let mut extra = Record::Compact { rev: 1 }.encode();
    extra.push(0);
    assert_eq!(decode(&extra), "1 trailing bytes");
    let mut bad_mut = vec![1];
    bad_mut.extend_from_slice(&2i64.to_le_bytes());
    bad_mut.extend_from_slice(&1u32.to_le_bytes());
    bad_mut.push(7);
    assert_eq!(decode(&bad_mut), "unknown mutation tag 7");

    let revoke = Record::LeaseRevoke {
        id: 5,
        rev: 0,
        muts: vec![],
    };
    let err = Store::new(1).replay(revoke, Instant::now()).unwrap_err();
    assert_eq!(err.to_string(), "revoke of unknown lease 5");

    // A record that is intact but undecodable, then one that does not
    // apply: the message names the file, offset and reason, and keeps the
    // reason as its source.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.wal");
    let good = wal::frame(&Record::LeaseGrant { id: 1, ttl: 5 }.encode());
    for (second, reason) in [
        (wal::frame(&[9]), "undecodable record: unknown record tag 9"),
        (good.clone(), "record does not apply: lease 1 granted twice"),
    ] {
        std::fs::write(&path, [good.clone(), second].concat()).unwrap();
        let mut s = Store::new(1);
        let err = wal::replay(&mut wal::open(dir.path()).unwrap(), &path, |rec| {
            s.replay(rec, Instant::now())
        })
        .unwrap_err();
        let expected = format!(
            "store log {} is corrupt at byte offset {}: {reason}",
            path.display(),
            good.len()
        );
        assert_eq!(err.to_string(), expected);
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }
}
