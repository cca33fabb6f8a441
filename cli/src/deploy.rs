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

/// How long `job run` waits before watching a deployment again when the
/// scheduler ended the watch early (a new leader), and how many times in
/// a row it tries before giving up.
const REWATCH_AFTER: Duration = Duration::from_millis(250);
const REWATCH_TRIES: u32 = 40;

/// What `job run` shows of a deployment it follows: a view redrawn in
/// place on a terminal, a plain block of lines per change otherwise.
struct View {
    live: bool,
    table: bool,
    shown: Vec<String>,
}

impl View {
    fn show(&mut self, d: &pb::Deployment) {
        let mut lines = vec![headline(d)];
        lines.extend(group_lines(d));
        if lines == self.shown || !self.table {
            return;
        }
        if self.live {
            let mut out = std::io::stdout().lock();
            if !self.shown.is_empty() {
                // Back to the first line of the view, then redraw it.
                let _ = write!(out, "\x1b[{}A", self.shown.len());
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
        self.shown = lines;
    }
}

/// How one watch of a deployment ended.
enum Watched {
    /// The deployment is over (or there is none): how it ended.
    Over(Option<pb::Deployment>),
    /// The scheduler ended the watch first (`progressed`: after at least
    /// one message).
    Broken { why: String, progressed: bool },
}

/// Follows job `job`'s deployment of `version` until it ends, if there is
/// one, over the scheduler's watch stream (each change is shown as it
/// happens); fails when it does not succeed.
pub async fn follow(opts: &ClientOpts, job: &str, version: u64) -> Result<()> {
    let mut view = View {
        live: opts.output == Output::Table && std::io::stdout().is_terminal(),
        table: opts.output == Output::Table,
        shown: Vec::new(),
    };
    let mut tries = 0;
    loop {
        match watch_once(opts, job, version, &mut view).await? {
            Watched::Over(None) => return Ok(()),
            Watched::Over(Some(d)) => return outcome(job, version, &d),
            Watched::Broken { why, progressed } => {
                tries = if progressed { 1 } else { tries + 1 };
                if tries > REWATCH_TRIES {
                    bail!("lost the scheduler while following the deployment of job {job:?} version {version}: {why}");
                }
                tracing::debug!(%why, tries, "deployment watch ended early; watching again");
                tokio::time::sleep(REWATCH_AFTER).await;
            }
        }
    }
}

/// One watch of the deployment, shown on `view` as it changes.
async fn watch_once(
    opts: &ClientOpts,
    job: &str,
    version: u64,
    view: &mut View,
) -> Result<Watched> {
    let broken = |why: String, progressed| Ok(Watched::Broken { why, progressed });
    let mut c = match client(opts).await {
        Ok(c) => c,
        Err(e) => return broken(format!("{e:#}"), false),
    };
    let request = pb::WatchDeploymentRequest {
        job: job.to_string(),
        version,
    };
    let mut stream = match c.watch(request).await {
        Ok(s) => s.into_inner(),
        Err(s) if transient(&s) => return broken(s.message().to_string(), false),
        Err(s) => return Err(status_error(s)),
    };
    let mut progressed = false;
    loop {
        let got = match stream.message().await {
            Ok(Some(got)) => got,
            Ok(None) => return broken("the watch ended".into(), progressed),
            Err(s) if transient(&s) => return broken(s.message().to_string(), progressed),
            Err(s) => return Err(status_error(s)),
        };
        progressed = true;
        let Some(d) = got.deployment else {
            return Ok(Watched::Over(None));
        };
        view.show(&d);
        if d.status != "running" {
            return Ok(Watched::Over(Some(d)));
        }
    }
}

/// A refusal that watching again may mend (a leader change, a stream cut).
fn transient(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

/// `Ok` for a successful deployment; the error `job run` ends with
/// otherwise.
fn outcome(job: &str, version: u64, d: &pb::Deployment) -> Result<()> {
    match d.status.as_str() {
        "successful" => Ok(()),
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
