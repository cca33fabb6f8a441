//! Client commands: thin gRPC calls to the scheduler and their output.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use drover_proto::v1 as pb;
use tonic::transport::Channel;
use tonic::Code;

use crate::connect::{channel, mib, status_error};
use crate::output;
use crate::{ClientOpts, Output};

/// Reads and parses a job file (or `-` for stdin).
fn read_job(file: &Path) -> Result<pb::Job> {
    let (name, text) = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the job from standard input")?;
        ("-".to_string(), s)
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow!("cannot read job file {}: {e}", file.display()))?;
        (file.display().to_string(), text)
    };
    let job = drover_scheduler::jobfile::parse(&name, &text).map_err(|e| anyhow!("{e}"))?;
    check_request_size(&name, &job)?;
    Ok(job)
}

/// Refuses, before sending it, a job larger than the scheduler reads in
/// one request (the scheduler refuses anything over the store's limit,
/// 1.5 MiB, itself, naming it).
fn check_request_size(file: &str, job: &pb::Job) -> Result<()> {
    let bytes = prost::Message::encoded_len(job);
    if bytes > drover_proto::MAX_MESSAGE_BYTES {
        bail!(
            "{file}: job {:?} is {} encoded, over the {} the scheduler reads in one request \
             (and the state store keeps jobs of at most 1.5 MiB): split it into smaller jobs",
            job.name,
            mib(bytes),
            mib(drover_proto::MAX_MESSAGE_BYTES)
        );
    }
    Ok(())
}

async fn get_job(
    client: &mut pb::job_service_client::JobServiceClient<Channel>,
    name: &str,
) -> Result<pb::GetJobResponse> {
    Ok(client
        .get(pb::GetJobRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// How long `job run` waits for allocations when `--wait` is not given.
const DEFAULT_RUN_WAIT_S: u64 = 30;

pub async fn job_run(
    opts: &ClientOpts,
    file: &Path,
    detach: bool,
    wait: Option<u64>,
) -> Result<()> {
    // With --wait, instances queued for capacity are waited for too.
    let wait_queued = wait.is_some();
    let wait = wait.unwrap_or(DEFAULT_RUN_WAIT_S);
    let job = read_job(file)?;
    let name = job.name.clone();
    // A batch job's outcome is its allocations' end: wait for that, so
    // that a failed run fails the command.
    let batch = job.kind == "batch";
    let mut client = pb::job_service_client::JobServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    // Followed from before the submission, so that no change is missed.
    let mut follow = if detach {
        JobFollow::Poll
    } else {
        JobFollow::open(&mut client, &name).await
    };
    let mut pulls = crate::pulls::PullLines::unless_detached(opts, &name, detach);
    let resp = client
        .submit(pb::SubmitRequest { job: Some(job) })
        .await
        .map_err(status_error)?
        .into_inner();
    if !detach {
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let got = get_job(&mut client, &name).await?;
            let pending = |a: &&pb::Allocation| a.desired == "run" && a.status == "pending";
            let queued = got
                .job
                .as_ref()
                .map(|j| j.pending.as_slice())
                .unwrap_or(&[]);
            let waiting = got
                .allocations
                .iter()
                .any(|a| pending(&a) || (batch && a.desired == "run" && a.status == "running"))
                || (wait_queued && !queued.is_empty());
            if !waiting || Instant::now() >= deadline {
                // A batch job still running when the wait ends is not an
                // error; one that never started is.
                let waiting = got.allocations.iter().any(|a| pending(&a));
                crate::pulls::finish(pulls.take()).await;
                print_job(opts, &got, &resp.warnings)?;
                let failed: Vec<String> = got
                    .allocations
                    .iter()
                    .filter(|a| a.desired == "run" && a.status == "failed")
                    .map(|a| {
                        let why: Vec<String> = a
                            .tasks
                            .iter()
                            .filter(|t| !t.message.is_empty())
                            .map(|t| format!("task {}: {}", t.name, t.message))
                            .collect();
                        format!("{} failed: {}", a.name, why.join("; "))
                    })
                    .collect();
                if !failed.is_empty() {
                    bail!("{}", failed.join("\n"));
                }
                if waiting {
                    bail!("allocations of job {name:?} still pending after {wait} s");
                }
                if !queued.is_empty() {
                    let msg = crate::queued::queued_message(&name, queued);
                    if wait_queued {
                        bail!("still queued after {wait} s: {msg}");
                    }
                    bail!("{msg}");
                }
                // A changed group with an update strategy rolls out as a
                // deployment: follow it to its end.
                // (In JSON, followed silently: the job's status printed
                // above is the one document.)
                return crate::deploy::follow(opts, &name, resp.version).await;
            }
            follow.next_change(deadline).await;
        }
    }
    match opts.output {
        Output::Json => output::json(&output::submit_json(&name, &resp)),
        Output::Table => {
            outln!("job {name:?} submitted (version {})", resp.version);
            for w in &resp.warnings {
                outln!("warning: {w}");
            }
            crate::queued::pending_table(&resp.pending, crate::queued::now_ms());
            output::allocs_table(&resp.allocations);
        }
    }
    Ok(())
}

/// How `job run` and `job stop` learn that their job changed: the scheduler's `Watch`
/// stream, or polling when the server has none (an older one) or the
/// stream broke.
enum JobFollow {
    Stream(Box<tonic::Streaming<pb::JobEvent>>),
    Poll,
}

impl JobFollow {
    /// Interval of the polling fallback.
    const POLL: Duration = Duration::from_millis(200);
    /// Longest wait on the stream before looking again anyway.
    const STREAM_RECHECK: Duration = Duration::from_secs(2);

    /// Opens `Watch` on job `name`; falls back to polling on any error.
    async fn open(
        client: &mut pb::job_service_client::JobServiceClient<Channel>,
        name: &str,
    ) -> Self {
        match client
            .watch(pb::WatchJobRequest {
                name: name.to_string(),
            })
            .await
        {
            Ok(stream) => JobFollow::Stream(Box::new(stream.into_inner())),
            Err(status) => {
                if status.code() != Code::Unimplemented {
                    tracing::debug!(code = ?status.code(), message = %status.message(), "job watch refused; polling");
                }
                JobFollow::Poll
            }
        }
    }

    /// Returns once the job may have changed: at its next event (and the
    /// others already queued), after a while without one, or at `deadline`.
    async fn next_change(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let JobFollow::Stream(stream) = self else {
            tokio::time::sleep(left.min(Self::POLL)).await;
            return;
        };
        match tokio::time::timeout(left.min(Self::STREAM_RECHECK), stream.message()).await {
            Err(_elapsed) => {}
            Ok(Ok(Some(_))) => {
                // One `Get` answers for every event already here.
                while let Ok(Ok(Some(_))) =
                    tokio::time::timeout(Duration::ZERO, stream.message()).await
                {}
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                tracing::debug!("job watch stream ended; polling");
                *self = JobFollow::Poll;
            }
        }
    }
}

fn print_job(opts: &ClientOpts, got: &pb::GetJobResponse, warnings: &[String]) -> Result<()> {
    match opts.output {
        Output::Json => output::json(&output::job_json(got)),
        Output::Table => {
            output::job_table(got);
            for w in warnings {
                outln!("warning: {w}");
            }
        }
    }
    Ok(())
}

pub async fn job_plan(opts: &ClientOpts, file: &Path) -> Result<()> {
    let job = read_job(file)?;
    let mut client = pb::job_service_client::JobServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let plan = client
        .plan(pb::PlanRequest { job: Some(job) })
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&output::plan_json(&plan)),
        Output::Table => output::plan_table(&plan),
    }
    Ok(())
}

