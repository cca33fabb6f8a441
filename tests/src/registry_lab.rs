//! Registries for the transfer tests ([`LabRegistry`]): Debian's
//! `docker-registry` on a free loopback port, plain HTTP or TLS, with no
//! authentication or with bearer tokens from a realm the test runs
//! ([`crate::registry_token`]); stopped and restarted by pid on the same
//! port and data. [`CutProxy`] sits between the agent and a plain-HTTP
//! registry, logs every request line and `Range` header it forwards and
//! cuts one blob's transfer after a set number of bytes.
//! [`LayoutWriter`] builds OCI layouts with any layer media type, several
//! platforms and nested indexes, for `skopeo copy --all`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::drover_bin;
use crate::registry::sha256_digest;

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How clients authenticate to a [`LabRegistry`].
pub enum LabAuth {
    /// Anyone pulls and pushes.
    None,
    /// Bearer tokens: `realm` issues them, signed by the key of the
    /// certificate in `bundle` (PEM), for `service` and from `issuer`.
    Token {
        /// The token endpoint's URL.
        realm: String,
        /// The registry's name in the tokens' `aud`.
        service: String,
        /// The tokens' `iss`.
        issuer: String,
        /// PEM certificates the registry trusts to sign tokens.
        bundle: PathBuf,
    },
}

/// A registry process with its own directory, restartable on its port.
pub struct LabRegistry {
    child: Mutex<Option<Child>>,
    dir: TempDir,
    addr: String,
    tls: bool,
}

