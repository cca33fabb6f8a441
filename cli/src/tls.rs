//! Mutual TLS for every Drover gRPC connection, and `drover tls init`.
//!
//! The scheduler presents a server certificate and requires a client
//! certificate signed by the cluster CA; agents and the CLI present theirs.
//! Without TLS configured, Drover serves on loopback only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Server-side TLS flags (`drover scheduler`).
#[derive(Args, Debug, Clone, Default)]
pub struct ServerTls {
    /// PEM certificate the scheduler presents.
    #[arg(long, env = "DROVER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DROVER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates (agents, CLI) must be signed by.
    #[arg(long, env = "DROVER_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Client-side TLS flags (agents and the CLI).
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA the scheduler's certificate must be signed by.
    #[arg(long, env = "DROVER_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate to present.
    #[arg(long, env = "DROVER_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DROVER_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
}

/// Reads a PEM file named by `flag`, the error naming both.
pub(crate) fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
}

impl ServerTls {
    /// The server config, `None` when no TLS flag is given; an error when
    /// only some are (a half-configured TLS must not silently fall back).
    pub fn load(&self) -> Result<Option<ServerTlsConfig>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                let identity =
                    Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
                Ok(Some(
                    ServerTlsConfig::new()
                        .identity(identity)
                        .client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?)),
                ))
            }
            _ => bail!(
                "mutual TLS needs all of --tls-cert, --tls-key and --tls-client-ca \
                 (create them with `drover tls init`)"
            ),
        }
    }
}

impl ClientTls {
    /// The node `--tls-cert` is bound to (`drover tls agent --node ID`),
    /// `None` without one or for a shared certificate.
    pub fn bound_node(&self) -> Result<Option<String>> {
        match &self.tls_cert {
            None => Ok(None),
            Some(cert) => Ok(drover_scheduler::auth::bound_node_pem(&read(
                "--tls-cert",
                cert,
            )?)),
        }
    }

    /// The client config, `None` when no TLS flag is given.
    pub fn load(&self) -> Result<Option<ClientTlsConfig>> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?))
                    .identity(Identity::from_pem(
                        read("--tls-cert", cert)?,
                        read("--tls-key", key)?,
                    )),
            )),
            _ => bail!(
                "mutual TLS needs all of --tls-ca, --tls-cert and --tls-key \
                 (create them with `drover tls init`)"
            ),
        }
    }
}

/// Flags of `drover tls agent`.
#[derive(Args, Debug)]
pub struct AgentCertArgs {
    #[command(flatten)]
    pub out: crate::output::OutputOpt,
    /// Directory of `drover tls init` (its `ca.pem` and `ca-key.pem` sign
    /// the certificate, which is written there too).
    #[arg(long)]
    pub dir: PathBuf,
    /// The node id the certificate is for (the agent's
    /// `<data-dir>/node-id`; an agent that has none yet takes this one).
    #[arg(long)]
    pub node: String,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Issues `agent-<node>.pem` and `agent-<node>-key.pem`: an agent
/// certificate bound to one node (see `drover_scheduler::auth`).
pub fn agent_cert(a: &AgentCertArgs) -> Result<Vec<PathBuf>> {
    let node = a.node.as_str();
    if node.is_empty()
        || node.len() > 63
        || node.starts_with('-')
        || node.ends_with('-')
        || !node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--node {node:?} is not a node id (a DNS label: a-z, 0-9 and '-', at most 63)");
    }
    let ca_pem = String::from_utf8(read("--dir", &a.dir.join("ca.pem"))?)
        .map_err(|_| anyhow!("{}: not a PEM file", a.dir.join("ca.pem").display()))?;
    let key_pem = String::from_utf8(read("--dir", &a.dir.join("ca-key.pem"))?)
        .map_err(|_| anyhow!("{}: not a PEM file", a.dir.join("ca-key.pem").display()))?;
    let ca_key = KeyPair::from_pem(&key_pem)
        .map_err(|e| anyhow!("{}: {e}", a.dir.join("ca-key.pem").display()))?;
    let ca = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| anyhow!("{}: {e}", a.dir.join("ca.pem").display()))?;
    let name = format!("{node}{}", drover_scheduler::auth::NODE_NAME_SUFFIX);
    let mut p = params("drover-agent", vec![name])?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(|e| anyhow!("generating a key: {e}"))?;
    let cert = p
        .signed_by(&key, &ca)
        .map_err(|e| anyhow!("signing the agent certificate: {e}"))?;
    let (cert_name, key_name) = (format!("agent-{node}.pem"), format!("agent-{node}-key.pem"));
    write(&a.dir, &cert_name, &cert.pem(), false, a.force)?;
    write(&a.dir, &key_name, &key.serialize_pem(), true, a.force)?;
    Ok(vec![a.dir.join(cert_name), a.dir.join(key_name)])
}