pub async fn job_status(opts: &ClientOpts, name: &str) -> Result<()> {
    let mut client = pb::job_service_client::JobServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let got = get_job(&mut client, name).await?;
    print_job(opts, &got, &[])?;
    if opts.output == Output::Table {
        if let Some(lines) = crate::deploy::latest_lines(opts, name).await {
            outln!();
            outln!("Latest deployment");
            for l in lines {
                outln!("{l}");
            }
        }
    }
    Ok(())
}

pub async fn job_stop(opts: &ClientOpts, name: &str, detach: bool, wait: u64) -> Result<()> {
    let mut client = pb::job_service_client::JobServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let mut follow = if detach {
        JobFollow::Poll
    } else {
        JobFollow::open(&mut client, name).await
    };
    let resp = client
        .stop(pb::StopJobRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !detach {
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let got = get_job(&mut client, name).await?;
            let live = got.allocations.iter().filter(|a| {
                resp.stopped_allocations.contains(&a.id)
                    && matches!(a.status.as_str(), "pending" | "running")
            });
            let left = live.count();
            if left == 0 {
                print_job(opts, &got, &[])?;
                if opts.output == Output::Table {
                    crate::periodic::running_children_note(name, &resp.running_children);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                print_job(opts, &got, &[])?;
                bail!("{left} allocation(s) of job {name:?} still running after {wait} s");
            }
            follow.next_change(deadline).await;
        }
    }
    match opts.output {
        Output::Json => output::json(&serde_json::json!({
            "job": name,
            "stopped_allocations": resp.stopped_allocations,
            "running_children": resp.running_children,
        })),
        Output::Table => {
            outln!(
                "job {name:?} stopped ({} allocations asked to stop)",
                resp.stopped_allocations.len()
            );
            crate::periodic::running_children_note(name, &resp.running_children);
        }
    }
    Ok(())
}

pub async fn job_list(opts: &ClientOpts) -> Result<()> {
    let mut client = pb::job_service_client::JobServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let resp = client
        .list(pb::ListJobsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&output::jobs_json(&resp.jobs)),
        Output::Table => output::jobs_table(&resp.jobs),
    }
    Ok(())
}

