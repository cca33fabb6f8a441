//! TLS and authentication towards a real etcd: `drover tls etcd` makes the
//! material, `deploy/etcd-rbac.sh` turns etcd's auth on with one user per
//! Drover role, and `drover scheduler` and `drover dns` reach etcd only
//! over TLS with their own client certificates, each limited to its
//! prefixes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use drover_tests::etcd::RealEtcd;
use drover_tests::skydns::dig;
use drover_tests::{drover_bin, poll_until, run_drover};

const WAIT: Duration = Duration::from_secs(20);

/// Kills the child by pid when dropped, even if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `etcdctl` against `endpoint` as the etcd user of certificate `stem`.
fn etcdctl(endpoint: &str, certs: &Path, stem: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", p(certs, "etcd-ca.pem")))
        .arg(format!("--cert={}", p(certs, &format!("{stem}.pem"))))
        .arg(format!("--key={}", p(certs, &format!("{stem}-key.pem"))))
        .args(args)
        .output()
        .expect("running etcdctl (etcd-client)")
}

/// The `--etcd*` flags presenting certificate `stem`.
fn etcd_flags(endpoint: &str, certs: &Path, stem: &str) -> Vec<String> {
    vec![
        "--etcd".into(),
        endpoint.into(),
        "--etcd-ca".into(),
        p(certs, "etcd-ca.pem"),
        "--etcd-cert".into(),
        p(certs, &format!("{stem}.pem")),
        "--etcd-key".into(),
        p(certs, &format!("{stem}-key.pem")),
    ]
}

/// Starts `drover ROLE` with `args`, waiting for the address it writes.
fn start(role: &str, args: &[String], dir: &Path) -> (Proc, String) {
    let addr_file = dir.join(format!("{role}-{}.addr", std::process::id()));
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(drover_bin())
        .arg(role)
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--addr-file"])
        .arg(&addr_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let addr = poll_until(&format!("drover {role} to listen"), WAIT, || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .map(|s| s.trim().to_string())
    });
    (proc, addr)
}

fn job_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[[group]]\nname = \"main\"\n[[group.task]]\n\
             name = \"t\"\ncommand = [\"/bin/true\"]\n"
        ),
    )
    .unwrap();
    path
}

fn submit(addr: &str, file: &Path) -> Output {
    run_drover(&[
        "job",
        "run",
        "--detach",
        "--addr",
        addr,
        file.to_str().unwrap(),
    ])
}

#[test]
fn scheduler_and_dns_reach_etcd_over_tls_each_within_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("etcd-pki");
    let out = run_drover(&["tls", "etcd", "--dir", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt.block_on(RealEtcd::start_tls(&certs)).unwrap();
    let url = etcd.endpoint().to_string();

    let rbac = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/etcd-rbac.sh");
    let out = Command::new("bash")
        .args([rbac, &url, certs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "etcd-rbac.sh: {}", text(&out));
    // Run again: nothing changes, nothing fails.
    let again = Command::new("bash")
        .args([rbac, &url, certs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "etcd-rbac.sh again: {}",
        text(&again)
    );

    // Each role is held to its prefixes by etcd itself.
    let denied = etcdctl(&url, &certs, "etcd-dns", &["put", "/drover/jobs/x", "{}"]);
    assert!(
        !denied.status.success() && text(&denied).contains("permission denied"),
        "the DNS user wrote Drover's state: {}",
        text(&denied)
    );
    let denied = etcdctl(&url, &certs, "etcd-scheduler", &["put", "/other/x", "1"]);
    assert!(
        !denied.status.success() && text(&denied).contains("permission denied"),
        "the scheduler user wrote outside its prefixes: {}",
        text(&denied)
    );

    // An https:// endpoint without the CA is refused before anything starts.
    let plain = run_drover(&["scheduler", "--etcd", &url, "--listen", "127.0.0.1:0"]);
    assert!(!plain.status.success());
    assert!(text(&plain).contains("--etcd-ca"), "{}", text(&plain));

    // The scheduler with its own certificate stores a job.
    let (_sched, addr) = start(
        "scheduler",
        &etcd_flags(&url, &certs, "etcd-scheduler"),
        dir.path(),
    );
    let out = submit(&addr, &job_file(dir.path(), "tlsjob"));
    assert!(out.status.success(), "submit: {}", text(&out));
    let stored = etcdctl(
        &url,
        &certs,
        "etcd-root",
        &["get", "--keys-only", "/drover/jobs/tlsjob"],
    );
    assert!(
        text(&stored).contains("/drover/jobs/tlsjob"),
        "{}",
        text(&stored)
    );

    // A scheduler holding the DNS certificate cannot touch Drover's state:
    // it cannot even read the leader key, and stops at once saying so.
    let mut wrong: Vec<String> = vec!["scheduler".into()];
    wrong.extend(etcd_flags(&url, &certs, "etcd-dns"));
    wrong.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let out = run_drover(&wrong);
    assert!(!out.status.success());
    assert!(text(&out).contains("permission denied"), "{}", text(&out));

    // `drover dns` reads the records with the DNS certificate.
    let (_dns, dns_addr) = start("dns", &etcd_flags(&url, &certs, "etcd-dns"), dir.path());
    let put = etcdctl(
        &url,
        &certs,
        "etcd-scheduler",
        &[
            "put",
            "/skydns/internal/drover/service/web/a1",
            r#"{"host":"10.89.3.7","port":8080,"ttl":5}"#,
        ],
    );
    assert!(put.status.success(), "{}", text(&put));
    let dns_addr = dns_addr.parse().unwrap();
    poll_until("the record to be answered over TLS", WAIT, || {
        dig(dns_addr, &["A", "web.service.drover.internal"])
            .contains("10.89.3.7")
            .then_some(())
    });
}