impl LabRegistry {
    /// Starts a registry on a free loopback port, with TLS (a CA made by
    /// `drover tls init`, see [`LabRegistry::ca_file`]) or plain HTTP.
    pub fn start(tls: bool, auth: &LabAuth) -> Result<LabRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("drover-lab-registry-")
            .tempdir()
            .context("tempdir")?;
        let d = dir.path().display().to_string();
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {d}/data\n\
             http:\n  addr: {addr}\n"
        );
        if tls {
            let out = Command::new(drover_bin())
                .args(["tls", "init", "--dir"])
                .arg(dir.path().join("tls"))
                .stdin(Stdio::null())
                .output()
                .context("running drover tls init")?;
            ensure!(
                out.status.success(),
                "drover tls init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let certs = dir.path().join("skopeo-certs");
            std::fs::create_dir_all(&certs)?;
            std::fs::copy(dir.path().join("tls/ca.pem"), certs.join("ca.crt"))?;
            config.push_str(&format!(
                "  tls:\n    certificate: {d}/tls/scheduler.pem\n    key: {d}/tls/scheduler-key.pem\n"
            ));
        }
        if let LabAuth::Token {
            realm,
            service,
            issuer,
            bundle,
        } = auth
        {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
                 issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config)?;
        let reg = LabRegistry {
            child: Mutex::new(None),
            dir,
            addr,
            tls,
        };
        reg.spawn()?;
        Ok(reg)
    }

    /// Starts the process (again) and waits until it listens.
    fn spawn(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(&self.addr).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("docker-registry exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "docker-registry did not listen on {}: {}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.child.lock().expect("registry lock") = Some(child);
        Ok(())
    }

    /// Kills the process (by its pid) and waits for it: the port refuses
    /// connections afterwards.
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().expect("registry lock").take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the stopped registry again, on the same port and data.
    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The CA (PEM) of a TLS registry's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// The registry's log, access log included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Copies `source` (a skopeo source such as `oci:/layout` or
    /// `oci:/layout:ref`) to `<addr>/<name>` with `skopeo copy ARGS`;
    /// `creds`: `user:password` for the push. Returns the digest of the
    /// manifest or index pushed.
    pub fn push(
        &self,
        source: &str,
        name: &str,
        creds: Option<&str>,
        args: &[&str],
    ) -> Result<String> {
        let digest_file = self.dir.path().join("pushed.digest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet"])
            .args(args)
            .arg("--digestfile")
            .arg(&digest_file);
        if let Some(c) = creds {
            cmd.arg("--dest-creds").arg(c);
        }
        if self.tls {
            cmd.arg("--dest-cert-dir")
                .arg(self.dir.path().join("skopeo-certs"));
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        cmd.arg(source)
            .arg(format!("docker://{}/{name}", self.addr))
            .stdin(Stdio::null());
        let out = cmd.output().context("running skopeo")?;
        ensure!(
            out.status.success(),
            "skopeo copy {source} to {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(std::fs::read_to_string(&digest_file)?.trim().to_owned())
    }
}

impl LabRegistry {
    /// The manifest or index `<addr>/<name>` names, as the registry
    /// serves it (`skopeo inspect --raw`).
    pub fn raw_manifest(&self, name: &str, creds: Option<&str>) -> Result<Value> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw"]);
        if let Some(c) = creds {
            cmd.arg("--creds").arg(c);
        }
        if self.tls {
            cmd.arg("--cert-dir")
                .arg(self.dir.path().join("skopeo-certs"));
        } else {
            cmd.arg("--tls-verify=false");
        }
        let out = cmd
            .arg(format!("docker://{}/{name}", self.addr))
            .stdin(Stdio::null())
            .output()
            .context("running skopeo inspect")?;
        ensure!(
            out.status.success(),
            "skopeo inspect {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for LabRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request the [`CutProxy`] forwarded.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GET /v2/... HTTP/1.1`.
    pub line: String,
    /// The value of its `Range` header, if it had one.
    pub range: Option<String>,
}

/// When to cut: the response to the first request whose line contains
/// `path` is cut after `after` bytes (headers included), then `on_cut`
/// runs, before the agent's side of the connection is closed.
struct Cut {
    path: String,
    after: u64,
    on_cut: Option<Box<dyn FnOnce() + Send>>,
}

struct ProxyState {
    upstream: String,
    cut: Mutex<Option<Cut>>,
    seen: Mutex<Vec<SeenRequest>>,
    conns: Mutex<Vec<TcpStream>>,
    stopping: AtomicBool,
}

/// A loopback TCP proxy in front of a plain-HTTP registry. Dropping it
/// closes its listener and every connection it holds.
pub struct CutProxy {
    addr: String,
    state: Arc<ProxyState>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: &str) -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            cut: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let s = Arc::clone(&state);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        Ok(CutProxy {
            addr,
            state,
            accept: Some(accept),
        })
    }

    /// `127.0.0.1:<port>`: the registry address the agent is given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Arms one cut: the first response to a request naming `path` is
    /// cut after `after` bytes; `on_cut` runs before the cut is seen.
    pub fn cut_once(&self, path: &str, after: u64, on_cut: Option<Box<dyn FnOnce() + Send>>) {
        *self.state.cut.lock().expect("proxy lock") = Some(Cut {
            path: path.to_owned(),
            after,
            on_cut,
        });
    }

    /// Whether an armed cut has happened.
    pub fn cut_done(&self) -> bool {
        self.state.cut.lock().expect("proxy lock").is_none()
    }

    /// The requests forwarded so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().expect("proxy lock").clone()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.state.conns.lock().expect("proxy lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Per connection: whether the response in flight is the one to cut,
/// and how many bytes of it passed.
struct Flow {
    cutting: AtomicBool,
    passed: AtomicU64,
}

fn serve(s: &Arc<ProxyState>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect(&s.upstream) else {
        // The registry is down: as a stopped server behind a balancer.
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut conns = s.conns.lock().expect("proxy lock");
        for c in [&client, &upstream] {
            if let Ok(c) = c.try_clone() {
                conns.push(c);
            }
        }
    }
    let flow = Arc::new(Flow {
        cutting: AtomicBool::new(false),
        passed: AtomicU64::new(0),
    });
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (s2, f2) = (Arc::clone(s), Arc::clone(&flow));
    let up = std::thread::spawn(move || requests(&s2, &f2, c2, u2));
    responses(s, &flow, upstream, client);
    let _ = up.join();
}

/// Agent to registry: forwards bytes, noting each request head.
fn requests(s: &ProxyState, flow: &Flow, mut client: TcpStream, mut upstream: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    let mut head = Vec::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            head.drain(..end + 4);
            let mut lines = text.lines();
            let line = lines.next().unwrap_or_default().to_owned();
            let range = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
                .map(|(_, v)| v.trim().to_owned());
            let armed = s
                .cut
                .lock()
                .expect("proxy lock")
                .as_ref()
                .is_some_and(|c| line.starts_with("GET ") && line.contains(&c.path));
            flow.passed.store(0, Ordering::SeqCst);
            flow.cutting.store(armed, Ordering::SeqCst);
            s.seen
                .lock()
                .expect("proxy lock")
                .push(SeenRequest { line, range });
        }
        if head.len() > 64 * 1024 {
            head.clear(); // not HTTP (a TLS hello): nothing to note
        }
        if upstream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
}

/// Registry to agent: forwards bytes, cutting where armed.
fn responses(s: &ProxyState, flow: &Flow, mut upstream: TcpStream, mut client: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut send = n;
        let mut cut_now = None;
        if flow.cutting.load(Ordering::SeqCst) {
            let passed = flow.passed.fetch_add(n as u64, Ordering::SeqCst);
            let mut guard = s.cut.lock().expect("proxy lock");
            if let Some(c) = guard.as_ref() {
                if passed + n as u64 >= c.after {
                    send = usize::try_from(c.after.saturating_sub(passed)).unwrap_or(n);
                    cut_now = guard.take();
                }
            }
        }
        if client.write_all(&buf[..send]).is_err() {
            break;
        }
        if let Some(mut cut) = cut_now {
            if let Some(hook) = cut.on_cut.take() {
                hook();
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}

/// Builds an OCI layout: blobs, image manifests per platform, indexes.
pub struct LayoutWriter {
    path: PathBuf,
}

/// The media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl LayoutWriter {
    /// An empty layout at `path`.
    pub fn new(path: &Path) -> Result<LayoutWriter> {
        std::fs::create_dir_all(path.join("blobs/sha256"))?;
        std::fs::write(
            path.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(LayoutWriter {
            path: path.to_owned(),
        })
    }

    /// Stores `bytes`; returns a descriptor of `media_type` for them.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Result<Value> {
        let digest = sha256_digest(bytes);
        std::fs::write(
            self.path
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            bytes,
        )?;
        Ok(json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
    }

    /// An image for `os`/`arch` of `layers` (descriptors from
    /// [`LayoutWriter::blob`], bottom first) whose config sets
    /// `PATH=/bin`; returns its manifest's descriptor with the platform.
    pub fn image(&self, os: &str, arch: &str, layers: &[Value]) -> Result<Value> {
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": os,
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))?;
        let config = self.blob("application/vnd.oci.image.config.v1+json", &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        }))?;
        let mut desc = self.blob("application/vnd.oci.image.manifest.v1+json", &manifest)?;
        desc["platform"] = json!({"architecture": arch, "os": os});
        Ok(desc)
    }

    /// An image index of `manifests`; returns its descriptor.
    pub fn index(&self, manifests: &[Value]) -> Result<Value> {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }))?;
        self.blob(OCI_INDEX, &index)
    }

    /// Writes `index.json` naming `desc` as `name`: the skopeo source is
    /// then `oci:<path>:<name>`.
    pub fn tag(&self, desc: &Value, name: &str) -> Result<String> {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        if let Some(o) = d.as_object_mut() {
            o.remove("platform");
        }
        std::fs::write(
            self.path.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [d]}))?,
        )?;
        Ok(format!("oci:{}:{name}", self.path.display()))
    }
}

