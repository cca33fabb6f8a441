//! Conformance cases for Drover's own layers over etcd: the typed store
//! ([`drover_store::Store`]) and the leader election. Run against both
//! servers by the runner in `store_conformance.rs`.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use drover_store::election::Election;
use drover_store::{Committed, Guard, Kind, RawOp, Store, StoreError, WatchEvent, Write};
use tokio::time::Instant;

use super::client;

// ------------------------------------------------------ typed layer

const PREFIX: &str = "/conformance/";

pub(crate) async fn typed_guarded_commit_conflict(ep: &[String]) -> Result<()> {
    let store = Store::connect(ep, PREFIX).await?;
    let enc = |v: &str| serde_json::to_vec(&v).unwrap();
    // Create-if-absent: guard mod_revision 0.
    let create = Guard {
        kind: Kind::Job,
        name: "web".into(),
        mod_revision: 0,
    };
    let put = |v: &str| Write::Put {
        kind: Kind::Job,
        name: "web".into(),
        value: enc(v),
    };
    let first = store
        .commit(std::slice::from_ref(&create), &[put("v1")])
        .await?;
    let Committed::Yes(rev1) = first else {
        bail!("create failed: {first:?}")
    };
    assert_eq!(
        store.commit(&[create], &[put("v1b")]).await?,
        Committed::Conflict,
        "second create must lose"
    );
    let read = store.get::<String>(Kind::Job, "web").await?.unwrap();
    assert_eq!((read.value.as_str(), read.mod_revision), ("v1", rev1));

    // Two writers read the same revision; exactly one wins.
    let guard = Guard {
        kind: Kind::Job,
        name: "web".into(),
        mod_revision: read.mod_revision,
    };
    let (wa, wb) = ([put("a")], [put("b")]);
    let (a, b) = tokio::join!(
        store.commit(std::slice::from_ref(&guard), &wa),
        store.commit(std::slice::from_ref(&guard), &wb),
    );
    let (a, b) = (a?, b?);
    let wins = [a, b]
        .iter()
        .filter(|c| matches!(c, Committed::Yes(_)))
        .count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    let now = store.get::<String>(Kind::Job, "web").await?.unwrap();
    let winner = if matches!(a, Committed::Yes(_)) {
        "a"
    } else {
        "b"
    };
    assert_eq!(now.value, winner);

    // A guarded multi-key write is all or nothing.
    let r = store
        .commit(
            &[guard],
            &[
                Write::Put {
                    kind: Kind::Alloc,
                    name: "x".into(),
                    value: enc("x"),
                },
                Write::Delete {
                    kind: Kind::Job,
                    name: "web".into(),
                },
            ],
        )
        .await?;
    assert_eq!(r, Committed::Conflict);
    assert!(store.get::<String>(Kind::Alloc, "x").await?.is_none());
    assert!(store.get::<String>(Kind::Job, "web").await?.is_some());
    Ok(())
}

pub(crate) async fn typed_watch_from_revision_exactly_once(ep: &[String]) -> Result<()> {
    let store = Store::connect(ep, PREFIX).await?;
    let mut expected: Vec<(String, Option<String>, i64)> = Vec::new();
    for i in 0..20 {
        let name = format!("n{}", i % 7);
        let v = format!("v{i}");
        let rev = store.put(Kind::Node, &name, &v).await?;
        expected.push((name, Some(v), rev));
        // Other kinds must not leak into a Node watch.
        store.put(Kind::Job, &format!("j{i}"), &i).await?;
    }
    let listing = store.list::<String>(Kind::Node).await?;
    assert_eq!(listing.items.len(), 7);
    let from = expected[5].2;
    let mut rx = store.watch(Kind::Node, from).await?;
    // Live changes while the replay is being delivered.
    for i in 20..40 {
        let name = format!("n{}", i % 7);
        if i % 5 == 0 {
            let r = store
                .commit(
                    &[],
                    &[Write::Delete {
                        kind: Kind::Node,
                        name: name.clone(),
                    }],
                )
                .await?;
            let Committed::Yes(rev) = r else {
                bail!("{r:?}")
            };
            expected.push((name, None, rev));
        } else {
            let v = format!("v{i}");
            let rev = store.put(Kind::Node, &name, &v).await?;
            expected.push((name, Some(v), rev));
        }
    }
    let want: Vec<_> = expected[5..].to_vec();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while got.len() < want.len() {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(WatchEvent::Change(c))) => got.push((
                c.name,
                c.value
                    .map(|v| serde_json::from_slice::<String>(&v).unwrap()),
                c.revision,
            )),
            Ok(other) => bail!("unexpected {other:?} after {} changes", got.len()),
            Err(_) => bail!("only {} of {} changes arrived", got.len(), want.len()),
        }
    }
    assert_eq!(got, want, "every change once, in order");
    // Nothing repeated: the next thing seen is a new write.
    let last = store.put(Kind::Node, "sentinel", &"s").await?;
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(WatchEvent::Change(c))) => {
            assert_eq!((c.name.as_str(), c.revision), ("sentinel", last))
        }
        other => bail!("expected the sentinel, got {other:?}"),
    }
    Ok(())
}

