#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::render::{age, escape, page, PageInfo};
use super::snapshot::{Event, Snapshot};
use super::*;
use crate::job::{JobSpec, Resources};
use crate::state::{AllocStatus, JobRecord, JobStatus, NodeStatus};
use crate::testkit::{alloc, node};

const NOW: i64 = 1_700_000_000_000;

/// Job `j`: group `g` of 2, one task running `command`, service `web`.
fn job_with_service(command: &str) -> JobRecord {
    let text = format!(
        "name = \"j\"\nkind = \"service\"\n[[group]]\nname = \"g\"\ncount = 2\n\
         [[group.task]]\nname = \"t\"\ncommand = [\"sh\", \"-c\", {command:?}]\n\
         [[group.service]]\nname = \"web\"\nport = 80\n"
    );
    let spec = JobSpec::try_from(&crate::jobfile::parse("j.toml", &text).unwrap()).unwrap();
    JobRecord {
        spec,
        status: JobStatus::Running,
        version: 3,
        submitted_unix_ms: NOW - 5_000,
        pending: Vec::new(),
    }
}

/// One node `n1` (meta `note` = `note`) with job `j`: instance 0 running
/// at 10.89.0.5, instance 1 pending, an old failed one; an audit event.
fn snapshot(note: &str, command: &str) -> Snapshot {
    let mut n = node("n1", "127.0.0.1", NodeStatus::Ready);
    n.subnet = Some("10.89.0.0/24".parse().unwrap());
    n.meta.insert("note".into(), note.into());
    let mut running = alloc("a-running-0001", 0, "n1", AllocStatus::Running);
    running.ip = "10.89.0.5".into();
    running.resources = Resources {
        cpu_millis: 250,
        memory_mb: 128,
    };
    let pending = alloc("a-pending-0002", 1, "n1", AllocStatus::Pending);
    let mut failed = alloc("a-failed-0003", 1, "n1", AllocStatus::Failed);
    failed.desired = crate::state::DesiredState::Stop;
    failed.resources = Resources {
        cpu_millis: 500,
        memory_mb: 512,
    };
    let event = Event {
        time_unix_ms: NOW - 2_000,
        source: "audit",
        actor: "loopback (admin)".into(),
        action: "job run".into(),
        target: "job j".into(),
        outcome: "ok".into(),
    };
    Snapshot::build(
        &Discovery::default(),
        vec![n],
        vec![job_with_service(command)],
        vec![failed, pending, running],
        Vec::new(),
        vec![event],
        true,
    )
}

fn leading() -> Role {
    Role::Leading
}

fn html(role: &Role, snap: &Snapshot) -> String {
    let info = PageInfo {
        role,
        now_unix_ms: NOW,
        refresh_secs: 5,
    };
    page(&info, Some(snap), None)
}