pub async fn node_list(opts: &ClientOpts) -> Result<()> {
    let mut client = pb::node_service_client::NodeServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let resp = client
        .list(pb::ListNodesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&output::nodes_json(&resp.nodes)),
        Output::Table => output::nodes_table(&resp.nodes),
    }
    Ok(())
}

fn print_node(opts: &ClientOpts, node: pb::Node) {
    match opts.output {
        Output::Json => output::json(&output::nodes_json(std::slice::from_ref(&node))[0]),
        Output::Table => output::node_detail(&node),
    }
}

pub async fn node_status(opts: &ClientOpts, id: &str) -> Result<()> {
    let mut client = pb::node_service_client::NodeServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let node = client
        .get(pb::GetNodeRequest { id: id.to_string() })
        .await
        .map_err(status_error)?
        .into_inner()
        .node
        .ok_or_else(|| anyhow!("scheduler returned no node"))?;
    print_node(opts, node);
    Ok(())
}

pub async fn node_drain(opts: &ClientOpts, id: &str, enable: bool) -> Result<()> {
    let mut client = pb::node_service_client::NodeServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let node = client
        .drain(pb::DrainNodeRequest {
            id: id.to_string(),
            enable,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .node
        .ok_or_else(|| anyhow!("scheduler returned no node"))?;
    print_node(opts, node);
    Ok(())
}

pub async fn alloc_list(
    opts: &ClientOpts,
    job: Option<String>,
    node: Option<String>,
) -> Result<()> {
    let mut client = pb::alloc_service_client::AllocServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let resp = client
        .list(pb::ListAllocsRequest {
            job: job.unwrap_or_default(),
            node_id: node.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&output::allocs_json(&resp.allocations)),
        Output::Table => output::allocs_table(&resp.allocations),
    }
    Ok(())
}

pub async fn alloc_status(opts: &ClientOpts, id: &str) -> Result<()> {
    let mut client = pb::alloc_service_client::AllocServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let a = client
        .get(pb::GetAllocRequest { id: id.to_string() })
        .await
        .map_err(status_error)?
        .into_inner()
        .allocation
        .ok_or_else(|| anyhow!("scheduler returned no allocation"))?;
    let events = crate::events::alloc_events(opts, &a.id).await?;
    match opts.output {
        Output::Json => {
            let mut v = output::alloc_detail_json(&a);
            v["events"] = events.iter().map(crate::events::event_json).collect();
            output::json(&v);
        }
        Output::Table => {
            output::alloc_detail(&a);
            crate::events::recent_events_table(&events);
        }
    }
    Ok(())
}

/// The allocation `target` names: a job name with exactly one live
/// allocation stands for it (a job name wins over an allocation id prefix
/// that happens to match it), otherwise an allocation id or unique prefix.
pub(crate) async fn resolve_alloc(
    allocs: &mut pb::alloc_service_client::AllocServiceClient<Channel>,
    target: &str,
) -> Result<String> {
    let list = allocs
        .list(pb::ListAllocsRequest {
            job: target.to_string(),
            node_id: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .allocations;
    let alloc_id = if list.is_empty() {
        allocs
            .get(pb::GetAllocRequest {
                id: target.to_string(),
            })
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => anyhow!("no job or allocation named {target:?}"),
                _ => status_error(s),
            })?
            .into_inner()
            .allocation
            .map(|a| a.id)
            .unwrap_or_default()
    } else {
        let live: Vec<_> = list
            .iter()
            .filter(|a| a.desired == "run" && matches!(a.status.as_str(), "pending" | "running"))
            .collect();
        let pick: Vec<_> = if live.is_empty() {
            list.iter().collect()
        } else {
            live
        };
        match pick.as_slice() {
            [one] => one.id.clone(),
            many => bail!(
                "job {target:?} has {} allocations; name one: {}",
                many.len(),
                many.iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    Ok(alloc_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod size_tests {
    use super::*;

    #[test]
    fn a_job_over_the_api_limit_is_refused_before_sending_naming_both_sizes() {
        let mut job = pb::Job {
            name: "big".into(),
            ..Default::default()
        };
        assert!(check_request_size("big.toml", &job).is_ok());
        job.groups = vec![pb::Group {
            name: "x".repeat(drover_proto::MAX_MESSAGE_BYTES),
            ..Default::default()
        }];
        let e = check_request_size("big.toml", &job)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("big.toml: job \"big\" is 16.0 MiB encoded, over the 16.0 MiB the scheduler reads in one request"),
            "{e}"
        );
        let s = status_error(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 20000000 bytes, the limit is: 16777216 bytes",
        ));
        assert!(s.to_string().contains("at most 16.0 MiB"), "{s}");
    }
}
