//! `JobService`: submit, plan, get, list, stop and watch jobs.

use std::pin::Pin;

use drover_proto::v1 as pb;
use drover_store::{Kind, WatchEvent};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Api, Reply};
use crate::audit;
use crate::cluster::limits;
use crate::discovery::desired::service_counts;
use crate::job::{check_job_name, parent_of, JobSpec};
use crate::job_status::job_health;
use crate::periodic::{children_of, ForceError, LaunchRecord};
use crate::reschedule::show;
use crate::state::{job_allocs, AllocRecord, AllocStatus, DesiredState, JobRecord, NodeRecord};

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send + 'static>>;

/// Most validation problems an answer lists; the rest are counted.
const MAX_PROBLEMS_LISTED: usize = 50;

/// The job a request carries, validated; every problem is listed (up to
/// [`MAX_PROBLEMS_LISTED`], then counted). A job too large for the state
/// store is refused first, by its size alone.
fn validate(job: Option<&pb::Job>) -> Result<JobSpec, Status> {
    let job = job.ok_or_else(|| Status::invalid_argument("request has no job"))?;
    limits::check_wire_size(&job.name, prost::Message::encoded_len(job))?;
    JobSpec::try_from(job).map_err(|e| {
        let name = if job.name.is_empty() {
            String::new()
        } else {
            format!(" {:?}", job.name)
        };
        let n = e.problems.len();
        let mut msg = format!(
            "job{name} is invalid ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        );
        for p in e.problems.iter().take(MAX_PROBLEMS_LISTED) {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        if n > MAX_PROBLEMS_LISTED {
            msg.push_str(&format!("\n  ... and {} more", n - MAX_PROBLEMS_LISTED));
        }
        Status::invalid_argument(msg)
    })
}

/// Checks a job name a client gave: a DNS label or a periodic child's.
pub(super) fn check_job(name: &str) -> Result<(), Status> {
    check_job_name(name).map_err(|e| Status::invalid_argument(format!("job name {e}")))
}

impl From<ForceError> for Status {
    fn from(e: ForceError) -> Status {
        match e {
            ForceError::NoSuchJob(_) => Status::not_found(e.to_string()),
            ForceError::NotPeriodic(_) | ForceError::Stopped(_) => {
                Status::failed_precondition(e.to_string())
            }
            ForceError::Exists(_) => Status::already_exists(e.to_string()),
            ForceError::Cluster(e) => e.into(),
        }
    }
}

/// A periodic parent's last launched tick and next tick, for `job status`.
fn periodic_times(job: &JobRecord, record: Option<&LaunchRecord>) -> (i64, i64) {
    let last = record.map(|r| r.last_tick_unix).unwrap_or(0);
    let next = job
        .spec
        .periodic
        .as_ref()
        .filter(|_| job.status == crate::state::JobStatus::Running)
        .and_then(|p| p.schedule().ok())
        .and_then(|s| s.next_after(drover_model::now_ms().div_euclid(1000)))
        .unwrap_or(0);
    (last, next)
}

/// One store change as a job event, when it concerns job `name` (any job
/// when empty).
fn job_event(
    name: &str,
    kind: Kind,
    name_of_record: &str,
    value: Option<&[u8]>,
) -> Option<pb::job_event::Event> {
    match (kind, value) {
        (Kind::Job, _) if !name.is_empty() && name_of_record != name => None,
        (Kind::Job, None) => Some(pb::job_event::Event::JobDeleted(name_of_record.to_string())),
        (Kind::Job, Some(v)) => serde_json::from_slice::<JobRecord>(v)
            .ok()
            .map(|j| pb::job_event::Event::Job(j.to_pb())),
        (_, Some(v)) => serde_json::from_slice::<AllocRecord>(v)
            .ok()
            .filter(|a| name.is_empty() || a.job == name)
            .map(|a| pb::job_event::Event::Allocation((&a).into())),
        (_, None) => None,
    }
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for Api {
    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Reply<pb::SubmitResponse> {
        let name = req.get_ref().job.as_ref().map(|j| j.name.as_str());
        audit::note(&req, format!("job {}", name.unwrap_or_default()), "");
        let spec = validate(req.get_ref().job.as_ref())?;
        self.core.cluster().check_job_size(&spec)?;
        let done = self.core.submit(&spec).await?;
        Ok(Response::new(pb::SubmitResponse {
            version: done.version,
            allocations: done.allocations.iter().map(Into::into).collect(),
            warnings: done.warnings,
            pending: done.pending.iter().map(Into::into).collect(),
        }))
    }

    async fn plan(&self, req: Request<pb::PlanRequest>) -> Reply<pb::PlanResponse> {
        let spec = validate(req.get_ref().job.as_ref())?;
        self.core.cluster().check_job_size(&spec)?;
        let (plan, exists) = self.core.cluster().plan(&spec).await?;
        let allocs = self.core.cluster().allocs().await?;
        Ok(Response::new(pb::PlanResponse {
            place: plan
                .place
                .iter()
                .map(|p| pb::Allocation {
                    name: format!("{}.{}[{}]", spec.name, p.group, p.index),
                    job: spec.name.clone(),
                    group: p.group.clone(),
                    index: p.index,
                    node_id: p.node_id.clone(),
                    desired: DesiredState::Run.as_str().into(),
                    status: AllocStatus::Pending.as_str().into(),
                    ..Default::default()
                })
                .collect(),
            stop: allocs
                .iter()
                .filter(|a| plan.stop.contains(&a.value.id))
                .map(|a| pb::Allocation::from(&a.value))
                .collect(),
            failures: plan.failures,
            job_exists: exists,
        }))
    }

    async fn get(&self, req: Request<pb::GetJobRequest>) -> Reply<pb::GetJobResponse> {
        let name = &req.get_ref().name;
        check_job(name)?;
        let cluster = self.core.cluster();
        let job = cluster
            .job(name)
            .await?
            .ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let allocs = job_allocs(&cluster.alloc_records().await?, name);
        let services = if job.value.spec.groups.iter().any(|g| !g.services.is_empty()) {
            let nodes: Vec<NodeRecord> = cluster
                .nodes()
                .await?
                .into_iter()
                .map(|n| n.value)
                .collect();
            service_counts(self.core.discovery(), &job.value, &allocs, &nodes)
                .into_iter()
                .map(|c| pb::ServiceHealth {
                    group: c.group,
                    service: c.service,
                    healthy: c.healthy,
                    instances: c.instances,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut info = job.value.to_pb();
        info.status = job_health(&job.value, &allocs).status.into();
        if job.value.spec.periodic.is_some() {
            let record = cluster.launch_record(name).await?;
            (info.periodic_last_unix, info.periodic_next_unix) =
                periodic_times(&job.value, record.as_ref().map(|r| &r.value));
        }
        Ok(Response::new(pb::GetJobResponse {
            job: Some(info),
            allocations: allocs
                .iter()
                .map(|a| show::to_pb(Some(&job.value.spec), a))
                .collect(),
            services,
        }))
    }

    async fn list(&self, _req: Request<pb::ListJobsRequest>) -> Reply<pb::ListJobsResponse> {
        let cluster = self.core.cluster();
        let jobs = cluster.jobs().await?;
        let allocs = cluster.alloc_records().await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs
                .iter()
                .map(|j| {
                    let h = job_health(&j.value, &allocs);
                    pb::JobSummary {
                        name: j.name.clone(),
                        kind: j.value.spec.kind.as_str().into(),
                        status: h.status.into(),
                        running: h.running,
                        desired: h.desired,
                        healthy: h.healthy,
                        parent: parent_of(&j.name).unwrap_or_default().to_string(),
                        periodic: j.value.spec.periodic.is_some(),
                        pending: crate::queue::total(&j.value.pending),
                    }
                })
                .collect(),
        }))
    }

    async fn stop(&self, req: Request<pb::StopJobRequest>) -> Reply<pb::StopJobResponse> {
        let name = &req.get_ref().name;
        audit::note(&req, format!("job {name}"), "");
        check_job(name)?;
        let Some(stopped) = self.core.stop(name).await? else {
            return Err(Status::not_found(format!("no job named {name:?}")));
        };
        // Running it again is a new deployment: its image tags resolve
        // anew.
        if let Err(error) = crate::image_pins::forget_job(self.core.cluster().store(), name).await {
            tracing::warn!(job = %name, %error, "cannot forget the job's image pins");
        }
        // A periodic parent's stop ends its launching; its running
        // children finish on their own.
        let jobs = self.core.cluster().jobs().await?;
        let running_children = children_of(name, &jobs)
            .filter(|c| c.value.status == crate::state::JobStatus::Running)
            .map(|c| c.name.clone())
            .collect();
        Ok(Response::new(pb::StopJobResponse {
            stopped_allocations: stopped,
            running_children,
        }))
    }

    async fn force_periodic(
        &self,
        req: Request<pb::ForcePeriodicRequest>,
    ) -> Reply<pb::ForcePeriodicResponse> {
        let name = &req.get_ref().name;
        audit::note(&req, format!("job {name}"), "");
        crate::job::check_dns_label(name)
            .map_err(|e| Status::invalid_argument(format!("job name {e}")))?;
        let (child, done) = self.core.force_periodic(name).await?;
        Ok(Response::new(pb::ForcePeriodicResponse {
            child,
            allocations: done.allocations.iter().map(Into::into).collect(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::WatchJobRequest>) -> Reply<Self::WatchStream> {
        let slot = (self.core.load()).admit(&crate::load::client_of(&req), "job watch")?;
        let name = req.into_inner().name;
        if !name.is_empty() {
            check_job(&name)?;
        }
        let mut jobs = self.core.cluster().watch(Kind::Job).await?;
        let mut allocs = self.core.cluster().watch(Kind::Alloc).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (kind, change) = tokio::select! {
                    c = jobs.recv() => (Kind::Job, c),
                    c = allocs.recv() => (Kind::Alloc, c),
                    _ = tx.closed() => break,
                };
                let c = match change {
                    None | Some(WatchEvent::Compacted { .. }) => break,
                    Some(WatchEvent::Change(c)) => c,
                };
                let Some(event) = job_event(&name, kind, &c.name, c.value.as_deref()) else {
                    continue;
                };
                if tx
                    .send(Ok(pb::JobEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(crate::load::holding(
            ReceiverStream::new(rx),
            slot,
        ))))
    }
}
