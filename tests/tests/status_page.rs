//! The scheduler's status page (`--http-listen`), looked at as a person
//! would: headless Chromium loads the page of a live `drover dev` running
//! a service job and the DOM it built shows the node, the job, the running
//! allocation with its address, the service with its healthy count and
//! the `job run` in the recent events; a plain HTTP client sees that text
//! from users (a node's meta, a task's command) arrives escaped, never as
//! markup. Off loopback, `drover scheduler` refuses to serve the page
//! without mutual TLS, and with it the page needs a client certificate
//! with at least the viewer role (checked with curl).
//!
//! `DROVER_STATUS_SCREENSHOT=docs/status-page.png` keeps the screenshot
//! the first test takes (the README's).
//!
//! Needs root, Debian's `chromium` and `curl`, and the binary:
//! `cargo build -p drover-cli && cargo test -p drover-tests --test
//! status_page`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use drover_store::embedded::{CancellationToken, EmbeddedEtcd};
use drover_tests::browser::{dump_dom, http_addr, http_get, screenshot};
use drover_tests::checks::{service, str_of, wait_running, WAIT};
use drover_tests::{
    closed_loopback_addr, drover_bin, poll_until, run_drover, unique_name, DevCluster,
};

/// Shown on the page as the node's meta `note`; run as script, it would
/// retitle the page.
const NOTE_SCRIPT: &str = "<script>document.title='pwned'</script>";
/// Printed by the task's command, which the page shows.
const COMMAND_TAG: &str = "<img src=x onerror=alert(1)>";

/// The `<tr>` of the DOM that holds `marker`, up to its `</tr>`.
fn row<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find("</tr>")?;
    Some(&dom[start..end])
}

#[test]
fn the_page_of_drover_dev_shows_the_running_job_and_escapes_what_users_wrote() {
    let meta = format!("note={NOTE_SCRIPT}");
    let c = DevCluster::start_with(&["--meta", &meta]);
    let job = unique_name("page");
    let svc = unique_name("web");
    let script = format!("echo '{COMMAND_TAG}'; exec sleep 3600");
    let text = format!(
        "{}\n[[group.service]]\nname = \"{svc}\"\nport = 8080\n",
        service(&job, 1, &script)
    );
    let file = c.write_file(&format!("{job}.toml"), &text);
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let node = str_of(&status["allocations"][0], "node_id").to_owned();
    let ip = poll_until("the allocation's address and healthy service", WAIT, || {
        let s = c.cli_json(&["job", "status", &job]);
        let ip = s["allocations"][0]["ip"].as_str()?.to_owned();
        (!ip.is_empty() && s["services"][0]["healthy"] == 1).then_some(ip)
    });

    let addr = http_addr(&c);
    assert!(addr.ip().is_loopback(), "{addr}");
    let url = format!("http://{addr}/");
    let scratch = tempfile::tempdir().unwrap();
    // The page is read from the store on each load: poll until Chromium
    // shows everything (the service's health follows the allocation's).
    let dom = poll_until("the page showing the running job", WAIT, || {
        let dom = dump_dom(&url, scratch.path());
        let service = row(&dom, &format!("<td class=\"name\">{svc}</td>"))?;
        service
            .contains("<td class=\"healthy\">1</td>")
            .then_some(dom)
    });
    assert!(dom.contains("id=\"role\">leader</span>"), "{dom}");
    let node_row = row(&dom, &format!("<td class=\"id\">{node}</td>")).expect("the node's row");
    assert!(node_row.contains(">ready<"), "{node_row}");
    let job_row = row(&dom, &format!("<td class=\"name\">{job}</td>")).expect("the job's row");
    assert!(job_row.contains("<b>main</b> × 1"), "{job_row}");
    assert!(job_row.contains(">running<"), "{job_row}");
    let alloc_row = row(&dom, &format!("data-id=\"{alloc}\"")).expect("the allocation's row");
    assert!(alloc_row.contains(">running<"), "{alloc_row}");
    assert!(
        alloc_row.contains(&format!("<td class=\"addr\">{ip}</td>")),
        "{alloc_row}"
    );
    assert!(
        alloc_row.contains(&format!("<td class=\"id\">{node}</td>")),
        "{alloc_row}"
    );
    let svc_row = row(&dom, &format!("<td class=\"name\">{svc}</td>")).unwrap();
    assert!(svc_row.contains(&format!("<td>{job}</td>")), "{svc_row}");
    assert!(
        svc_row.contains("<td class=\"unhealthy\">0</td>"),
        "{svc_row}"
    );
    let event = row(&dom, &format!("<td>job {job}</td>")).expect("the job run event");
    assert!(event.contains("<td>job run</td>"), "{event}");
    // What happened to the allocation is there too (`drover events`).
    let started = row(&dom, "<td>Started</td>").expect("the allocation's Started event");
    assert!(
        started.contains("<td>allocation</td>") && started.contains(&format!("{job}.main[0]")),
        "{started}"
    );
    // Nothing users wrote became markup: the title is the page's own.
    assert!(dom.contains("<title>Drover status</title>"), "{dom}");

    // The raw bytes: escaped once, no tag of theirs.
    let (code, raw) = http_get(addr, "/");
    assert_eq!(code, 200, "{raw}");
    assert!(raw.contains("text/html; charset=utf-8"), "{raw}");
    assert!(
        raw.contains("note=&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"),
        "the node's meta, escaped: {raw}"
    );
    assert!(
        raw.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the command, escaped: {raw}"
    );
    assert!(!raw.contains("<script"), "{raw}");
    assert!(!raw.contains("<img"), "{raw}");
    let (code, _) = http_get(addr, "/nothing-here");
    assert_eq!(code, 404);

    let png = scratch.path().join("status-page.png");
    screenshot(&url, &png, scratch.path());
    if let Some(keep) = std::env::var_os("DROVER_STATUS_SCREENSHOT") {
        std::fs::copy(&png, &keep).expect("keeping the screenshot");
    }
}