/// Flags of `drover tls init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub out: crate::output::OutputOpt,
    /// Directory to write the CA and certificates into.
    #[arg(long)]
    pub dir: PathBuf,
    /// Extra DNS names or IP addresses the scheduler is reached at
    /// (`localhost` and `127.0.0.1` are always included).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Certificate parameters with common name `cn`, organisation `drover`.
pub(crate) fn params(cn: &str, sans: Vec<String>) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans).map_err(|e| anyhow!("certificate names: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "drover");
    p.distinguished_name = dn;
    Ok(p)
}

/// Writes `pem` to `dir/name` (0600 when `private`), refusing to replace
/// an existing file unless `force`.
pub(crate) fn write(dir: &Path, name: &str, pem: &str, private: bool, force: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(if private { 0o600 } else { 0o644 });
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!("{} exists; pass --force to replace it", path.display())
        } else {
            anyhow!("cannot write {}: {e}", path.display())
        }
    })?;
    // The mode whatever the umask, and for a file replaced with --force.
    let mode = if private { 0o600 } else { 0o644 };
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .and_then(|_| f.write_all(pem.as_bytes()))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A new self-signed CA named `cn`, and its private key in PEM.
pub(crate) fn new_ca(cn: &str) -> Result<(CertifiedIssuer<'static, KeyPair>, String)> {
    let mut ca_params = params(cn, Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(|e| anyhow!("generating a key: {e}"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)
        .map_err(|e| anyhow!("signing the CA {cn:?}: {e}"))?;
    Ok((ca, ca_key_pem))
}

/// Refuses a `--host` that is neither an IP address nor a DNS name.
pub(crate) fn check_hosts(hosts: &[String]) -> Result<()> {
    for h in hosts {
        if h.parse::<IpAddr>().is_err()
            && !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            bail!("--host {h:?} is neither an IP address nor a DNS name");
        }
    }
    Ok(())
}

/// Creates a cluster CA, a scheduler server certificate and client
/// certificates for agents and the CLI.
pub fn init(a: &InitArgs) -> Result<Vec<PathBuf>> {
    check_hosts(&a.hosts)?;
    // 0700: it holds the CA's key.
    drover_agent::private_fs::private_dir(&a.dir)
        .with_context(|| format!("cannot create {} (0700)", a.dir.display()))?;
    let gen = || KeyPair::generate().map_err(|e| anyhow!("generating a key: {e}"));
    let (ca, ca_key_pem) = new_ca("drover cluster CA")?;

    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    sans.extend(a.hosts.iter().cloned());
    let mut server = params("drover-scheduler", sans)?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = gen()?;
    let server_cert = server
        .signed_by(&server_key, &ca)
        .map_err(|e| anyhow!("signing the server certificate: {e}"))?;

    let mut files = Vec::new();
    let mut out = |name: &str, pem: &str, private: bool| -> Result<()> {
        write(&a.dir, name, pem, private, a.force)?;
        files.push(a.dir.join(name));
        Ok(())
    };
    out("ca.pem", &ca.pem(), false)?;
    out("ca-key.pem", &ca_key_pem, true)?;
    out("scheduler.pem", &server_cert.pem(), false)?;
    out("scheduler-key.pem", &server_key.serialize_pem(), true)?;
    for role in ["agent", "cli"] {
        let mut p = params(&format!("drover-{role}"), Vec::new())?;
        if role == "cli" {
            // The bootstrap credential: an admin (drover tls issue makes
            // certificates of lesser roles for people).
            let admin = drover_scheduler::access::Role::Admin;
            p.subject_alt_names.push(role_san(admin)?);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = gen()?;
        let cert = p
            .signed_by(&key, &ca)
            .map_err(|e| anyhow!("signing the {role} certificate: {e}"))?;
        out(&format!("{role}.pem"), &cert.pem(), false)?;
        out(&format!("{role}-key.pem"), &key.serialize_pem(), true)?;
    }
    Ok(files)
}

/// The subject alternative name that grants `role`.
pub(crate) fn role_san(role: drover_scheduler::access::Role) -> Result<rcgen::SanType> {
    let uri = rcgen::string::Ia5String::try_from(role.uri())
        .map_err(|e| anyhow!("role URI {}: {e}", role.uri()))?;
    Ok(rcgen::SanType::URI(uri))
}
