//! Roles for people under mutual TLS, with the real binaries: `drover tls
//! issue` makes viewer, operator and admin certificates; the scheduler
//! answers every method of every service it serves to each certificate as
//! its access rule says (PERMISSION_DENIED naming the method, the role it
//! needs and the caller's, or through to the method); and the audit trail
//! names who ran, stopped and exec'd what.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use drover_scheduler::access::{authorize, Caller, Kind, Role};
use drover_store::embedded::{CancellationToken, EmbeddedEtcd};
use drover_tests::{drover_bin, poll_until, run_drover};
use prost::Message as _;
use serde_json::Value;
use tonic::codegen::http::uri::PathAndQuery;

/// Kills the child by pid when dropped, even if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scheduler under mutual TLS on an embedded store, and certificates of
/// each kind: `cli` and `agent` of `tls init`, `user-vera` (viewer),
/// `user-otto` (operator), `user-ada` (admin).
struct TlsCluster {
    dir: tempfile::TempDir,
    https: String,
    rt: tokio::runtime::Runtime,
    _sched: Proc,
    _stop_store: tokio_util::sync::DropGuard,
}

/// The certificates, with who each is.
fn holders() -> Vec<(&'static str, Caller)> {
    let person = |name: &str, role| Caller {
        name: name.into(),
        kind: Kind::Person(role),
    };
    vec![
        ("user-vera", person("vera", Role::Viewer)),
        ("user-otto", person("otto", Role::Operator)),
        ("user-ada", person("ada", Role::Admin)),
        ("cli", person("drover-cli", Role::Admin)),
        (
            "agent",
            Caller {
                name: "drover-agent".into(),
                kind: Kind::Agent,
            },
        ),
    ]
}

fn ok(args: &[&str]) -> String {
    let out = run_drover(args);
    assert!(
        out.status.success(),
        "drover {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pki_s = pki.to_str().unwrap();
        ok(&["tls", "init", "--dir", pki_s]);
        for (name, role) in [("vera", "viewer"), ("otto", "operator"), ("ada", "admin")] {
            let files = ok(&[
                "tls", "issue", "--dir", pki_s, "--role", role, "--name", name,
            ]);
            assert!(files.contains(&format!("user-{name}.pem")), "{files}");
            use std::os::unix::fs::PermissionsExt;
            let key = pki.join(format!("user-{name}-key.pem"));
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        // A second issue refuses to replace the files; a component's name
        // is refused.
        let again = run_drover(&[
            "tls", "issue", "--dir", pki_s, "--role", "admin", "--name", "vera",
        ]);
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("--force"),
            "{again:?}"
        );
        let own = run_drover(&[
            "tls",
            "issue",
            "--dir",
            pki_s,
            "--role",
            "admin",
            "--name",
            "drover-cli",
        ]);
        assert!(!own.status.success());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stop = CancellationToken::new();
        let store_url = rt.block_on(async {
            let etcd = EmbeddedEtcd::open(&dir.path().join("store")).unwrap();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(etcd.serve(l, stop.clone()));
            url
        });
        let addr_file = dir.path().join("addr");
        let file = |n: &str| pki.join(n).display().to_string();
        let sched = Proc(
            Command::new(drover_bin())
                .args(["scheduler", "--etcd", &store_url, "--listen", "127.0.0.1:0"])
                .args(["--addr-file", addr_file.to_str().unwrap()])
                .args(["--tls-cert", &file("scheduler.pem")])
                .args(["--tls-key", &file("scheduler-key.pem")])
                .args(["--tls-client-ca", &file("ca.pem")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = poll_until("the scheduler's address", Duration::from_secs(20), || {
            let s = std::fs::read_to_string(&addr_file).ok()?;
            s.ends_with('\n').then(|| s.trim().to_owned())
        });
        TlsCluster {
            https: format!("https://{addr}"),
            dir,
            rt,
            _sched: sched,
            _stop_store: stop.drop_guard(),
        }
    }

    fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// `drover ARGS` as the holder of certificate `stem`.
    fn cli_as(&self, stem: &str, args: &[&str]) -> Output {
        let pki = self.pki();
        let file = |n: String| pki.join(n).display().to_string();
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--addr".into(),
            self.https.clone(),
            "--tls-ca".into(),
            file("ca.pem".into()),
            "--tls-cert".into(),
            file(format!("{stem}.pem")),
            "--tls-key".into(),
            file(format!("{stem}-key.pem")),
        ]);
        run_drover(&all)
    }
}

/// Every method of the services the scheduler serves: its path and whether
/// requests and answers are streams.
fn methods() -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    for set in [
        drover_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        for f in set.file {
            for s in &f.service {
                for m in &s.method {
                    out.push((
                        format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                        m.client_streaming(),
                        m.server_streaming(),
                    ));
                }
            }
        }
    }
    out
}

