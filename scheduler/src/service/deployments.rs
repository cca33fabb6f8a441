//! `DeploymentService`: a job's deployments (status, promote, fail) and
//! its kept versions (history, revert).

use std::pin::Pin;

use drover_proto::v1 as pb;
use drover_store::{Kind, WatchEvent};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::jobs::check_job;
use super::{Api, Reply};
use crate::audit;
use crate::cluster::DeployError;
use crate::core::Core;
use crate::deploy::record::version_key;
use crate::deploy::summary::summary;

impl From<DeployError> for Status {
    fn from(e: DeployError) -> Status {
        match e {
            DeployError::Cluster(e) => e.into(),
            DeployError::NotFound(m) => Status::not_found(m),
            DeployError::Refused(m) => Status::failed_precondition(m),
        }
    }
}

/// Messages a deployment watch may hold for a slow client; each is the
/// whole state, so a client that reads late still gets the latest.
const WATCH_QUEUE: usize = 4;

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::GetDeploymentResponse, Status>> + Send + 'static>>;

/// Job `job`'s deployment of `version` (0: the latest) as `Get` shows it.
async fn view(core: &Core, job: &str, version: u64) -> Result<pb::GetDeploymentResponse, Status> {
    let cluster = core.cluster();
    let record = cluster.job(job).await.map_err(Status::from)?;
    let Some(record) = record else {
        return Err(Status::not_found(format!("no job named {job:?}")));
    };
    let d = cluster
        .deployment(job, version)
        .await
        .map_err(Status::from)?;
    Ok(pb::GetDeploymentResponse {
        deployment: d.map(|d| d.to_pb(Some(&record.value.spec))),
        job_version: record.value.version,
        job_status: record.value.status.as_str().into(),
    })
}

/// Whether a watch has nothing more to say after `v`: no deployment, or
/// one that is no longer running.
fn ended(v: &pb::GetDeploymentResponse) -> bool {
    v.deployment.as_ref().is_none_or(|d| d.status != "running")
}

/// Sends job `job`'s deployment of `version` again each time its record
/// changes, until it ends, the client goes, or the watch breaks (the
/// stream then ends with `UNAVAILABLE` and the client watches again).
async fn follow(
    core: &Core,
    job: &str,
    version: u64,
    mut changes: mpsc::Receiver<WatchEvent>,
    tx: &mpsc::Sender<Result<pb::GetDeploymentResponse, Status>>,
) {
    let key = version_key(job, version);
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            () = tx.closed() => return,
        };
        match change {
            Some(WatchEvent::Change(c)) if c.name == key => {}
            Some(WatchEvent::Change(_)) => continue,
            None | Some(WatchEvent::Compacted { .. }) => {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the deployment watch ended; watch again",
                    )))
                    .await;
                return;
            }
        }
        let now = view(core, job, version).await;
        let last = now.as_ref().map_or(true, ended);
        if tx.send(now).await.is_err() || last {
            return;
        }
    }
}

#[tonic::async_trait]
impl pb::deployment_service_server::DeploymentService for Api {
    async fn get(
        &self,
        req: Request<pb::GetDeploymentRequest>,
    ) -> Reply<pb::GetDeploymentResponse> {
        let req = req.into_inner();
        check_job(&req.job)?;
        Ok(Response::new(
            view(&self.core, &req.job, req.version).await?,
        ))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::WatchDeploymentRequest>) -> Reply<WatchStream> {
        let req = req.into_inner();
        check_job(&req.job)?;
        // Watching before the first read: no change falls between them.
        let changes = self.core.cluster().watch(Kind::Deployment).await?;
        let first = view(&self.core, &req.job, req.version).await?;
        let version = match (req.version, &first.deployment) {
            (0, Some(d)) => d.version,
            (v, _) => v,
        };
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let core = self.core.clone();
        tokio::spawn(async move {
            let done = ended(&first);
            if tx.send(Ok(first)).await.is_ok() && !done {
                follow(&core, &req.job, version, changes, &tx).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn promote(&self, req: Request<pb::PromoteRequest>) -> Reply<pb::PromoteResponse> {
        audit::note(&req, format!("job {}", req.get_ref().job), "");
        let req = req.into_inner();
        check_job(&req.job)?;
        let d = self.core.cluster().promote(&req.job).await?;
        tracing::info!(job = %req.job, version = d.version, "deployment promoted");
        self.core.step_deployment(&req.job).await;
        let spec = self
            .core
            .cluster()
            .job(&req.job)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::PromoteResponse {
            deployment: Some(d.to_pb(spec.as_ref().map(|j| &j.value.spec))),
        }))
    }

    async fn fail(
        &self,
        req: Request<pb::FailDeploymentRequest>,
    ) -> Reply<pb::FailDeploymentResponse> {
        audit::note(&req, format!("job {}", req.get_ref().job), "");
        let req = req.into_inner();
        check_job(&req.job)?;
        let cluster = self.core.cluster();
        let d = cluster.fail(&req.job).await?;
        tracing::info!(job = %req.job, version = d.version, "deployment failed by an operator");
        let reverted = cluster.revert_if_wanted(&d).await.map_err(Status::from)?;
        let reverted_to = reverted.as_ref().and_then(|r| r.reverted_to).unwrap_or(0);
        self.core.step_deployment(&req.job).await;
        let spec = cluster.job(&req.job).await.map_err(Status::from)?;
        Ok(Response::new(pb::FailDeploymentResponse {
            deployment: Some(d.to_pb(spec.as_ref().map(|j| &j.value.spec))),
            reverted_to,
        }))
    }

    async fn history(&self, req: Request<pb::JobHistoryRequest>) -> Reply<pb::JobHistoryResponse> {
        let req = req.into_inner();
        check_job(&req.job)?;
        let versions = self
            .core
            .cluster()
            .versions(&req.job)
            .await
            .map_err(Status::from)?;
        if versions.is_empty() {
            return Err(Status::not_found(format!(
                "no versions of job {:?} kept",
                req.job
            )));
        }
        let mut out: Vec<pb::JobVersion> = Vec::with_capacity(versions.len());
        for (i, v) in versions.iter().enumerate() {
            let before = i
                .checked_sub(1)
                .and_then(|j| versions.get(j))
                .map(|b| &b.spec);
            out.push(pb::JobVersion {
                version: v.version,
                submitted_unix_ms: v.submitted_unix_ms,
                stable: v.stable,
                summary: summary(before, &v.spec),
                job: Some(pb::Job::from(&v.spec)),
            });
        }
        out.reverse();
        Ok(Response::new(pb::JobHistoryResponse { versions: out }))
    }

    async fn revert(&self, req: Request<pb::RevertJobRequest>) -> Reply<pb::RevertJobResponse> {
        let to = format!("to version {}", req.get_ref().version);
        audit::note(&req, format!("job {}", req.get_ref().job), to);
        let req = req.into_inner();
        check_job(&req.job)?;
        let done = self.core.revert(&req.job, req.version).await?;
        Ok(Response::new(pb::RevertJobResponse {
            version: done.version,
        }))
    }
}