#[test]
fn escape_replaces_every_character_that_html_gives_meaning() {
    assert_eq!(
        escape(r#"<a href="x" title='y'>&amp;</a>"#),
        "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
    );
    assert_eq!(escape("plain text é"), "plain text é");
}

#[test]
fn ages_count_from_now() {
    assert_eq!(age(NOW, NOW - 12_000), "12s ago");
    assert_eq!(age(NOW, NOW - 180_000), "3m ago");
    assert_eq!(age(NOW, NOW - 7_200_000), "2h ago");
    assert_eq!(age(NOW, NOW - 4 * 86_400_000), "4d ago");
    assert_eq!(age(NOW, 0), "-");
}

#[test]
fn nodes_count_only_what_live_allocations_claim() {
    let s = snapshot("r1", "sleep 1");
    assert_eq!(s.nodes.len(), 1);
    let v = &s.nodes[0];
    // The failed allocation's 500 mCPU and 512 MiB are free again.
    assert_eq!(
        (v.used.cpu_millis, v.used.memory_mb, v.allocations),
        (250, 128, 2)
    );
    // Live allocations first, then the finished one.
    let ids: Vec<&str> = s.allocs.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a-running-0001", "a-pending-0002", "a-failed-0003"]);
}

#[test]
fn services_count_the_instances_registered_of_those_wanted() {
    let s = snapshot("r1", "sleep 1");
    assert_eq!(s.services.len(), 1);
    let (job, c) = &s.services[0];
    assert_eq!((job.as_str(), c.service.as_str()), ("j", "web"));
    // Running at an address of its node's subnet: registered; pending:
    // not; failed: not wanted.
    assert_eq!((c.healthy, c.instances), (1, 2));
}

#[test]
fn the_leaders_page_shows_the_cluster() {
    let h = html(&leading(), &snapshot("rack-1", "sleep 1"));
    assert!(
        h.contains("<span class=\"role\" id=\"role\">leader</span>"),
        "{h}"
    );
    assert!(h.contains("http-equiv=\"refresh\" content=\"5\""), "{h}");
    assert!(h.contains("<td class=\"id\">n1</td>"), "{h}");
    assert!(h.contains("<code>note=rack-1</code>"), "{h}");
    assert!(h.contains("250 / 1000 mCPU"), "{h}");
    assert!(h.contains("<td class=\"name\">j</td>"), "{h}");
    assert!(h.contains("<b>g</b> &times; 2"), "{h}");
    assert!(
        h.contains("data-id=\"a-running-0001\""),
        "the running allocation: {h}"
    );
    assert!(h.contains("<td class=\"addr\">10.89.0.5</td>"), "{h}");
    assert!(
        h.contains("<td class=\"healthy\">1</td><td class=\"unhealthy bad\">1</td>"),
        "{h}"
    );
    assert!(h.contains("<td>job run</td><td>job j</td>"), "{h}");
    assert!(!h.contains("id=\"follower\""), "{h}");
}

#[test]
fn events_are_left_out_for_those_who_may_not_read_the_audit_trail() {
    let mut s = snapshot("r1", "sleep 1");
    s.events.retain(|e| e.source != "audit");
    s.audit_shown = false;
    let h = html(&leading(), &s);
    assert!(!h.contains("<td>job run</td>"), "{h}");
    assert!(h.contains("only admins may read"), "{h}");
}

#[test]
fn text_from_users_is_escaped_everywhere_it_shows() {
    let script = "<script>alert('x')</script>";
    let h = html(
        &leading(),
        &snapshot(script, "echo \"<img src=x onerror=alert(1)>\""),
    );
    assert!(!h.contains("<script"), "raw script tag: {h}");
    assert!(!h.contains("<img"), "raw img tag: {h}");
    assert!(
        h.contains("note=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{h}"
    );
    assert!(
        h.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the command, escaped: {h}"
    );
}

#[test]
fn a_followers_page_names_the_leader_and_shows_no_state() {
    let role = Role::Following {
        leader: Some("10.0.0.1:4680".into()),
    };
    let info = PageInfo {
        role: &role,
        now_unix_ms: NOW,
        refresh_secs: 5,
    };
    let h = page(&info, None, None);
    assert!(h.contains("id=\"role\">follower</span>"), "{h}");
    assert!(
        h.contains("<code id=\"leader\">10.0.0.1:4680</code>"),
        "{h}"
    );
    assert!(!h.contains("id=\"nodes\""), "{h}");
    let none = Role::Following { leader: None };
    let info = PageInfo {
        role: &none,
        ..info
    };
    assert!(page(&info, None, None).contains("No leader is elected yet"));
}

#[test]
fn the_latest_deployment_of_each_job_is_shown() {
    let dep = |job: &str, version| crate::deploy::Deployment {
        job: job.into(),
        version,
        status: crate::deploy::DeploymentStatus::Running,
        description: format!("v{version}"),
        revert: false,
        reverted_to: None,
        created_unix_ms: 0,
        modified_unix_ms: 0,
        groups: Default::default(),
    };
    let s = Snapshot::build(
        &Discovery::default(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        vec![dep("a", 2), dep("a", 3), dep("a", 1), dep("b", 1)],
        Vec::new(),
        false,
    );
    let got: Vec<(&str, u64)> = s
        .deployments
        .iter()
        .map(|d| (d.job.as_str(), d.version))
        .collect();
    assert_eq!(got, [("a", 3), ("b", 1)]);
}

#[test]
fn off_loopback_needs_mutual_tls() {
    let any: SocketAddr = "0.0.0.0:4681".parse().unwrap();
    let lo: SocketAddr = "127.0.0.1:4681".parse().unwrap();
    let err = check_listen(any, false).unwrap_err().to_string();
    assert!(err.contains("needs mutual TLS"), "{err}");
    assert!(check_listen(any, true).is_ok());
    assert!(check_listen(lo, false).is_ok());
}

/// A self-signed DER certificate for `cn` with these SAN URIs.
fn cert(cn: &str, uris: &[&str]) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for u in uris {
        p.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(*u).unwrap(),
        ));
    }
    let key = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn under_mutual_tls_the_page_needs_a_viewer() {
    assert_eq!(admit(false, None).unwrap().kind, Kind::Loopback);
    assert_eq!(admit(true, None).unwrap_err().0, StatusCode::UNAUTHORIZED);
    for role in Person::ALL {
        let who = admit(true, Some(&cert("vera", &[&role.uri()]))).unwrap();
        assert_eq!(who.kind, Kind::Person(role));
    }
    let (status, why) = admit(true, Some(&cert(crate::access::AGENT_NAME, &[]))).unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(why.contains("needs the viewer role"), "{why}");
    let (status, why) = admit(true, Some(&cert("nobody", &[]))).unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(why.contains("carries no Drover role"), "{why}");
}
