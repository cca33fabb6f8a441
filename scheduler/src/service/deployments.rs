//! `DeploymentService`: a job's deployments (status, promote, fail) and
//! its kept versions (history, revert).

use drover_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::jobs::check_job;
use super::{Api, Reply};
use crate::audit;
use crate::cluster::DeployError;
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

#[tonic::async_trait]
impl pb::deployment_service_server::DeploymentService for Api {
    async fn get(
        &self,
        req: Request<pb::GetDeploymentRequest>,
    ) -> Reply<pb::GetDeploymentResponse> {
        let req = req.into_inner();
        check_job(&req.job)?;
        let cluster = self.core.cluster();
        let job = cluster.job(&req.job).await.map_err(Status::from)?;
        let Some(job) = job else {
            return Err(Status::not_found(format!("no job named {:?}", req.job)));
        };
        let d = cluster
            .deployment(&req.job, req.version)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::GetDeploymentResponse {
            deployment: d.map(|d| d.to_pb(Some(&job.value.spec))),
            job_version: job.value.version,
            job_status: job.value.status.as_str().into(),
        }))
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
