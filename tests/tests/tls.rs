//! Mutual TLS with the real binaries: `drover tls init` makes the material,
//! `drover scheduler` refuses to serve off loopback without it, and with it
//! accepts only clients whose certificate the cluster CA signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use drover_store::embedded::{CancellationToken, EmbeddedEtcd};
use drover_tests::drover_bin;

/// Kills the child by pid when dropped, even if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drover(args: &[&str]) -> Output {
    Command::new(drover_bin())
        .args(args)
        .env_remove("DROVER_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `drover node list -o json` against `https` with the cluster CA from `ca`
/// and the `role` certificate from `certs`.
fn node_list_as(https: &str, ca: &Path, certs: &Path, role: &str) -> Output {
    drover(&[
        "node",
        "list",
        "-o",
        "json",
        "--addr",
        https,
        "--tls-ca",
        &p(ca, "ca.pem"),
        "--tls-cert",
        &p(certs, &format!("{role}.pem")),
        "--tls-key",
        &p(certs, &format!("{role}-key.pem")),
    ])
}

fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

struct Store {
    url: String,
    stop: CancellationToken,
    _rt: tokio::runtime::Runtime,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn embedded_store(dir: &Path) -> Store {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let url = rt.block_on(async {
        let etcd = EmbeddedEtcd::open(dir).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(etcd.serve(l, stop.clone()));
        url
    });
    Store { url, stop, _rt: rt }
}

#[test]
fn scheduler_requires_mutual_tls_off_loopback_and_checks_client_certs() {
    let dir = tempfile::tempdir().unwrap();
    let pki: PathBuf = dir.path().join("pki");
    let out = drover(&["tls", "init", "--dir", pki.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A second init refuses to overwrite the CA.
    let again = drover(&["tls", "init", "--dir", pki.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists; pass --force"),
        "{}",
        stderr(&again)
    );

    let store = embedded_store(&dir.path().join("store"));

    // Off loopback without TLS: refused before anything listens.
    let plain = drover(&["scheduler", "--etcd", &store.url, "--listen", "0.0.0.0:0"]);
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("serving off loopback needs mutual TLS"),
        "{}",
        stderr(&plain)
    );
    // Half a TLS configuration is an error, not a silent fallback.
    let half = drover(&[
        "scheduler",
        "--etcd",
        &store.url,
        "--tls-cert",
        &p(&pki, "scheduler.pem"),
    ]);
    assert!(!half.status.success());
    assert!(stderr(&half).contains("needs all of"), "{}", stderr(&half));

    let addr_file = dir.path().join("addr");
    let _sched = Proc(
        Command::new(drover_bin())
            .args([
                "scheduler",
                "--etcd",
                &store.url,
                "--listen",
                "127.0.0.1:0",
                "--addr-file",
                addr_file.to_str().unwrap(),
                "--tls-cert",
                &p(&pki, "scheduler.pem"),
                "--tls-key",
                &p(&pki, "scheduler-key.pem"),
                "--tls-client-ca",
                &p(&pki, "ca.pem"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = wait_file(&addr_file);
    let https = format!("https://{addr}");

    let ok = node_list_as(&https, &pki, &pki, "cli");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "[]");

    // Plaintext: refused, with a hint about TLS.
    let plain = drover(&["node", "list", "--addr", &addr]);
    assert!(!plain.status.success());
    assert!(stderr(&plain).contains("mutual TLS"), "{}", stderr(&plain));

    // A certificate from another CA: refused.
    let other = dir.path().join("other");
    assert!(drover(&["tls", "init", "--dir", other.to_str().unwrap()])
        .status
        .success());
    let foreign = node_list_as(&https, &pki, &other, "cli");
    assert!(
        !foreign.status.success(),
        "a foreign client certificate was accepted"
    );
    // Refused by the server at the transport (the client sees its
    // handshake alert, a broken pipe or a closed connection, whichever
    // comes first), not by the API; the message says what to check.
    let why = stderr(&foreign);
    assert!(
        why.contains("the scheduler closed the connection (")
            && why.contains("signed by the cluster CA"),
        "{why}"
    );

    // No client certificate at all: refused.
    let anonymous = drover(&["node", "list", "--addr", &https]);
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).contains("--tls-ca"),
        "{}",
        stderr(&anonymous)
    );

    // Roles: an agent's certificate cannot use the user API...
    let as_agent = node_list_as(&https, &pki, &pki, "agent");
    assert!(
        !as_agent.status.success(),
        "an agent certificate listed nodes"
    );
    assert!(
        stderr(&as_agent).contains(
            "NodeService/List needs the viewer role; drover-agent is an agent certificate"
        ),
        "{}",
        stderr(&as_agent)
    );
    // ...and a user's certificate cannot register as a node.
    let err = register_as(&https, &pki, "cli", "intruder").unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
}

/// Starts `drover scheduler` with the mutual TLS material in `pki` (plus
/// `extra` flags); returns it and its `https://` address.
fn tls_scheduler(dir: &Path, store: &str, pki: &Path, extra: &[&str]) -> (Proc, String) {
    let addr_file = dir.join(format!("addr-{}", extra.len()));
    let mut args = vec![
        "scheduler".to_owned(),
        "--etcd".to_owned(),
        store.to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--addr-file".to_owned(),
        addr_file.display().to_string(),
        "--tls-cert".to_owned(),
        p(pki, "scheduler.pem"),
        "--tls-key".to_owned(),
        p(pki, "scheduler-key.pem"),
        "--tls-client-ca".to_owned(),
        p(pki, "ca.pem"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let proc = Proc(
        Command::new(drover_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = wait_file(&addr_file);
    (proc, format!("https://{addr}"))
}

/// Registers as node `id` over `AgentService.Connect` with the client
/// certificate `<pki>/<cert>.pem`; `Ok` once the scheduler answered
/// `Registered`.
fn register_as(https: &str, pki: &Path, cert: &str, id: &str) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = drover_tests::try_mtls_channel(https, pki, cert)
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connecting: {e:?}")))?;
        let mut agents = drover_proto::v1::agent_service_client::AgentServiceClient::new(channel);
        let register = drover_proto::v1::AgentMessage {
            msg: Some(drover_proto::v1::agent_message::Msg::Register(
                drover_proto::v1::Register {
                    node: Some(drover_proto::v1::Node {
                        id: id.into(),
                        address: "127.0.0.1".into(),
                        cpu_millis: 1000,
                        memory_mb: 1024,
                        ..Default::default()
                    }),
                    running: vec![],
                    partial_assignments: false,
                    partial_peers: false,
                },
            )),
        };
        // The stream stays open while we read the answer.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(register).await.unwrap();
        let mut down = agents
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = down.message().await?;
        drop(tx);
        match first.and_then(|m| m.msg) {
            Some(drover_proto::v1::scheduler_message::Msg::Registered(_)) => Ok(()),
            other => panic!("expected Registered, got {other:?}"),
        }
    })
}

#[test]
fn agent_certificates_bound_to_a_node_register_only_as_that_node() {
    let dir = tempfile::tempdir().unwrap();
    let pki: PathBuf = dir.path().join("pki");
    assert!(drover(&["tls", "init", "--dir", pki.to_str().unwrap()])
        .status
        .success());
    let out = drover(&[
        "tls",
        "agent",
        "--dir",
        pki.to_str().unwrap(),
        "--node",
        "node-a",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pki.join("agent-node-a.pem").is_file());
    assert!(pki.join("agent-node-a-key.pem").is_file());
    let bad = drover(&[
        "tls",
        "agent",
        "--dir",
        pki.to_str().unwrap(),
        "--node",
        "Node_A",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("is not a node id"),
        "{}",
        stderr(&bad)
    );
    // A directory without a CA is named.
    let none = drover(&["tls", "agent", "--dir", "/nonexistent", "--node", "node-a"]);
    assert!(!none.status.success());
    assert!(stderr(&none).contains("ca.pem"), "{}", stderr(&none));

    let store = embedded_store(&dir.path().join("store"));
    let (_sched, https) = tls_scheduler(dir.path(), &store.url, &pki, &[]);
    // Another CA's certificate for node-a registers nothing: `mixed` trusts
    // the cluster's CA but presents a node-a certificate of another CA.
    let other = dir.path().join("other");
    assert!(drover(&["tls", "init", "--dir", other.to_str().unwrap()])
        .status
        .success());
    assert!(drover(&[
        "tls",
        "agent",
        "--dir",
        other.to_str().unwrap(),
        "--node",
        "node-a"
    ])
    .status
    .success());
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(pki.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    for f in ["agent-node-a.pem", "agent-node-a-key.pem"] {
        std::fs::copy(other.join(f), mixed.join(f)).unwrap();
    }
    let err = register_as(&https, &mixed, "agent-node-a", "node-a").unwrap_err();
    // The server ends the connection in the handshake (the certificate's
    // signature does not verify against the cluster CA; both CAs are named
    // alike): a transport error, where a certificate of the cluster's that
    // names another node gets PERMISSION_DENIED from the API (below).
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Unavailable
        ),
        "{err:?}"
    );
    // The bound certificate works for its node only.
    let err = register_as(&https, &pki, "agent-node-a", "node-b").unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.message().contains("for node \"node-a\"") && err.message().contains("\"node-b\""),
        "{err}"
    );
    register_as(&https, &pki, "agent-node-a", "node-a").unwrap();
    // The shared certificate of `tls init` still registers anywhere here.
    register_as(&https, &pki, "agent", "node-c").unwrap();

    // With --require-node-certs it does not. (A cluster of its own: on the
    // same prefix it would be a follower of the first scheduler.)
    let (_strict, strict) = tls_scheduler(
        dir.path(),
        &store.url,
        &pki,
        &["--require-node-certs", "--prefix", "/drover-strict/"],
    );
    let err = register_as(&strict, &pki, "agent", "node-c").unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("--require-node-certs"), "{err}");
    register_as(&strict, &pki, "agent-node-a", "node-a").unwrap();
}
