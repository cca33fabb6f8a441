//! `drover logs`: one allocation's output as it is, or every allocation of
//! a job interleaved line by line with a `name[index]` prefix (as
//! `kubectl logs -l`, `docker compose logs` and `stern` do).

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use drover_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::client::resolve_alloc;
use crate::connect::{channel, status_error};
use crate::ClientOpts;

/// What `drover logs` was asked for.
pub struct LogsRequest<'a> {
    /// A job name, or an allocation id or unique prefix.
    pub target: &'a str,
    /// `--alloc`: one allocation of the job `target` names.
    pub alloc: Option<&'a str>,
    /// Task name, empty for the group's only task.
    pub task: &'a str,
    /// Standard error instead of standard output.
    pub stderr: bool,
    /// Keep printing as the tasks write.
    pub follow: bool,
}

/// Prints the logs `req` names.
pub async fn logs(opts: &ClientOpts, req: &LogsRequest<'_>) -> Result<()> {
    let ch = channel(opts).await?;
    let mut allocs = pb::alloc_service_client::AllocServiceClient::new(ch.clone())
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    if let Some(pick) = req.alloc {
        let id = pick_alloc(&mut allocs, req.target, pick).await?;
        return single(&mut allocs, &id, req).await;
    }
    let list = job_allocs(&mut allocs, req.target).await?;
    match list.as_slice() {
        [] => {
            let id = resolve_alloc(&mut allocs, req.target).await?;
            single(&mut allocs, &id, req).await
        }
        [one] => single(&mut allocs, &one.id.clone(), req).await,
        many => interleave(&allocs, many, req).await,
    }
}

