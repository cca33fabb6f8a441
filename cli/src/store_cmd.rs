//! `drover store backup|restore`: a backup of the embedded store (the one
//! `drover dev` serves) and its restore into an empty data directory.
//! `etcdctl snapshot save` writes the same backup file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use drover_store::embedded::{restore, FILE_MODE};

use crate::Output;

/// The embedded store's backups.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Save a consistent backup of a running embedded store (what
    /// `etcdctl snapshot save` also writes).
    Backup {
        /// The store's client URL, e.g. http://127.0.0.1:2379 (drover dev
        /// writes it to <data-dir>/store.addr).
        #[arg(long)]
        endpoint: String,
        /// Where to write the backup (mode 0600; replaced atomically).
        file: PathBuf,
        #[command(flatten)]
        out: crate::output::OutputOpt,
    },
    /// Install a backup as the store of a stopped `drover dev` data
    /// directory that holds no store yet (the store goes to <DIR>/store).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// drover dev's --data-dir.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        out: crate::output::OutputOpt,
    },
}

/// Runs a `drover store` command.
pub async fn run(cmd: StoreCommand) -> Result<()> {
    match cmd {
        StoreCommand::Backup {
            endpoint,
            file,
            out,
        } => {
            let bytes = backup(&endpoint, &file).await?;
            match out.output {
                Output::Json => crate::output::json(&serde_json::json!({
                    "file": file.display().to_string(), "bytes": bytes,
                })),
                Output::Table => outln!("saved a {bytes}-byte backup to {}", file.display()),
            }
            Ok(())
        }
        StoreCommand::Restore {
            file,
            data_dir,
            out,
        } => {
            let image =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let dir = data_dir.join("store");
            let r = restore(&image, &file, &dir)
                .with_context(|| format!("restoring {} into {}", file.display(), dir.display()))?;
            match out.output {
                Output::Json => crate::output::json(&serde_json::json!({
                    "keys": r.keys, "revision": r.revision, "dir": dir.display().to_string(),
                })),
                Output::Table => outln!(
                    "restored {} keys at revision {} into {}",
                    r.keys,
                    r.revision,
                    dir.display()
                ),
            }
            Ok(())
        }
    }
}

/// Saves the backup; returns its size in bytes.
async fn backup(endpoint: &str, file: &Path) -> Result<usize> {
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .with_context(|| format!("connecting to the store at {endpoint}"))?;
    let mut stream = client
        .snapshot()
        .await
        .with_context(|| format!("asking {endpoint} for a snapshot"))?;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut bytes = 0usize;
    let mut done = false;
    while let Some(msg) = stream
        .message()
        .await
        .with_context(|| format!("reading the snapshot from {endpoint}"))?
    {
        out.write_all(msg.blob())
            .with_context(|| format!("writing {}", tmp.display()))?;
        bytes += msg.blob().len();
        done = msg.remaining_bytes() == 0;
    }
    if !done {
        bail!("the snapshot stream from {endpoint} ended early after {bytes} bytes");
    }
    out.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))?;
    Ok(bytes)
}
