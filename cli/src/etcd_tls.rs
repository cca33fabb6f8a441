//! TLS and client certificates towards etcd: the `--etcd-ca`,
//! `--etcd-cert` and `--etcd-key` flags of every component that talks to
//! etcd (`drover scheduler`, `drover dns`), and `drover tls etcd`, which
//! issues an etcd CA, a server certificate for the etcd members and one
//! client certificate per Drover role.
//!
//! With etcd's `--client-cert-auth` and auth enabled, the common name of a
//! client certificate is the etcd user it acts as; `deploy/etcd-rbac.sh`
//! creates those users and gives each role only its prefixes:
//!
//! | certificate           | etcd user          | may                                  |
//! |-----------------------|--------------------|--------------------------------------|
//! | `etcd-scheduler.pem`  | `drover-scheduler` | read and write `/drover/`, `/skydns/` |
//! | `etcd-dns.pem`        | `drover-dns`       | read `/skydns/`                      |
//! | `etcd-root.pem`       | `root`             | everything (setup only)              |
//!
//! Agents never talk to etcd: the scheduler relays what they need.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use etcd_client::{Certificate, Identity, TlsOptions};
use rcgen::{ExtendedKeyUsagePurpose, KeyPair};

use crate::tls::{check_hosts, new_ca, params, read, write};

/// TLS flags towards etcd.
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdTlsArgs {
    /// PEM CA that etcd's server certificate must be signed by. Turns TLS
    /// towards etcd on: every --etcd endpoint must then be https://.
    #[arg(long, env = "DROVER_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate presented to etcd (its common name is the
    /// etcd user, with etcd's --client-cert-auth). Needs --etcd-ca.
    #[arg(long, env = "DROVER_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, env = "DROVER_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The TLS options for `endpoints`, `None` for plain text. Refuses a
    /// mix that would fail later with a less clear message: an https://
    /// endpoint without a CA, a CA with an http:// endpoint, a certificate
    /// without its key.
    pub fn load(&self, endpoints: &[String]) -> Result<Option<TlsOptions>> {
        let Some(ca) = &self.etcd_ca else {
            if self.etcd_cert.is_some() || self.etcd_key.is_some() {
                bail!("--etcd-cert and --etcd-key need --etcd-ca (the CA that signed etcd's certificate)");
            }
            if let Some(e) = endpoints.iter().find(|e| e.starts_with("https://")) {
                bail!("etcd endpoint {e} is https:// but no --etcd-ca names the CA that signed its certificate");
            }
            return Ok(None);
        };
        if let Some(e) = endpoints.iter().find(|e| !e.starts_with("https://")) {
            bail!("--etcd-ca is given but etcd endpoint {e} is not https://; write it as https://HOST:PORT");
        }
        let mut tls =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("--etcd-ca", ca)?));
        match (&self.etcd_cert, &self.etcd_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("--etcd-cert", cert)?,
                    read("--etcd-key", key)?,
                ));
            }
            _ => bail!("--etcd-cert and --etcd-key go together"),
        }
        Ok(Some(tls))
    }
}