/// Kills the child by pid when dropped, even if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(args: &[&str]) {
    let out = run_drover(args);
    assert!(out.status.success(), "drover {args:?}: {out:?}");
}

/// `curl https://127.0.0.1:PORT/` trusting the cluster CA, presenting
/// `<pki>/<cert>.pem` when given; prints the status code last.
fn curl(pki: &Path, port: u16, cert: Option<&str>) -> Output {
    let file = |n: String| pki.join(n).display().to_string();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(["--cacert", &file("ca.pem".into())]);
    if let Some(c) = cert {
        cmd.args(["--cert", &file(format!("{c}.pem"))])
            .args(["--key", &file(format!("{c}-key.pem"))]);
    }
    cmd.arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .expect("running curl")
}

/// Starts a `drover scheduler` replica under mutual TLS on the store at
/// `store_url`, serving the page on `http`; its process, its gRPC address
/// and the page's port, once both are known (`name` names its files).
fn replica(dir: &Path, pki: &Path, store_url: &str, http: &str, name: &str) -> (Proc, String, u16) {
    let addr_file = dir.join(format!("{name}.addr"));
    let http_file = dir.join(format!("{name}.http.addr"));
    let file = |n: &str| pki.join(n).display().to_string();
    let child = Command::new(drover_bin())
        .args(["scheduler", "--etcd", store_url, "--listen", "127.0.0.1:0"])
        .args(["--addr-file", addr_file.to_str().unwrap()])
        .args(["--http-listen", http])
        .args(["--http-addr-file", http_file.to_str().unwrap()])
        .args(["--tls-cert", &file("scheduler.pem")])
        .args(["--tls-key", &file("scheduler-key.pem")])
        .args(["--tls-client-ca", &file("ca.pem")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let read = |f: &Path| {
        let s = std::fs::read_to_string(f).ok()?;
        s.trim().parse::<std::net::SocketAddr>().ok()
    };
    let (grpc, http) = poll_until("the replica's addresses", Duration::from_secs(20), || {
        Some((read(&addr_file)?, read(&http_file)?))
    });
    (proc, grpc.to_string(), http.port())
}

#[test]
fn off_loopback_the_page_needs_mutual_tls_and_a_viewer() {
    // Without TLS, the scheduler refuses before it touches the store.
    let refused = run_drover(&[
        "scheduler",
        "--etcd",
        &format!("http://{}", closed_loopback_addr()),
        "--http-listen",
        "0.0.0.0:0",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        err.contains("--http-listen") && err.contains("needs mutual TLS"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    ok(&["tls", "init", "--dir", pki_s]);
    ok(&[
        "tls", "issue", "--dir", pki_s, "--role", "viewer", "--name", "vera",
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let _stop_store = stop.clone().drop_guard();
    let store_url = rt.block_on(async {
        let etcd = EmbeddedEtcd::open(&dir.path().join("store")).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(etcd.serve(l, stop.clone()));
        url
    });
    // The first replica listens on every address; the test only
    // connects to loopback.
    let (_leader, grpc, port) = replica(dir.path(), &pki, &store_url, "0.0.0.0:0", "a");

    // No client certificate: the handshake fails, no page.
    let none = curl(&pki, port, None);
    let out = String::from_utf8_lossy(&none.stdout);
    assert!(
        !none.status.success(),
        "served without a certificate: {out}"
    );
    assert!(!out.contains("Drover"), "{out}");
    // The agent's certificate has no person's role: 403.
    let agent = curl(&pki, port, Some("agent"));
    let out = String::from_utf8_lossy(&agent.stdout);
    assert!(out.ends_with("\n403"), "{agent:?}");
    assert!(out.contains("needs the viewer role"), "{out}");

    // A viewer sees the page once this replica leads.
    let out = poll_until("the leader's page for a viewer", WAIT, || {
        let got = curl(&pki, port, Some("user-vera"));
        let out = String::from_utf8_lossy(&got.stdout).into_owned();
        (got.status.success() && out.contains("id=\"role\">leader<")).then_some(out)
    });
    assert!(out.ends_with("\n200"), "{out}");
    assert!(out.contains("<section id=\"nodes\">"), "{out}");
    // The events come from the audit trail: admins only.
    assert!(out.contains("only admins may read"), "{out}");
    let admin = curl(&pki, port, Some("cli"));
    let out = String::from_utf8_lossy(&admin.stdout);
    assert!(out.ends_with("\n200"), "{admin:?}");
    assert!(out.contains("<section id=\"events\">"), "{out}");
    assert!(!out.contains("only admins may read"), "{out}");

    // A second replica follows: its page shows no state, and names the
    // leader.
    let (_follower, _, port) = replica(dir.path(), &pki, &store_url, "127.0.0.1:0", "b");
    let got = curl(&pki, port, Some("user-vera"));
    let out = String::from_utf8_lossy(&got.stdout);
    assert!(out.ends_with("\n200"), "{got:?}");
    assert!(out.contains("id=\"role\">follower<"), "{out}");
    assert!(
        out.contains(&format!("<code id=\"leader\">{grpc}</code>")),
        "{out}"
    );
    assert!(!out.contains("<section id=\"nodes\">"), "{out}");
}
