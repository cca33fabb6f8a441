//! `drover deployment status|promote|fail JOB`, `drover job history JOB`,
//! `drover job revert JOB VERSION`, and how `drover job run` follows a
//! deployment: a live view per group on a terminal, a plain line per
//! change otherwise, an error when it fails.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use drover_proto::v1 as pb;
use serde_json::json;
use tonic::transport::Channel;

use crate::connect::{channel, status_error};
use crate::{ClientOpts, Output};

/// How often `job run` looks at a deployment it follows.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

async fn client(
    opts: &ClientOpts,
) -> Result<pb::deployment_service_client::DeploymentServiceClient<Channel>> {
    Ok(pb::deployment_service_client::DeploymentServiceClient::new(
        channel(opts).await?,
    ))
}

async fn get(
    c: &mut pb::deployment_service_client::DeploymentServiceClient<Channel>,
    job: &str,
    version: u64,
) -> Result<Option<pb::Deployment>> {
    let got = c
        .get(pb::GetDeploymentRequest {
            job: job.to_string(),
            version,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(got.deployment)
}

/// One line per group: desired, placed, healthy, unhealthy, canaries.
fn group_lines(d: &pb::Deployment) -> Vec<String> {
    d.groups
        .iter()
        .map(|g| {
            let canaries = if g.desired_canaries > 0 {
                format!(
                    "  canaries {}/{}{}",
                    g.canaries,
                    g.desired_canaries,
                    if g.promoted { " (promoted)" } else { "" }
                )
            } else {
                String::new()
            };
            format!(
                "  group {:<12} desired {:<3} placed {:<3} healthy {:<3} unhealthy {:<3}{canaries}",
                g.name, g.desired, g.placed, g.healthy, g.unhealthy
            )
        })
        .collect()
}

fn headline(d: &pb::Deployment) -> String {
    format!(
        "deployment of {} version {}: {} ({})",
        d.job, d.version, d.status, d.description
    )
}

fn deployment_json(d: &pb::Deployment) -> serde_json::Value {
    json!({
        "job": d.job, "version": d.version, "status": d.status,
        "description": d.description, "revert": d.revert, "reverted_to": d.reverted_to,
        "groups": d.groups.iter().map(|g| json!({
            "name": g.name, "desired": g.desired, "placed": g.placed, "healthy": g.healthy,
            "unhealthy": g.unhealthy, "desired_canaries": g.desired_canaries,
            "canaries": g.canaries, "promoted": g.promoted,
        })).collect::<Vec<_>>(),
    })
}

fn print(opts: &ClientOpts, d: &pb::Deployment) {
    match opts.output {
        Output::Json => crate::output::json(&deployment_json(d)),
        Output::Table => {
            outln!("{}", headline(d));
            for l in group_lines(d) {
                outln!("{l}");
            }
        }
    }
}

/// `drover job status`'s view of the job's latest deployment: its
/// headline and one line per group, `None` when it has none (or the
/// scheduler cannot say: the job's own status is what was asked for).
pub async fn latest_lines(opts: &ClientOpts, job: &str) -> Option<Vec<String>> {
    let mut c = client(opts).await.ok()?;
    let d = get(&mut c, job, 0).await.ok()??;
    let mut lines = vec![headline(&d)];
    lines.extend(group_lines(&d));
    Some(lines)
}

/// Follows job `job`'s deployment of `version` until it ends, if there is
/// one; fails when it does not succeed.
pub async fn follow(opts: &ClientOpts, job: &str, version: u64) -> Result<()> {
    let mut c = client(opts).await?;
    let live = opts.output == Output::Table && std::io::stdout().is_terminal();
    let mut shown: Vec<String> = Vec::new();
    loop {
        let Some(d) = get(&mut c, job, version).await? else {
            return Ok(());
        };
        let mut lines = vec![headline(&d)];
        lines.extend(group_lines(&d));
        if lines != shown && opts.output == Output::Table {
            if live {
                let mut out = std::io::stdout().lock();
                if !shown.is_empty() {
                    // Back to the first line of the view, then redraw it.
                    let _ = write!(out, "\x1b[{}A", shown.len());
                }
                for l in &lines {
                    let _ = writeln!(out, "\x1b[2K{l}");
                }
                let _ = out.flush();
            } else {
                for l in &lines {
                    outln!("{l}");
                }
            }
            shown = lines;
        }
        match d.status.as_str() {
            "running" => tokio::time::sleep(FOLLOW_EVERY).await,
            "successful" => return Ok(()),
            _ if d.reverted_to > 0 => bail!(
                "deployment of job {job:?} version {version} {}: {}; reverted to version {}",
                d.status,
                d.description,
                d.reverted_to
            ),
            _ => bail!(
                "deployment of job {job:?} version {version} {}: {}",
                d.status,
                d.description
            ),
        }
    }
}

/// `drover deployment status JOB`.
pub async fn status(opts: &ClientOpts, job: &str) -> Result<()> {
    let mut c = client(opts).await?;
    match get(&mut c, job, 0).await? {
        Some(d) => print(opts, &d),
        None => bail!("job {job:?} has no deployment (a group needs an update strategy)"),
    }
    Ok(())
}

/// `drover deployment promote JOB`.
pub async fn promote(opts: &ClientOpts, job: &str) -> Result<()> {
    let mut c = client(opts).await?;
    let got = c
        .promote(pb::PromoteRequest {
            job: job.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if let Some(d) = got.deployment {
        print(opts, &d);
    }
    Ok(())
}

/// `drover deployment fail JOB`.
pub async fn fail(opts: &ClientOpts, job: &str) -> Result<()> {
    let mut c = client(opts).await?;
    let got = c
        .fail(pb::FailDeploymentRequest {
            job: job.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match (opts.output, &got.deployment) {
        (Output::Table, Some(d)) => print(opts, d),
        (Output::Table, None) => {}
        (Output::Json, d) => crate::output::json(&json!({
            "job": job,
            "deployment": d.as_ref().map(deployment_json),
            "reverted_to": got.reverted_to,
        })),
    }
    if got.reverted_to > 0 && opts.output == Output::Table {
        outln!("reverted to version {}", got.reverted_to);
    }
    Ok(())
}

/// `drover job history JOB`.
pub async fn history(opts: &ClientOpts, job: &str) -> Result<()> {
    let mut c = client(opts).await?;
    let got = c
        .history(pb::JobHistoryRequest {
            job: job.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => crate::output::json(
            &got.versions
                .iter()
                .map(|v| json!({"version": v.version, "submitted_unix_ms": v.submitted_unix_ms, "stable": v.stable, "summary": v.summary}))
                .collect::<Vec<_>>(),
        ),
        Output::Table => {
            outln!("VERSION  STABLE  CHANGES");
            for v in &got.versions {
                outln!("{:<7}  {:<6}  {}", v.version, v.stable, v.summary);
            }
        }
    }
    Ok(())
}

/// `drover job revert JOB VERSION`: then follows the new version's
/// deployment as `job run` does.
pub async fn revert(opts: &ClientOpts, job: &str, version: u64, detach: bool) -> Result<()> {
    let mut c = client(opts).await?;
    let got = c
        .revert(pb::RevertJobRequest {
            job: job.to_string(),
            version,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if opts.output == Output::Table {
        outln!(
            "job {job:?} reverted to version {version}'s spec as version {}",
            got.version
        );
    }
    if !detach {
        follow(opts, job, got.version).await?;
    }
    if opts.output == Output::Json {
        crate::output::json(&json!({
            "job": job,
            "reverted_from_version": version,
            "version": got.version,
        }));
    }
    Ok(())
}
