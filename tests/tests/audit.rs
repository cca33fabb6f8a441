//! The audit trail: on a real `drover dev` (loopback, no certificates:
//! the caller is `loopback`), a run, an exec and a stop are listed by
//! `drover audit` with their target, command line and outcome, and logged
//! by the scheduler; in the store, the trail stays within its count and
//! age limits.
//!
//! Needs root for `drover dev` (the first test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_scheduler::audit::{AuditEntry, AuditLimits, AuditLog};
use drover_store::embedded::{CancellationToken, EmbeddedEtcd};
use drover_store::{Kind, Store};
use drover_tests::checks::{service, wait_running};
use drover_tests::{unique_name, DevCluster};
use serde_json::Value;

/// The one entry of `action` on `target`.
fn entry<'a>(entries: &'a [Value], action: &str, target: &str) -> &'a Value {
    let hits: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == action && e["target"] == target)
        .collect();
    assert_eq!(hits.len(), 1, "{action} {target} in {entries:#?}");
    hits[0]
}

#[test]
fn dev_audits_run_exec_and_stop_as_loopback() {
    let c = DevCluster::start();
    let job = unique_name("audited");
    let file = c.write_file(&format!("{job}.toml"), &service(&job, 1, "exec sleep 3600"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    wait_running(&c, &job, 1);
    let out = c.cli_ok(&["exec", &job, "--", "sh", "-c", "echo hi $0", "there"]);
    assert_eq!(out.trim(), "hi there");
    // Reads are not audited.
    c.cli_json(&["job", "status", &job]);
    c.cli_ok(&["job", "stop", &job]);

    let entries: Vec<Value> = c.cli_json(&["audit"]).as_array().unwrap().clone();
    let target = format!("job {job}");
    let run = entry(&entries, "job run", &target);
    assert_eq!(
        (&run["caller"], &run["role"]),
        (&"loopback".into(), &"admin".into())
    );
    assert_eq!(run["outcome"], "ok");
    let exec = entries
        .iter()
        .find(|e| e["action"] == "exec")
        .unwrap_or_else(|| panic!("no exec in {entries:#?}"));
    assert_eq!(exec["caller"], "loopback");
    assert_eq!(exec["detail"], "command: sh -c 'echo hi $0' there");
    assert_eq!(exec["outcome"], "ok");
    assert!(
        exec["target"].as_str().unwrap().starts_with("alloc "),
        "{exec}"
    );
    let stop = entry(&entries, "job stop", &target);
    assert_eq!(stop["outcome"], "ok");
    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert_eq!(c.store_keys("/drover/audit/").len(), 3);
    // `--limit` keeps the newest.
    let last = c.cli_json(&["audit", "--limit", "1"]);
    assert_eq!(last[0]["action"], "job stop", "{last}");
    // The scheduler's log has them too.
    let log = c.log_tail(10_000);
    assert!(
        log.lines()
            .any(|l| l.contains("drover::audit") && l.contains("echo hi")),
        "{log}"
    );
}

/// An embedded store on loopback, stopped on drop.
struct TestStore {
    url: String,
    rt: tokio::runtime::Runtime,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let url = rt.block_on(async {
        let etcd = EmbeddedEtcd::open(dir.path()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(etcd.serve(l, stop.clone()));
        url
    });
    TestStore {
        url,
        rt,
        _stop: stop.drop_guard(),
        _dir: dir,
    }
}

fn at(time_unix_ms: i64, n: usize) -> AuditEntry {
    AuditEntry {
        time_unix_ms,
        caller: format!("caller-{n}"),
        role: "operator".into(),
        method: "drover.v1.JobService/Stop".into(),
        action: "job stop".into(),
        target: format!("job j{n}"),
        outcome: "ok".into(),
        ..AuditEntry::default()
    }
}

#[test]
fn pruning_keeps_the_trail_within_its_count_and_age() {
    let s = test_store();
    s.rt.block_on(async {
        let store = Store::connect(std::slice::from_ref(&s.url), "/audit-test/")
            .await
            .unwrap();
        let log = AuditLog::new(
            store.clone(),
            AuditLimits {
                max_age: Duration::from_secs(3600),
                max_entries: 5,
            },
        );
        let t0 = 1_800_000_000_000_i64;
        for n in 0..12 {
            log.record(at(t0 + n as i64 * 1000, n)).await.unwrap();
            let count = store.count(Kind::Audit).await.unwrap();
            assert!(count <= 5, "{count} entries kept after {} written", n + 1);
        }
        let kept = log.list(0, 0).await.unwrap();
        let callers: Vec<&str> = kept.iter().map(|e| e.caller.as_str()).collect();
        assert_eq!(
            callers,
            ["caller-7", "caller-8", "caller-9", "caller-10", "caller-11"]
        );
        // --since and --limit.
        assert_eq!(log.list(t0 + 10_000, 0).await.unwrap().len(), 2);
        let newest = log.list(0, 2).await.unwrap();
        assert_eq!(newest[1].caller, "caller-11");
        assert_eq!(newest.len(), 2);

        // Two hours on, everything older than an hour goes.
        log.record(at(t0 + 2 * 3600 * 1000, 99)).await.unwrap();
        let kept = log.list(0, 0).await.unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].caller, "caller-99");
        assert_eq!(store.count(Kind::Audit).await.unwrap(), 1);
        // Pruning touched nothing outside the trail.
        store
            .put(Kind::Job, "keep-me", &serde_json::json!({"x": 1}))
            .await
            .unwrap();
        log.prune(t0 + 100 * 3600 * 1000).await.unwrap();
        assert_eq!(store.count(Kind::Audit).await.unwrap(), 0);
        assert_eq!(store.count(Kind::Job).await.unwrap(), 1);
    });
}