/// Flags of `drover tls etcd`.
#[derive(Args, Debug)]
pub struct EtcdCertArgs {
    #[command(flatten)]
    pub out: crate::output::OutputOpt,
    /// Directory to write the etcd CA and certificates into.
    #[arg(long)]
    pub dir: PathBuf,
    /// Extra DNS names or IP addresses the etcd members are reached at
    /// (`localhost` and `127.0.0.1` are always included).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// The client certificates `drover tls etcd` issues: file stem and common
/// name (the etcd user).
pub const ETCD_CLIENTS: &[(&str, &str)] = &[
    ("etcd-root", "root"),
    ("etcd-scheduler", "drover-scheduler"),
    ("etcd-dns", "drover-dns"),
];

/// Creates an etcd CA of its own (a Drover API certificate must not open
/// etcd, nor an etcd one the API), a server certificate the etcd members
/// use for clients and peers, and the client certificates of
/// [`ETCD_CLIENTS`].
pub fn etcd_certs(a: &EtcdCertArgs) -> Result<Vec<PathBuf>> {
    check_hosts(&a.hosts)?;
    // 0700: it holds the etcd CA's key.
    drover_agent::private_fs::private_dir(&a.dir)
        .map_err(|e| anyhow!("cannot create {} (0700): {e}", a.dir.display()))?;
    let gen = || KeyPair::generate().map_err(|e| anyhow!("generating a key: {e}"));
    let (ca, ca_key_pem) = new_ca("drover etcd CA")?;

    let mut files = Vec::new();
    let mut out = |dir: &Path, name: String, pem: &str, private: bool| -> Result<()> {
        write(dir, &name, pem, private, a.force)?;
        files.push(dir.join(name));
        Ok(())
    };
    out(&a.dir, "etcd-ca.pem".into(), &ca.pem(), false)?;
    out(&a.dir, "etcd-ca-key.pem".into(), &ca_key_pem, true)?;

    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    sans.extend(a.hosts.iter().cloned());
    let mut server = params("etcd", sans)?;
    // Members present it to clients and to each other.
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = gen()?;
    let cert = server
        .signed_by(&key, &ca)
        .map_err(|e| anyhow!("signing the etcd server certificate: {e}"))?;
    out(&a.dir, "etcd-server.pem".into(), &cert.pem(), false)?;
    out(
        &a.dir,
        "etcd-server-key.pem".into(),
        &key.serialize_pem(),
        true,
    )?;

    for (stem, user) in ETCD_CLIENTS {
        let mut p = params(user, Vec::new())?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = gen()?;
        let cert = p
            .signed_by(&key, &ca)
            .map_err(|e| anyhow!("signing the {user} certificate: {e}"))?;
        out(&a.dir, format!("{stem}.pem"), &cert.pem(), false)?;
        out(
            &a.dir,
            format!("{stem}-key.pem"),
            &key.serialize_pem(),
            true,
        )?;
    }
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(ca: bool, cert: bool, key: bool) -> EtcdTlsArgs {
        let p = |on: bool, f: &str| on.then(|| PathBuf::from(f));
        EtcdTlsArgs {
            etcd_ca: p(ca, "/nonexistent/ca.pem"),
            etcd_cert: p(cert, "/nonexistent/c.pem"),
            etcd_key: p(key, "/nonexistent/k.pem"),
        }
    }

    #[test]
    fn plain_text_needs_http_endpoints_and_no_tls_flag() {
        let http = vec!["http://127.0.0.1:2379".to_string()];
        let https = vec!["https://127.0.0.1:2379".to_string()];
        assert!(args(false, false, false).load(&http).unwrap().is_none());
        let e = args(false, false, false)
            .load(&https)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("https://127.0.0.1:2379") && e.contains("--etcd-ca"),
            "{e}"
        );
        let e = args(false, true, true).load(&http).unwrap_err().to_string();
        assert!(e.contains("need --etcd-ca"), "{e}");
    }

    #[test]
    fn tls_needs_https_endpoints_readable_files_and_a_whole_identity() {
        let http = vec!["http://127.0.0.1:2379".to_string()];
        let e = args(true, false, false)
            .load(&http)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http://127.0.0.1:2379") && e.contains("https://"),
            "{e}"
        );
        let https = vec!["https://127.0.0.1:2379".to_string()];
        let e = args(true, false, false)
            .load(&https)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--etcd-ca /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn issued_certificates_name_their_etcd_users() {
        let dir = tempfile::tempdir().unwrap();
        let a = EtcdCertArgs {
            dir: dir.path().to_path_buf(),
            hosts: vec!["10.0.0.1".into()],
            force: false,
            out: crate::output::OutputOpt {
                output: crate::Output::Table,
            },
        };
        let files = etcd_certs(&a).unwrap();
        assert_eq!(files.len(), 4 + 2 * ETCD_CLIENTS.len());
        for (stem, user) in ETCD_CLIENTS {
            let pem = std::fs::read_to_string(dir.path().join(format!("{stem}.pem"))).unwrap();
            let der = rustls_pemfile_der(&pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let cn = cert.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), *user);
        }
        // Nothing is overwritten without --force.
        assert!(etcd_certs(&a).unwrap_err().to_string().contains("--force"));
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let p = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1;
        p.contents
    }
}
