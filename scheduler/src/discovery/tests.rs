//! The rules of service discovery, each on a small fake state: which
//! records the state calls for, which reports a node may make, and the
//! writes between what is held and what is wanted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use drover_model::skydns::{node_key, service_key, Record};
use drover_model::{CheckKind, CheckState, CheckStatus};

use super::admit::{admit, Refusal};
use super::desired::{desired, healthy, service_counts, ServiceCount, Wanted};
use super::plan::{plan, Held};
use super::Discovery;
use crate::state::NodeStatus;
use crate::state::{AllocRecord, AllocStatus, DesiredState, JobRecord, JobStatus, NodeRecord};
use crate::testkit::{alloc, node};
use crate::transitions::StatusReport;

/// Job `j`, group `g`: service `web` (port 8080, tags, two checks) and
/// service `plain` (no check).
fn job() -> JobRecord {
    let text = r#"name = "j"
kind = "service"
[[group]]
name = "g"
count = 2
[[group.task]]
name = "t"
command = ["sleep"]
[[group.service]]
name = "web"
port = 8080
tags = ["v2"]
[[group.service.check]]
type = "tcp"
[[group.service.check]]
type = "http"
path = "/health"
[[group.service]]
name = "plain"
port = 9000
protocol = "udp"
"#;
    let spec =
        crate::job::JobSpec::try_from(&crate::jobfile::parse("j.toml", text).unwrap()).unwrap();
    JobRecord {
        spec,
        status: JobStatus::Running,
        version: 1,
        submitted_unix_ms: 0,
        pending: Vec::new(),
    }
}

fn jobs() -> BTreeMap<String, JobRecord> {
    BTreeMap::from([("j".to_string(), job())])
}

fn up(id: &str) -> NodeRecord {
    let mut n = node(id, "192.0.2.1", NodeStatus::Ready);
    n.subnet = Some("10.89.3.0/24".parse().unwrap());
    n
}

fn running(id: &str, ip: &str) -> AllocRecord {
    let mut a = alloc(id, 0, "n1", AllocStatus::Running);
    a.ip = ip.into();
    a
}

fn check(service: &str, index: u32, status: CheckStatus) -> CheckState {
    CheckState {
        service: service.into(),
        index,
        kind: CheckKind::Tcp,
        status,
        output: String::new(),
        last_unix_ms: 1,
    }
}

fn d() -> Discovery {
    Discovery {
        zone: "drover.internal".into(),
        ttl: 7,
    }
}

/// The service keys `allocs` get on node `n1`, up.
fn keys(allocs: &[AllocRecord]) -> Vec<String> {
    desired(&d(), &jobs(), allocs, &[up("n1")])
        .into_keys()
        .filter(|k| k.contains("/service/"))
        .collect()
}

#[test]
fn a_running_instance_and_its_node_are_registered_with_the_configured_ttl() {
    let a = running("a1", "10.89.3.7");
    let got = desired(&d(), &jobs(), std::slice::from_ref(&a), &[up("n1")]);
    let plain = &got[&service_key("drover.internal", "plain", "a1")];
    assert_eq!(plain.node_id, "n1");
    let v: serde_json::Value = serde_json::from_slice(&plain.record.to_json()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"host": "10.89.3.7", "port": 9000, "priority": 10,
            "weight": 10, "ttl": 7, "protocol": "udp"})
    );
    let n = &got[&node_key("drover.internal", "n1")];
    assert_eq!(n.record, Record::node("192.0.2.1".parse().unwrap(), 7));
    assert_eq!(got.len(), 2, "web has checks not yet reported: {got:?}");
}

#[test]
fn a_service_is_registered_only_while_every_declared_check_passes() {
    let web = service_key("drover.internal", "web", "a1");
    let with = |checks: Vec<CheckState>| {
        let mut a = running("a1", "10.89.3.7");
        a.checks = checks;
        keys(&[a]).contains(&web)
    };
    use CheckStatus::{Critical, Passing, Pending};
    assert!(!with(vec![]), "never reported: never registered");
    assert!(!with(vec![
        check("web", 0, Pending),
        check("web", 1, Pending)
    ]));
    assert!(!with(vec![check("web", 0, Passing)]), "check 1 unreported");
    assert!(!with(vec![
        check("web", 0, Passing),
        check("web", 1, Critical)
    ]));
    assert!(with(vec![
        check("web", 0, Passing),
        check("web", 1, Passing)
    ]));
    // Another service's failing check does not matter.
    assert!(with(vec![
        check("web", 0, Passing),
        check("web", 1, Passing),
        check("plain", 0, Critical)
    ]));
    let spec = job().spec;
    let plain = &spec.groups[0].services[1];
    assert!(healthy(plain, &[]), "no checks: healthy while running");
}

