//! Store servers for the e2e tests and the benchmark: a real etcd
//! ([`RealEtcd`], the Debian `etcd-server` binary) and the embedded server
//! in this process ([`Embedded`]) or in a child process ([`EmbeddedChild`]).
//!
//! Every server runs on loopback ports chosen by the kernel, in a data
//! directory of its own, and is stopped (by pid) and its directory removed
//! when its guard drops, even when the test fails.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use drover_store::embedded::{CancellationToken, EmbeddedEtcd, EmbeddedHandle};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::time::Instant;

/// Where the Debian `etcd-server` package installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long a server may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(25);
/// Start attempts when a chosen port was taken in the meantime.
const START_ATTEMPTS: usize = 4;

/// A port that was free a moment ago. Another process may take it before
/// it is used, so callers retry on a bind failure.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr()
        .context("reading a probe listener's address")?
        .port())
}

/// Connects a client, polling until the server answers a `Status` call or
/// `deadline` passes.
pub async fn wait_ready(endpoint: &str, deadline: Duration) -> Result<Client> {
    wait_ready_with(endpoint, deadline, None).await
}

/// [`wait_ready`] over TLS with `tls`.
pub async fn wait_ready_with(
    endpoint: &str,
    deadline: Duration,
    tls: Option<TlsOptions>,
) -> Result<Client> {
    let end = Instant::now() + deadline;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        opts = opts.with_tls(tls);
    }
    loop {
        let last = match Client::connect([endpoint], Some(opts.clone())).await {
            Ok(mut c) => match c.status().await {
                Ok(_) => return Ok(c),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() > end {
            bail!("{endpoint} did not answer within {deadline:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A real etcd 3.4 on loopback with a temporary data directory.
#[derive(Debug)]
pub struct RealEtcd {
    child: Child,
    endpoint: String,
    peer: String,
    dir: tempfile::TempDir,
    /// The `drover tls etcd` directory when clients must use TLS and a
    /// client certificate.
    certs: Option<std::path::PathBuf>,
}

impl RealEtcd {
    /// Starts `/usr/bin/etcd` and waits until a client can use it.
    pub async fn start() -> Result<Self> {
        Self::start_with(None).await
    }

    /// Starts etcd serving clients over TLS only, requiring a client
    /// certificate signed by the etcd CA of `certs` (the directory of
    /// `drover tls etcd`), and waits until the root certificate can use it.
    pub async fn start_tls(certs: &Path) -> Result<Self> {
        Self::start_with(Some(certs)).await
    }

    async fn start_with(certs: Option<&Path>) -> Result<Self> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(certs).await {
                Ok(etcd) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("etcd never started")))
    }

    async fn try_start(certs: Option<&Path>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("drover-etcd-")
            .tempdir()
            .context("creating etcd's temp dir")?;
        let scheme = if certs.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let child = Self::spawn(dir.path(), &endpoint, &peer, certs)?;
        let mut etcd = RealEtcd {
            child,
            endpoint,
            peer,
            dir,
            certs: certs.map(Path::to_path_buf),
        };
        etcd.wait_serving().await?;
        Ok(etcd)
    }

    /// Starts etcd on `client` and `peer` with its data under `dir`,
    /// appending to `dir/etcd.log`.
    fn spawn(dir: &Path, client: &str, peer: &str, certs: Option<&Path>) -> Result<Child> {
        let log_path = dir.join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .with_context(|| format!("duplicating {}", log_path.display()))?;
        let mut cmd = Command::new(ETCD_BIN);
        if let Some(c) = certs {
            cmd.arg("--cert-file")
                .arg(c.join("etcd-server.pem"))
                .arg("--key-file")
                .arg(c.join("etcd-server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(c.join("etcd-ca.pem"))
                .arg("--client-cert-auth");
        }
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", client])
            .args(["--advertise-client-urls", client])
            .args(["--listen-peer-urls", peer])
            .args(["--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("spawning {ETCD_BIN}"))
    }

    /// Waits until the running child answers, failing early if it exits.
    async fn wait_serving(&mut self) -> Result<()> {
        let log_path = self.dir.path().join("etcd.log");
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting on etcd")? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                bail!("etcd exited with {status} before serving; log tail:\n{tail}");
            }
            let tls = self.client_tls("etcd-root")?;
            if wait_ready_with(&self.endpoint, Duration::from_millis(300), tls)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > end {
                bail!(
                    "etcd at {} not ready within {START_DEADLINE:?}",
                    self.endpoint
                );
            }
        }
    }

    /// The etcd process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// etcd's `--data-dir`.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Kills etcd (SIGKILL, by pid) and waits for it to end; its data
    /// stays for [`RealEtcd::restart`].
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("killing etcd")?;
        self.child.wait().context("reaping etcd")?;
        Ok(())
    }

    /// Starts etcd again on the same ports and data after
    /// [`RealEtcd::kill`], and waits until it serves.
    pub async fn restart(&mut self) -> Result<()> {
        self.child = Self::spawn(
            self.dir.path(),
            &self.endpoint,
            &self.peer,
            self.certs.as_deref(),
        )?;
        self.wait_serving().await
    }

    /// TLS options presenting the client certificate `stem` (`etcd-root`,
    /// `etcd-scheduler`, `etcd-dns`) of a TLS etcd; `None` for plain text.
    pub fn client_tls(&self, stem: &str) -> Result<Option<TlsOptions>> {
        let Some(c) = &self.certs else {
            return Ok(None);
        };
        let read = |name: String| {
            let path = c.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(Some(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read("etcd-ca.pem".into())?))
                .identity(Identity::from_pem(
                    read(format!("{stem}.pem"))?,
                    read(format!("{stem}-key.pem"))?,
                )),
        ))
    }

    /// The client URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The client URL as an endpoint list.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// The temporary directory holding the data and `etcd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The embedded server running in this process on a loopback port, over a
/// temporary data directory (or one the caller owns).
#[derive(Debug)]
pub struct Embedded {
    addr: SocketAddr,
    stop: CancellationToken,
    handle: EmbeddedHandle,
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    /// Opens a fresh store in a temp dir and serves it.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("drover-embedded-")
            .tempdir()
            .context("creating the embedded store's temp dir")?;
        let mut e = Self::start_in(dir.path()).await?;
        e._dir = Some(dir);
        Ok(e)
    }

    /// Opens the store in `dir` (kept on drop) and serves it.
    pub async fn start_in(dir: &Path) -> Result<Self> {
        let etcd = EmbeddedEtcd::open(dir)
            .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
        let handle = etcd.handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("reading the listener address")?;
        let stop = CancellationToken::new();
        tokio::spawn(etcd.serve(listener, stop.clone()));
        let endpoint = format!("http://{addr}");
        wait_ready(&endpoint, START_DEADLINE).await?;
        Ok(Self {
            addr,
            stop,
            handle,
            _dir: None,
        })
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The client URL as an endpoint list.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// Live watcher count and durable revision.
    pub fn handle(&self) -> &EmbeddedHandle {
        &self.handle
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The embedded server in a child process (the `embedded_store` binary of
/// this crate), so a test can `kill -9` it.
#[derive(Debug)]
pub struct EmbeddedChild {
    child: Child,
    endpoint: String,
}

impl EmbeddedChild {
    /// Runs `bin` on `data_dir`, reads the port it prints, and waits until
    /// a client can use it.
    pub async fn start(bin: &Path, data_dir: &Path) -> Result<Self> {
        Self::start_on(bin, data_dir, None).await
    }

    /// [`EmbeddedChild::start`] on a given address (to restart a server
    /// where its clients expect it), retrying while the port is still
    /// held by the process being replaced.
    pub async fn start_on(bin: &Path, data_dir: &Path, addr: Option<SocketAddr>) -> Result<Self> {
        Self::start_with_env(bin, data_dir, addr, &[]).await
    }

    /// [`EmbeddedChild::start_on`] with extra environment variables for
    /// the child (the `embedded_store` binary reads its snapshot options
    /// from some).
    pub async fn start_with_env(
        bin: &Path,
        data_dir: &Path,
        addr: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let end = Instant::now() + START_DEADLINE;
        loop {
            match Self::spawn(bin, data_dir, addr, env).await {
                Ok(c) => return Ok(c),
                // The old process may still hold the port for a moment.
                Err(_) if addr.is_some() && Instant::now() < end => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn spawn(
        bin: &Path,
        data_dir: &Path,
        addr: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg(data_dir).envs(env.iter().copied());
        if let Some(a) = addr {
            cmd.arg(a.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe from {}", bin.display()))?;
        let stderr = child.stderr.take();
        // Reading the first line blocks; do it off the runtime with a
        // deadline so a child that never prints cannot hang the test.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let r = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
            // Keep draining so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut guard = EmbeddedChild {
            child,
            endpoint: String::new(),
        };
        let line = match tokio::time::timeout(START_DEADLINE, rx).await {
            Ok(Ok(Ok(line))) => line,
            other => {
                let _ = guard.child.kill();
                let mut err = String::new();
                if let Some(mut s) = stderr {
                    let _ = s.read_to_string(&mut err);
                }
                bail!(
                    "{} on {} printed no address ({other:?}); stderr: {err}",
                    bin.display(),
                    data_dir.display()
                );
            }
        };
        if let Some(s) = stderr {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut BufReader::new(s), &mut std::io::sink());
            });
        }
        let addr: SocketAddr = line
            .trim()
            .parse()
            .with_context(|| format!("{} printed {line:?}, not an address", bin.display()))?;
        guard.endpoint = format!("http://{addr}");
        wait_ready(&guard.endpoint, START_DEADLINE).await?;
        Ok(guard)
    }

    /// The client URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The address it serves on.
    pub fn addr(&self) -> Result<SocketAddr> {
        let a = self.endpoint.trim_start_matches("http://");
        a.parse()
            .with_context(|| format!("endpoint {} is not an address", self.endpoint))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (polling, up to `within`) for the child to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().context("polling the child")? {
                return Ok(status);
            }
            if Instant::now() >= end {
                bail!("pid {} still running after {within:?}", self.child.id());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) -> Result<()> {
        self.child
            .kill()
            .with_context(|| format!("SIGKILL to pid {}", self.child.id()))?;
        self.child
            .wait()
            .with_context(|| format!("reaping pid {}", self.child.id()))?;
        Ok(())
    }
}

impl Drop for EmbeddedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