pub(crate) async fn typed_watch_compacted_is_reported(ep: &[String]) -> Result<()> {
    let store = Store::connect(ep, PREFIX).await?;
    let mut last = 0;
    for i in 0..5 {
        last = store.put(Kind::Alloc, "a", &i).await?;
    }
    let mut c = client(ep).await?;
    c.compact(last, None).await?;
    match store.watch(Kind::Alloc, 2).await {
        Err(StoreError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, last),
        Ok(mut rx) => match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(WatchEvent::Compacted {
                compact_revision, ..
            })) => assert_eq!(compact_revision, last),
            other => bail!("expected Compacted, got {other:?}"),
        },
        Err(other) => bail!("expected Compacted, got {other}"),
    }
    // Re-list and resume from the listing: nothing is missed.
    let listing = store.list::<i32>(Kind::Alloc).await?;
    let mut rx = store.watch(Kind::Alloc, listing.revision + 1).await?;
    let rev = store.put(Kind::Alloc, "a", &9).await?;
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(WatchEvent::Change(c))) => assert_eq!(c.revision, rev),
        other => bail!("expected the new write, got {other:?}"),
    }
    Ok(())
}

pub(crate) async fn typed_leases(ep: &[String]) -> Result<()> {
    let store = Store::connect(ep, PREFIX).await?;
    let lease = store.grant(2).await?;
    assert_eq!(lease.ttl, 2);
    store
        .put_with_lease(Kind::Node, "n1", &"up", lease.id)
        .await?;
    let keeper = store.keep_alive(lease.id).await?;
    // Kept alive past several TTLs: the key stays.
    let until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < until {
        assert!(store.get::<String>(Kind::Node, "n1").await?.is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(keeper);
    // Without keep-alives it expires and the key goes.
    let end = Instant::now() + Duration::from_secs(10);
    while store.get::<String>(Kind::Node, "n1").await?.is_some() {
        ensure!(Instant::now() < end, "lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l2 = store.grant(30).await?;
    store.put_with_lease(Kind::Node, "n2", &"up", l2.id).await?;
    store.revoke(l2.id).await?;
    assert!(store.get::<String>(Kind::Node, "n2").await?.is_none());
    let again = store.revoke(l2.id).await;
    assert!(
        matches!(again, Err(StoreError::LeaseNotFound { .. })),
        "{again:?}"
    );
    let bad = store.put_with_lease(Kind::Node, "n3", &"x", l2.id).await;
    assert!(
        matches!(bad, Err(StoreError::LeaseNotFound { .. })),
        "{bad:?}"
    );
    Ok(())
}

/// The raw SkyDNS keys: puts bound to a lease and deletes in one
/// transaction, listed back with their leases; a revoked lease takes its
/// keys and fails a later put and renewal by name; nothing outside
/// `/skydns/` is reachable; more than 128 operations are refused.
pub(crate) async fn typed_skydns_raw_keys(ep: &[String]) -> Result<()> {
    let store = Store::connect(ep, PREFIX).await?;
    let lease = store.grant(30).await?;
    let put = |key: &str, lease: i64| RawOp::Put {
        key: key.into(),
        value: br#"{"host":"10.0.0.1"}"#.to_vec(),
        lease,
    };
    let a = "/skydns/test/zone/service/web/a";
    let b = "/skydns/test/zone/service/web/b";
    let fixed = "/skydns/test/zone/service/web/static";
    store
        .apply_skydns(&[put(a, lease.id), put(b, lease.id), put(fixed, 0)])
        .await?;
    store.renew(lease.id).await?;
    let listed = store.list_skydns("/skydns/test/zone/").await?;
    let got: Vec<(&str, i64)> = listed
        .iter()
        .map(|kv| (kv.key.as_str(), kv.lease))
        .collect();
    assert_eq!(got, [(a, lease.id), (b, lease.id), (fixed, 0)]);
    store
        .apply_skydns(&[RawOp::Delete { key: a.into() }])
        .await?;
    store.revoke(lease.id).await?;
    let left: Vec<String> = store
        .list_skydns("/skydns/test/")
        .await?
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, [fixed], "the revoked lease took b");
    let gone = store.apply_skydns(&[put(a, lease.id)]).await;
    match &gone {
        Err(StoreError::LeaseNotFound {
            lease: l,
            key: Some(k),
        }) => {
            assert_eq!((*l, k.as_str()), (lease.id, a));
        }
        other => bail!("put with a revoked lease: {other:?}"),
    }
    let renewed = store.renew(lease.id).await;
    assert!(
        matches!(renewed, Err(StoreError::LeaseNotFound { .. })),
        "{renewed:?}"
    );
    for outside in ["/drover/jobs/x", "/skydnsx/a"] {
        let refused = store.apply_skydns(&[put(outside, 0)]).await;
        assert!(
            matches!(refused, Err(StoreError::OutsideSkydns { .. })),
            "{refused:?}"
        );
    }
    let listed = store.list_skydns("/conformance/").await;
    assert!(
        matches!(listed, Err(StoreError::OutsideSkydns { .. })),
        "{listed:?}"
    );
    let many: Vec<RawOp> = (0..129)
        .map(|i| put(&format!("/skydns/test/m/{i}"), 0))
        .collect();
    let refused = store.apply_skydns(&many).await;
    assert!(
        matches!(refused, Err(StoreError::TooManyOps { ops: 129, max: 128 })),
        "{refused:?}"
    );
    store.apply_skydns(&many[..128]).await?;
    ensure!(store.list_skydns("/skydns/test/m/").await?.len() == 128);
    Ok(())
}

// --------------------------------------------------------- election

pub(crate) async fn election_campaign_observe_resign_fence(ep: &[String]) -> Result<()> {
    let a = Election::new(Store::connect(ep, PREFIX).await?, "sched-a", 2);
    let b = Election::new(Store::connect(ep, PREFIX).await?, "sched-b", 2);
    let mut observe = b.observe().await?;

    let lead_a = a.campaign().await?;
    assert_eq!(lead_a.id(), "sched-a");
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            observe.changed().await.ok()?;
            let cur = observe.borrow().clone();
            if cur.is_some() {
                return cur;
            }
        }
    })
    .await?;
    assert_eq!(seen.map(|l| l.id), Some("sched-a".to_string()));

    // b waits while a leads.
    let b_campaign = tokio::spawn(async move {
        let l = b.campaign().await;
        (b, l)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b_campaign.is_finished(), "b must not lead while a does");

    // A fenced write by the leader succeeds.
    let store = Store::connect(ep, PREFIX).await?;
    let w = |v: &str| Write::Put {
        kind: Kind::Job,
        name: "fenced".into(),
        value: serde_json::to_vec(&v).unwrap(),
    };
    let fence_a = lead_a.fence();
    assert!(matches!(
        lead_a.commit(&[], &[w("by-a")]).await?,
        Committed::Yes(_)
    ));

    lead_a.resign().await?;
    let (b, lead_b) = tokio::time::timeout(Duration::from_secs(10), b_campaign).await??;
    let lead_b = lead_b?;
    assert_eq!(lead_b.id(), "sched-b");
    assert!(
        lead_b.fence().revision > fence_a.revision,
        "tokens increase"
    );

    // The old leader's token no longer satisfies the guard.
    let stale = store
        .commit_fenced(&fence_a, &[], &[w("by-stale-a")])
        .await?;
    assert_eq!(stale, Committed::Conflict);
    assert!(matches!(
        lead_b.commit(&[], &[w("by-b")]).await?,
        Committed::Yes(_)
    ));
    let now = store.get::<String>(Kind::Job, "fenced").await?.unwrap();
    assert_eq!(now.value, "by-b");

    // Losing the lease loses leadership: the key goes with it.
    let mut lost = lead_b.lost();
    let mut c = client(ep).await?;
    c.lease_revoke(lead_b.lease()).await?;
    tokio::time::timeout(Duration::from_secs(10), lost.changed()).await??;
    assert!(*lost.borrow());
    assert!(matches!(
        lead_b.commit(&[], &[w("after-loss")]).await?,
        Committed::Conflict
    ));
    drop(b);
    let e = Election::new(store, "sched-c", 2);
    assert!(e.leader().await?.is_none());
    Ok(())
}