#[test]
fn only_running_instances_desired_to_run_on_an_up_node_with_an_address_count() {
    let plain = service_key("drover.internal", "plain", "a1");
    let registered = |a: AllocRecord| keys(&[a]).contains(&plain);
    assert!(registered(running("a1", "10.89.3.7")));
    for status in [
        AllocStatus::Pending,
        AllocStatus::Complete,
        AllocStatus::Failed,
        AllocStatus::Lost,
    ] {
        let mut a = running("a1", "10.89.3.7");
        a.status = status;
        assert!(!registered(a), "{status:?}");
    }
    let mut stopping = running("a1", "10.89.3.7");
    stopping.desired = DesiredState::Stop;
    assert!(!registered(stopping), "asked to stop: gone at once");
    assert!(!registered(running("a1", "")), "no address yet");
    assert!(
        !registered(running("a1", "10.89.4.7")),
        "outside the subnet"
    );
    assert!(!registered(running("a1", "10.89.3.1")), "the bridge's");
    let mut elsewhere = running("a1", "10.89.3.7");
    elsewhere.job = "gone".into();
    assert!(!registered(elsewhere), "no such job");
}

#[test]
fn a_down_node_has_no_record_and_neither_have_its_allocations() {
    let mut n = up("n1");
    n.status = NodeStatus::Down;
    let got = desired(&d(), &jobs(), &[running("a1", "10.89.3.7")], &[n]);
    assert!(got.is_empty(), "{got:?}");
    let mut named = up("n1");
    named.address = "node1.example".into();
    let got = desired(&d(), &jobs(), &[], &[named]);
    assert!(got.is_empty(), "a host name is no A record: {got:?}");
}

#[test]
fn job_status_counts_healthy_instances_of_those_desired_to_run() {
    let mut a = running("a1", "10.89.3.7");
    a.checks = vec![
        check("web", 0, CheckStatus::Passing),
        check("web", 1, CheckStatus::Passing),
    ];
    let b = running("a2", "10.89.3.8");
    let mut stopped = running("a3", "10.89.3.9");
    stopped.desired = DesiredState::Stop;
    let counts = service_counts(&d(), &job(), &[a, b, stopped], &[up("n1")]);
    let count = |service: &str, healthy, instances| ServiceCount {
        group: "g".into(),
        service: service.into(),
        healthy,
        instances,
    };
    assert_eq!(counts, [count("web", 1, 2), count("plain", 2, 2)]);
}

fn report(id: &str, ip: &str, checks: Vec<CheckState>) -> StatusReport {
    StatusReport {
        alloc_id: id.into(),
        status: AllocStatus::Running,
        tasks: Vec::new(),
        ip: ip.into(),
        checks,
    }
}

/// What admitting `r` about a fresh allocation `a1` of `n1` says, with
/// `others` in the cluster.
fn admit_on(node_id: &str, r: &StatusReport, others: &[AllocRecord]) -> Result<(), Refusal> {
    let a = alloc("a1", 0, "n1", AllocStatus::Pending);
    let mut all = others.to_vec();
    all.push(a.clone());
    admit(node_id, &a, r, Some(&up(node_id)), Some(&job()), &all)
}

#[test]
fn a_node_may_report_its_own_allocation_at_a_free_address_of_its_subnet() {
    let checks = vec![check("web", 1, CheckStatus::Passing)];
    assert_eq!(
        admit_on("n1", &report("a1", "10.89.3.7", checks), &[]),
        Ok(())
    );
    // An address a finished allocation held is free again.
    let mut over = running("old", "10.89.3.7");
    over.status = AllocStatus::Complete;
    assert_eq!(
        admit_on("n1", &report("a1", "10.89.3.7", vec![]), &[over]),
        Ok(())
    );
}

#[test]
fn reports_about_another_nodes_allocation_are_refused() {
    assert_eq!(
        admit_on("rogue", &report("a1", "", vec![]), &[]),
        Err(Refusal::OtherNode { owner: "n1".into() })
    );
}

#[test]
fn addresses_outside_the_subnet_reserved_or_held_are_refused() {
    let refused =
        |ip: &str, others: &[AllocRecord]| admit_on("n1", &report("a1", ip, vec![]), others);
    assert!(matches!(
        refused("10.89.3.x", &[]),
        Err(Refusal::NotAnAddress { .. })
    ));
    assert!(matches!(
        refused("10.89.4.7", &[]),
        Err(Refusal::OutsideSubnet { .. })
    ));
    for reserved in ["10.89.3.0", "10.89.3.1", "10.89.3.255"] {
        assert!(
            matches!(refused(reserved, &[]), Err(Refusal::Reserved { .. })),
            "{reserved}"
        );
    }
    let holder = running("a9", "10.89.3.7");
    assert_eq!(
        refused("10.89.3.7", &[holder]),
        Err(Refusal::InUse {
            ip: "10.89.3.7".parse().unwrap(),
            other: "a9".into()
        })
    );
    let a = alloc("a1", 0, "n1", AllocStatus::Pending);
    let no_node = admit(
        "n1",
        &a,
        &report("a1", "10.89.3.7", vec![]),
        None,
        None,
        &[],
    );
    assert!(
        matches!(no_node, Err(Refusal::NoSubnet { .. })),
        "{no_node:?}"
    );
    let mut bare = up("n1");
    bare.subnet = None;
    let no_subnet = admit(
        "n1",
        &a,
        &report("a1", "10.89.3.7", vec![]),
        Some(&bare),
        None,
        &[],
    );
    assert!(
        matches!(no_subnet, Err(Refusal::NoSubnet { .. })),
        "{no_subnet:?}"
    );
}