/// Every allocation of job `job`.
async fn list_allocs(
    allocs: &mut pb::alloc_service_client::AllocServiceClient<Channel>,
    job: &str,
) -> Result<Vec<pb::Allocation>> {
    Ok(allocs
        .list(pb::ListAllocsRequest {
            job: job.to_string(),
            node_id: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .allocations)
}

/// The allocations of job `job` whose logs `drover logs JOB` shows: the
/// live ones (desired `run`, `pending` or `running`), or every one when none
/// is live (a finished batch job's), ordered by name.
async fn job_allocs(
    allocs: &mut pb::alloc_service_client::AllocServiceClient<Channel>,
    job: &str,
) -> Result<Vec<pb::Allocation>> {
    let list = list_allocs(allocs, job).await?;
    let live: Vec<pb::Allocation> = list
        .iter()
        .filter(|a| a.desired == "run" && matches!(a.status.as_str(), "pending" | "running"))
        .cloned()
        .collect();
    let mut pick = if live.is_empty() { list } else { live };
    pick.sort_by(|a, b| (&a.group, a.index, &a.id).cmp(&(&b.group, b.index, &b.id)));
    Ok(pick)
}

/// The allocation of job `job` that `--alloc` names: an id or unique
/// prefix, or its name (`job.group[index]` or `group[index]`).
async fn pick_alloc(
    allocs: &mut pb::alloc_service_client::AllocServiceClient<Channel>,
    job: &str,
    pick: &str,
) -> Result<String> {
    let all = list_allocs(allocs, job).await?;
    if all.is_empty() {
        bail!("job {job:?} has no allocations (--alloc picks one of a job's)");
    }
    let matches: Vec<&pb::Allocation> = all
        .iter()
        .filter(|a| a.id.starts_with(pick) || a.name == pick || label(a) == pick)
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!(
            "job {job:?} has no allocation {pick:?}; its allocations: {}",
            names(&all)
        ),
        many => bail!(
            "--alloc {pick:?} matches {} allocations of job {job:?}: {}",
            many.len(),
            names(&many.iter().map(|a| (*a).clone()).collect::<Vec<_>>())
        ),
    }
}

fn names(all: &[pb::Allocation]) -> String {
    all.iter()
        .map(|a| format!("{} ({})", label(a), a.id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The prefix of an allocation's lines: its name (`job.group[index]`), or
/// `group[index]` when the scheduler gave none.
pub fn label(a: &pb::Allocation) -> String {
    if a.name.is_empty() {
        format!("{}[{}]", a.group, a.index)
    } else {
        a.name.clone()
    }
}

/// One allocation's output, as the task wrote it.
async fn single(
    allocs: &mut pb::alloc_service_client::AllocServiceClient<Channel>,
    alloc_id: &str,
    req: &LogsRequest<'_>,
) -> Result<()> {
    let mut stream = allocs
        .logs(logs_request(alloc_id, req))
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        out.write_all(&chunk.data)
            .and_then(|_| out.flush())
            .context("writing to standard output")?;
    }
    Ok(())
}

fn logs_request(alloc_id: &str, req: &LogsRequest<'_>) -> pb::LogsRequest {
    pb::LogsRequest {
        alloc_id: alloc_id.to_string(),
        task: req.task.to_string(),
        stderr: req.stderr,
        follow: req.follow,
    }
}

/// What a reader of one allocation's stream sends to the printer.
enum Piece {
    Data(usize, Vec<u8>),
    End(usize, Result<(), tonic::Status>),
}

/// Every allocation's output, each whole line prefixed with its label,
/// lines of different allocations interleaved as they arrive.
async fn interleave(
    allocs: &pb::alloc_service_client::AllocServiceClient<Channel>,
    list: &[pb::Allocation],
    req: &LogsRequest<'_>,
) -> Result<()> {
    let labels: Vec<String> = list.iter().map(label).collect();
    let mut lines = Prefixer::new(&labels);
    let (tx, mut rx) = mpsc::channel::<Piece>(64);
    for (i, a) in list.iter().enumerate() {
        let mut client = allocs.clone();
        let request = logs_request(&a.id, req);
        let tx = tx.clone();
        tokio::spawn(async move {
            let end = async {
                let mut stream = client.logs(request).await?.into_inner();
                while let Some(chunk) = stream.message().await? {
                    if tx.send(Piece::Data(i, chunk.data)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            let _ = tx.send(Piece::End(i, end)).await;
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    let mut failures = Vec::new();
    while let Some(piece) = rx.recv().await {
        let bytes = match piece {
            Piece::Data(i, data) => lines.push(i, &data),
            Piece::End(i, end) => {
                if let Err(status) = end {
                    failures.push(format!("{}: {:#}", labels[i], status_error(status)));
                }
                lines.finish(i)
            }
        };
        out.write_all(&bytes)
            .and_then(|_| out.flush())
            .context("writing to standard output")?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("cannot read logs of {}", failures.join("; ")))
    }
}

/// Cuts each source's bytes into whole lines and prefixes each line with
/// its source's label, padded to the longest label: a line is never split
/// by another source's line, whatever the chunks.
pub struct Prefixer {
    prefixes: Vec<Vec<u8>>,
    partial: Vec<Vec<u8>>,
}

impl Prefixer {
    /// A prefixer for sources with these labels.
    pub fn new(labels: &[String]) -> Prefixer {
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        Prefixer {
            prefixes: labels
                .iter()
                .map(|l| format!("{l:<width$} | ").into_bytes())
                .collect(),
            partial: vec![Vec::new(); labels.len()],
        }
    }

    /// Takes `data` from source `i`; returns its completed lines, prefixed.
    pub fn push(&mut self, i: usize, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (Some(prefix), Some(partial)) = (self.prefixes.get(i), self.partial.get_mut(i)) else {
            return out;
        };
        partial.extend_from_slice(data);
        if let Some(last) = partial.iter().rposition(|b| *b == b'\n') {
            let rest = partial.split_off(last + 1);
            for line in partial.split_inclusive(|b| *b == b'\n') {
                out.extend_from_slice(prefix);
                out.extend_from_slice(line);
            }
            *partial = rest;
        }
        out
    }

    /// Source `i` ended: its unterminated last line, if any, prefixed and
    /// ended with a newline.
    pub fn finish(&mut self, i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if let (Some(prefix), Some(partial)) = (self.prefixes.get(i), self.partial.get_mut(i)) {
            if !partial.is_empty() {
                out.extend_from_slice(prefix);
                out.append(partial);
                out.push(b'\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap_or_default()
    }

    #[test]
    fn lines_split_across_chunks_come_out_whole_with_their_prefix() {
        let mut p = Prefixer::new(&["web[0]".to_string(), "web[10]".to_string()]);
        assert_eq!(text(p.push(0, b"hel")), "");
        assert_eq!(text(p.push(1, b"one\ntw")), "web[10] | one\n");
        assert_eq!(
            text(p.push(0, b"lo\nbye\n")),
            "web[0]  | hello\nweb[0]  | bye\n"
        );
        assert_eq!(text(p.finish(1)), "web[10] | tw\n");
        assert_eq!(text(p.finish(0)), "");
    }

    #[test]
    fn an_unknown_source_is_ignored() {
        let mut p = Prefixer::new(&["a".to_string()]);
        assert_eq!(text(p.push(3, b"x\n")), "");
        assert_eq!(text(p.finish(3)), "");
    }
}
