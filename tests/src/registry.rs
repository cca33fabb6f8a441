//! [`TestRegistry`]: Debian's `docker-registry` (the distribution
//! registry) on a free loopback port, with TLS (a CA made by
//! `drover tls init`) and basic auth (an htpasswd file made by
//! `htpasswd`), filled with `skopeo copy` from OCI layouts built here
//! ([`Layer`], [`write_layout`]) out of busybox.
//!
//! Dropping the registry kills its process by pid and removes its
//! directory, also when a test panics.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::dev::DevCluster;
use crate::drover_bin;

/// The user the registry's htpasswd file lets in.
pub const REGISTRY_USER: &str = "drover";
/// That user's password.
pub const REGISTRY_PASSWORD: &str = "pull-secret-1";

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running registry and its directory.
pub struct TestRegistry {
    child: Child,
    dir: TempDir,
    addr: String,
}

impl TestRegistry {
    /// Makes the CA, certificate and htpasswd file, and starts the
    /// registry on a free loopback port; waits until it accepts
    /// connections.
    pub fn start() -> Result<TestRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("drover-registry-")
            .tempdir()
            .context("tempdir")?;
        let tls = dir.path().join("tls");
        let out = Command::new(drover_bin())
            .args(["tls", "init", "--dir"])
            .arg(&tls)
            .stdin(Stdio::null())
            .output()
            .context("running drover tls init")?;
        ensure!(
            out.status.success(),
            "drover tls init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // skopeo reads a CA from `<dir>/*.crt`.
        let certs = dir.path().join("skopeo-certs");
        std::fs::create_dir_all(&certs)?;
        std::fs::copy(tls.join("ca.pem"), certs.join("ca.crt"))?;
        let out = Command::new("htpasswd")
            .args(["-Bbn", REGISTRY_USER, REGISTRY_PASSWORD])
            .output()
            .context("running htpasswd (apt-get install apache2-utils)")?;
        ensure!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let d = dir.path().display();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  tls:\n    certificate: {d}/tls/scheduler.pem\n    key: {d}/tls/scheduler-key.pem\n\
             auth:\n  htpasswd:\n    realm: drover-test\n    path: {d}/htpasswd\n"
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut reg = TestRegistry { child, dir, addr };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(&reg.addr).is_err() {
            if let Some(status) = reg.child.try_wait()? {
                bail!("docker-registry exited ({status}): {}", reg.log());
            }
            ensure!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}: {}",
                reg.addr,
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The CA certificate (PEM) the registry's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// The registry's log (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry stores the blob with `digest` (`sha256:...`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// Pushes the layout at `layout` as `<addr>/<name>` (`repo:tag`) with
    /// `skopeo copy`; `docker_types`: converted to Docker v2 schema 2
    /// media types. Returns the manifest digest the registry holds.
    pub fn push(&self, layout: &Path, name: &str, docker_types: bool) -> Result<String> {
        let digest_file = self.dir.path().join("pushed.digest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet"])
            .arg("--dest-creds")
            .arg(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"))
            .arg("--dest-cert-dir")
            .arg(self.dir.path().join("skopeo-certs"))
            .arg("--digestfile")
            .arg(&digest_file);
        if docker_types {
            cmd.args(["--format", "v2s2"]);
        }
        cmd.arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .stdin(Stdio::null());
        let out = cmd.output().context("running skopeo")?;
        ensure!(
            out.status.success(),
            "skopeo copy to {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(std::fs::read_to_string(&digest_file)?.trim().to_owned())
    }

    /// A `drover dev` whose node policy allows `<addr>/drover/` (`addr`:
    /// this registry's, or a proxy's in front of it), trusts this
    /// registry's CA and has its credentials (`<dir>/auth.json`, returned
    /// too); `policy`: more policy lines (an `[images]` table); `flags`:
    /// more `drover dev` flags.
    ///
    /// # Panics
    ///
    /// When a file cannot be written (a test harness).
    pub fn dev_cluster(
        &self,
        dir: &Path,
        addr: &str,
        policy: &str,
        flags: &[&str],
    ) -> (DevCluster, PathBuf) {
        let auth = dir.join("auth.json");
        self.write_auth_file(&auth, REGISTRY_PASSWORD)
            .expect("auth file");
        let text = std::fs::read_to_string(&auth).expect("auth file");
        std::fs::write(&auth, text.replace(self.addr(), addr)).expect("auth file");
        let file = dir.join("policy.toml");
        std::fs::write(
            &file,
            format!(
                "allowed_images = [\"{addr}/drover/\"]\n\
                 [registries]\nauth_file = {auth:?}\n\
                 [registries.ca_files]\n\"{addr}\" = {ca:?}\n{policy}\n",
                auth = auth.display().to_string(),
                ca = self.ca_file().display().to_string(),
            ),
        )
        .expect("policy");
        let mut args = vec!["--policy", file.to_str().expect("utf-8 path")];
        args.extend_from_slice(flags);
        (DevCluster::start_with(&args), auth)
    }

    /// A docker `config.json` with `password` for this registry, at
    /// `path`.
    pub fn write_auth_file(&self, path: &Path, password: &str) -> Result<()> {
        let auth = base64_encode(format!("{REGISTRY_USER}:{password}").as_bytes());
        std::fs::write(
            path,
            serde_json::to_vec(&json!({"auths": {self.addr.clone(): {"auth": auth}}}))?,
        )?;
        Ok(())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // By pid: the child is ours.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A gzipped layer blob and its digest.
pub struct Layer {
    /// The `.tar.gz` bytes.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Layer {
    /// Packs `dir` (its content as the layer's root) with `tar` and
    /// `gzip -n`, using `work` for the files.
    pub fn pack(dir: &Path, work: &Path, name: &str) -> Result<Layer> {
        let tar = work.join(format!("{name}.tar"));
        let out = Command::new("tar")
            .args(["--numeric-owner", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(dir)
            .arg(".")
            .output()
            .context("running tar")?;
        ensure!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("gzip").arg("-nf").arg(&tar).output()?;
        ensure!(out.status.success(), "gzip failed");
        let bytes = std::fs::read(tar.with_extension("tar.gz"))?;
        Ok(Layer {
            digest: sha256_digest(&bytes),
            bytes,
        })
    }

    /// A busybox base layer: `/bin/busybox` and `applets` linked to it.
    pub fn busybox(work: &Path, applets: &[&str]) -> Result<Layer> {
        let dir = work.join("busybox-root");
        crate::runtime::busybox_tree(&dir, applets)?;
        Layer::pack(&dir, work, "busybox")
    }

    /// A layer holding only `/marker` with `content`.
    pub fn marker(work: &Path, name: &str, content: &str) -> Result<Layer> {
        let dir = work.join(format!("{name}-root"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("marker"), content)?;
        Layer::pack(&dir, work, name)
    }
}

/// An OCI layout at `path` with one linux/<this arch> image of `layers`
/// (bottom first) whose config sets `PATH=/bin`.
pub fn write_layout(path: &Path, layers: &[&Layer]) -> Result<()> {
    let blobs = path.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> Result<String> {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes)?;
        Ok(digest)
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut descs = Vec::new();
    for l in layers {
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put(&l.bytes)?,
            "size": l.bytes.len(),
        }));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh", "-c", "cat /marker"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(&config)?,
            "size": config.len(),
        },
        "layers": descs,
    }))?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put(&manifest)?,
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }],
    });
    std::fs::write(path.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        path.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}

/// The names in `dir`, sorted; none when it does not exist.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