/// Calls `path` with an empty message (a stream of one for streaming
/// requests); the status it ended with, `Ok` when it was answered or its
/// stream opened.
async fn call_empty(
    channel: tonic::transport::Channel,
    path: &str,
    client_streaming: bool,
    server_streaming: bool,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let p = PathAndQuery::try_from(path.to_owned()).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let one = || tonic::Request::new(tokio_stream::iter(vec![()]));
    let res = match (client_streaming, server_streaming) {
        (false, false) => grpc
            .unary(tonic::Request::new(()), p, codec)
            .await
            .map(drop),
        (false, true) => grpc
            .server_streaming(tonic::Request::new(()), p, codec)
            .await
            .map(drop),
        (true, false) => grpc.client_streaming(one(), p, codec).await.map(drop),
        (true, true) => grpc.streaming(one(), p, codec).await.map(drop),
    };
    res.err().unwrap_or_else(|| tonic::Status::ok(""))
}

#[test]
fn every_method_answers_each_certificate_as_its_rule_says() {
    let c = TlsCluster::start();
    let methods = methods();
    assert!(methods.len() > 20, "{methods:?}");
    for (stem, caller) in holders() {
        let channel =
            c.rt.block_on(drover_tests::mtls_channel(&c.https, &c.pki(), stem));
        for (path, cs, ss) in &methods {
            let status = c.rt.block_on(async {
                // A call let through may wait for more of its stream (an
                // agent's, without a registration): that is through too.
                tokio::time::timeout(
                    Duration::from_secs(10),
                    call_empty(channel.clone(), path, *cs, *ss),
                )
                .await
                .unwrap_or_else(|_| tonic::Status::deadline_exceeded("still open"))
            });
            let method = path.trim_start_matches('/');
            match authorize(path, &caller) {
                Ok(_) => assert_ne!(
                    status.code(),
                    tonic::Code::PermissionDenied,
                    "{stem} was refused {method}: {status:?}"
                ),
                Err(want) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::PermissionDenied,
                        "{stem} called {method}: {status:?}"
                    );
                    assert_eq!(status.message(), want.message(), "{stem} {method}");
                    assert!(status.message().contains(method), "{status:?}");
                    assert!(status.message().contains(&caller.name), "{status:?}");
                }
            }
        }
    }
}

