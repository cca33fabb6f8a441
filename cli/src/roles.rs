//! `drover tls issue`: a certificate for a person, with a role (see
//! `drover_scheduler::access`).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use drover_scheduler::access::Role;
use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair};

use crate::tls::{params, read, role_san, write};

/// The roles `--role` takes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArg {
    /// Lists and reads status and logs.
    Viewer,
    /// Also runs, stops and reverts jobs, forces periodic jobs, promotes
    /// and fails deployments.
    Operator,
    /// Also execs, drains and manages nodes, reads the audit trail.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Operator => Role::Operator,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Flags of `drover tls issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    #[command(flatten)]
    pub out: crate::output::OutputOpt,
    /// Directory of `drover tls init` (its `ca.pem` and `ca-key.pem` sign
    /// the certificate, which is written there too, as `user-NAME.pem`).
    #[arg(long)]
    pub dir: PathBuf,
    /// What the holder may do.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Who holds it: the certificate's common name, as the audit trail
    /// names the caller (letters, digits, `.`, `_`, `@`, `-`).
    #[arg(long)]
    pub name: String,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Refuses a name that is not a plain identifier, or that a Drover
/// component's certificate uses.
fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
        && !name.starts_with(['.', '-']);
    if !plain {
        bail!(
            "--name {name:?} is not a plain name (1 to 64 of letters, digits, '.', '_', '@', '-', \
             not starting with '.' or '-')"
        );
    }
    if name.starts_with("drover-") {
        bail!(
            "--name {name:?}: names starting with \"drover-\" are the cluster's own certificates"
        );
    }
    Ok(())
}

/// Issues `user-NAME.pem` and `user-NAME-key.pem`: a client certificate
/// for a person, its role as the subject alternative name URI
/// `urn:drover:role:ROLE`.
pub fn issue(a: &IssueArgs) -> Result<Vec<PathBuf>> {
    check_name(&a.name)?;
    let role = Role::from(a.role);
    let ca_path = a.dir.join("ca.pem");
    let key_path = a.dir.join("ca-key.pem");
    let ca_pem = String::from_utf8(read("--dir", &ca_path)?)
        .map_err(|_| anyhow!("{}: not a PEM file", ca_path.display()))?;
    let key_pem = String::from_utf8(read("--dir", &key_path)?)
        .map_err(|_| anyhow!("{}: not a PEM file", key_path.display()))?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| anyhow!("{}: {e}", key_path.display()))?;
    let ca = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| anyhow!("{}: {e}", ca_path.display()))?;
    let mut p = params(&a.name, Vec::new())?;
    p.subject_alt_names.push(role_san(role)?);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(|e| anyhow!("generating a key: {e}"))?;
    let cert = p
        .signed_by(&key, &ca)
        .map_err(|e| anyhow!("signing the certificate of {:?}: {e}", a.name))?;
    let (cert_name, key_name) = (
        format!("user-{}.pem", a.name),
        format!("user-{}-key.pem", a.name),
    );
    write(&a.dir, &cert_name, &cert.pem(), false, a.force)?;
    write(&a.dir, &key_name, &key.serialize_pem(), true, a.force)?;
    Ok(vec![a.dir.join(cert_name), a.dir.join(key_name)])
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_plain_and_not_the_clusters_own() {
        for ok in ["alice", "ci-bot", "alice@example.org", "a.b_c"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "drover-cli", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