/// A tar of `files` (name, content) at the archive's root, compressed by
/// `compressor` (`gzip -n`, `zstd -q`, ...) run as a filter.
pub fn layer_tar(
    work: &Path,
    name: &str,
    files: &[(&str, &[u8])],
    compressor: &[&str],
) -> Result<Vec<u8>> {
    let dir = work.join(format!("{name}-root"));
    std::fs::create_dir_all(&dir)?;
    for (f, content) in files {
        std::fs::write(dir.join(f), content)?;
    }
    pack_dir(&dir, compressor)
}

/// A busybox layer (`/bin/busybox` and `applets`) compressed by
/// `compressor`.
pub fn busybox_tar(
    work: &Path,
    name: &str,
    applets: &[&str],
    compressor: &[&str],
) -> Result<Vec<u8>> {
    let dir = work.join(format!("{name}-root"));
    crate::runtime::busybox_tree(&dir, applets)?;
    pack_dir(&dir, compressor)
}

/// `dir`'s content as a tar, compressed by `compressor`.
fn pack_dir(dir: &Path, compressor: &[&str]) -> Result<Vec<u8>> {
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-cf", "-", "-C"])
        .arg(dir)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let stdout = tar.stdout.take().context("tar stdout")?;
    let out = Command::new(compressor[0])
        .args(&compressor[1..])
        .stdin(stdout)
        .output()
        .with_context(|| format!("running {}", compressor[0]));
    let status = tar.wait()?;
    let out = out?;
    ensure!(status.success(), "tar of {} failed", dir.display());
    ensure!(
        out.status.success(),
        "{}: {}",
        compressor[0],
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// `len` bytes that do not compress (xorshift from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// This machine's architecture as OCI names it (`amd64`, `arm64`).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