/// Calls `AllocService.Exec` on `alloc` with `command` as the holder of
/// certificate `stem`; the status the call ended with.
fn exec_raw(c: &TlsCluster, stem: &str, alloc: &str, command: &[&str]) -> tonic::Status {
    use drover_proto::v1 as pb;
    c.rt.block_on(async {
        let channel = drover_tests::mtls_channel(&c.https, &c.pki(), stem).await;
        let mut allocs = pb::alloc_service_client::AllocServiceClient::new(channel);
        let start = pb::ExecRequest {
            start: Some(pb::ExecStart {
                alloc_id: alloc.into(),
                command: command.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        allocs
            .exec(tokio_stream::iter(vec![start]))
            .await
            .map(drop)
            .err()
            .unwrap_or_else(|| tonic::Status::ok(""))
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The entries of `drover audit -o json` as `stem`.
fn audit_as(c: &TlsCluster, stem: &str) -> Vec<Value> {
    let out = c.cli_as(stem, &["audit", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The one entry of `action` by `caller`.
fn entry<'a>(entries: &'a [Value], caller: &str, action: &str) -> &'a Value {
    let hits: Vec<&Value> = entries
        .iter()
        .filter(|e| e["caller"] == caller && e["action"] == action)
        .collect();
    assert_eq!(hits.len(), 1, "{caller} {action} in {entries:#?}");
    hits[0]
}

fn write_job(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nkind = \"service\"\n[[group]]\nname = \"main\"\n\
             [[group.task]]\nname = \"app\"\ncommand = [\"/bin/sleep\", \"3600\"]\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn refusals_name_the_role_and_the_audit_trail_names_the_caller() {
    let c = TlsCluster::start();
    let job = write_job(c.dir.path(), "web");

    // A viewer reads, and may not run.
    let out = c.cli_as("user-vera", &["job", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.cli_as("user-vera", &["job", "run", "--detach", &job]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "drover.v1.JobService/Submit needs the operator role; vera has the viewer role"
        ),
        "{}",
        stderr(&out)
    );
    // A viewer's logs request gets through the access check to the lookup.
    let out = c.cli_as("user-vera", &["logs", "nothing-here"]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("needs the"), "{}", stderr(&out));

    // An operator runs and stops, and may not exec, drain or read the trail.
    let out = c.cli_as("user-otto", &["job", "run", "--detach", &job]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.cli_as("user-otto", &["job", "stop", "--detach", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (args, method) in [
        (&["node", "drain", "n1"][..], "NodeService/Drain"),
        (&["audit"][..], "AuditService/List"),
    ] {
        let out = c.cli_as("user-otto", args);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!(
                "drover.v1.{method} needs the admin role; otto has the operator role"
            )),
            "{}",
            stderr(&out)
        );
    }

    // `drover exec` looks the allocation up first (a viewer's call), so the
    // Exec method itself is called directly: refused to the operator...
    let refused = exec_raw(&c, "user-otto", "web-x", &["true"]);
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(
            "drover.v1.AllocService/Exec needs the admin role; otto has the operator role"
        ),
        "{refused:?}"
    );
    // ...and let through for the admin (there is no such allocation here:
    // the command line is recorded all the same, with the outcome).
    let missing = exec_raw(&c, "user-ada", "web-x", &["sh", "-c", "echo hi"]);
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    let entries = audit_as(&c, "user-ada");
    check_trail(&entries);
    // The bootstrap certificate of `tls init` is an admin; --since bounds.
    assert_eq!(audit_as(&c, "cli").len(), entries.len());
    let out = c.cli_as("cli", &["audit", "--since", "1h", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.cli_as("cli", &["audit", "--since", "soon"]);
    assert!(stderr(&out).contains("like 90s"), "{}", stderr(&out));
    let table = c.cli_as("cli", &["audit"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("TIME"), "{text}");
    assert!(text.contains("command: sh -c 'echo hi'"), "{text}");
}

/// The entries `refusals_name_the_role_and_the_audit_trail_names_the_caller`
/// left: who ran, stopped, exec'd and was refused what.
fn check_trail(entries: &[Value]) {
    let run = entry(entries, "otto", "job run");
    assert_eq!(run["role"], "operator");
    assert_eq!(run["target"], "job web");
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["method"], "drover.v1.JobService/Submit");
    assert!(
        run["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{run}"
    );
    let stop = entry(entries, "otto", "job stop");
    assert_eq!(
        (&stop["target"], &stop["outcome"]),
        (&"job web".into(), &"ok".into())
    );
    let exec = entry(entries, "ada", "exec");
    assert_eq!(exec["role"], "admin");
    assert_eq!(exec["target"], "alloc web-x");
    assert_eq!(exec["detail"], "command: sh -c 'echo hi'");
    assert!(
        exec["outcome"].as_str().unwrap().starts_with("NotFound"),
        "{exec}"
    );
    // Refusals of audited calls are in the trail too; reads are not.
    let refused = entry(entries, "vera", "job run");
    assert!(
        refused["outcome"]
            .as_str()
            .unwrap()
            .starts_with("PermissionDenied"),
        "{refused}"
    );
    entry(entries, "otto", "exec");
    entry(entries, "otto", "node drain");
    assert!(entries.iter().all(|e| e["action"] != ""), "{entries:#?}");
    // Oldest first.
    let times: Vec<i64> = entries
        .iter()
        .map(|e| e["time_unix_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}