#[test]
fn an_unchanged_address_is_not_checked_again() {
    let a = running("a1", "10.89.3.7");
    // The node is not even read for it.
    assert_eq!(
        admit(
            "n1",
            &a,
            &report("a1", "10.89.3.7", vec![]),
            None,
            None,
            &[]
        ),
        Ok(())
    );
}

#[test]
fn checks_of_services_the_job_does_not_declare_are_refused() {
    let r = report("a1", "", vec![check("db", 0, CheckStatus::Passing)]);
    assert_eq!(
        admit_on("n1", &r, &[]),
        Err(Refusal::UndeclaredService {
            job: "j".into(),
            group: "g".into(),
            service: "db".into()
        })
    );
    let r = report("a1", "", vec![check("web", 2, CheckStatus::Passing)]);
    assert_eq!(
        admit_on("n1", &r, &[]),
        Err(Refusal::UndeclaredCheck {
            service: "web".into(),
            index: 2,
            declared: 2
        })
    );
    let r = report("a1", "", vec![check("plain", 0, CheckStatus::Passing)]);
    assert!(matches!(
        admit_on("n1", &r, &[]),
        Err(Refusal::UndeclaredCheck { .. })
    ));
    let a = alloc("a1", 0, "n1", AllocStatus::Pending);
    let r = report("a1", "", vec![check("web", 0, CheckStatus::Passing)]);
    assert_eq!(
        admit("n1", &a, &r, None, None, &[]),
        Err(Refusal::NoJob { job: "j".into() })
    );
}

fn wanted(node_id: &str, host: &str) -> Wanted {
    Wanted {
        node_id: node_id.into(),
        record: Record::node(host.parse().unwrap(), 5),
    }
}

#[test]
fn the_plan_puts_what_differs_and_deletes_what_is_unwanted_in_scope() {
    let value = |host: &str| wanted("n1", host).record.to_json();
    let held = BTreeMap::from([
        (
            "/k/same".to_string(),
            Held {
                value: value("10.0.0.1"),
                lease: 1,
            },
        ),
        (
            "/k/changed".to_string(),
            Held {
                value: value("10.0.0.1"),
                lease: 1,
            },
        ),
        (
            "/k/old-lease".to_string(),
            Held {
                value: value("10.0.0.1"),
                lease: 9,
            },
        ),
        (
            "/k/unwanted".to_string(),
            Held {
                value: value("10.0.0.1"),
                lease: 1,
            },
        ),
        (
            "/other/unwanted".to_string(),
            Held {
                value: value("10.0.0.1"),
                lease: 1,
            },
        ),
    ]);
    let want = BTreeMap::from([
        ("/k/same".to_string(), wanted("n1", "10.0.0.1")),
        ("/k/changed".to_string(), wanted("n1", "10.0.0.2")),
        ("/k/old-lease".to_string(), wanted("n1", "10.0.0.1")),
        ("/k/new".to_string(), wanted("n2", "10.0.0.3")),
    ]);
    let leases = BTreeMap::from([("n1".to_string(), 1)]);
    let p = plan(&held, &leases, &want, |k| k.starts_with("/k/"));
    assert_eq!(p.delete, ["/k/unwanted"]);
    let puts: Vec<(&str, &str)> = p
        .put
        .iter()
        .flat_map(|(n, v)| v.iter().map(move |(k, _)| (n.as_str(), k.as_str())))
        .collect();
    assert_eq!(
        puts,
        [
            ("n1", "/k/changed"),
            ("n1", "/k/old-lease"),
            ("n2", "/k/new")
        ]
    );
    let settled: BTreeMap<String, Held> = want
        .iter()
        .map(|(k, w)| {
            (
                k.clone(),
                Held {
                    value: w.record.to_json(),
                    lease: 1,
                },
            )
        })
        .collect();
    let both = BTreeMap::from([("n1".to_string(), 1), ("n2".to_string(), 1)]);
    assert!(plan(&settled, &both, &want, |_| true).is_empty());
}
