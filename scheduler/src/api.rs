//! The user-facing gRPC services: jobs, nodes and allocations.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_store::{Kind, WatchEvent};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::core::{job_counts, Core};
use crate::job::{check_dns_label, JobSpec, Resources};
use crate::state::{AllocRecord, JobRecord, NodeRecord};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `JobService`, `NodeService` and `AllocService` over a [`Core`].
#[derive(Clone)]
pub struct Api {
    core: Arc<Core>,
}

impl Api {
    /// Services over `core`.
    pub fn new(core: Arc<Core>) -> Api {
        Api { core }
    }
}

fn validate(job: Option<&pb::Job>) -> Result<JobSpec, Status> {
    let job = job.ok_or_else(|| Status::invalid_argument("request has no job"))?;
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
        for p in &e.problems {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        Status::invalid_argument(msg)
    })
}

fn check_name(what: &str, name: &str) -> Result<(), Status> {
    check_dns_label(name).map_err(|e| Status::invalid_argument(format!("{what} {e}")))
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for Api {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let spec = validate(req.get_ref().job.as_ref())?;
        let done = self.core.submit(spec).await?;
        Ok(Response::new(pb::SubmitResponse {
            version: done.version,
            allocations: done.allocations.iter().map(Into::into).collect(),
            warnings: done.warnings,
        }))
    }

    async fn plan(
        &self,
        req: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let spec = validate(req.get_ref().job.as_ref())?;
        let (plan, exists) = self.core.plan(&spec).await?;
        let allocs = self.core.allocs().await?;
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
                    desired: "run".into(),
                    status: "pending".into(),
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

    async fn get(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let name = &req.get_ref().name;
        check_name("job name", name)?;
        let job = self
            .core
            .store()
            .get::<JobRecord>(Kind::Job, name)
            .await
            .map_err(crate::core::CoreError::from)?
            .ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let mut allocs: Vec<AllocRecord> = self
            .core
            .allocs()
            .await?
            .into_iter()
            .map(|a| a.value)
            .filter(|a| &a.job == name)
            .collect();
        allocs.sort_by(|a, b| {
            (&a.group, a.index, a.created_unix_ms).cmp(&(&b.group, b.index, b.created_unix_ms))
        });
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job.value.to_pb()),
            allocations: allocs.iter().map(Into::into).collect(),
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .core
            .store()
            .list::<JobRecord>(Kind::Job)
            .await
            .map_err(crate::core::CoreError::from)?;
        let allocs: Vec<AllocRecord> = self
            .core
            .allocs()
            .await?
            .into_iter()
            .map(|a| a.value)
            .collect();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs
                .items
                .iter()
                .map(|j| {
                    let (running, desired) = job_counts(&j.value.spec, &allocs);
                    pb::JobSummary {
                        name: j.name.clone(),
                        kind: j.value.spec.kind.as_str().into(),
                        status: j.value.status.as_str().into(),
                        running,
                        desired,
                    }
                })
                .collect(),
        }))
    }

    async fn stop(
        &self,
        req: Request<pb::StopJobRequest>,
    ) -> Result<Response<pb::StopJobResponse>, Status> {
        let name = &req.get_ref().name;
        check_name("job name", name)?;
        match self.core.stop(name).await? {
            Some(stopped) => Ok(Response::new(pb::StopJobResponse {
                stopped_allocations: stopped,
            })),
            None => Err(Status::not_found(format!("no job named {name:?}"))),
        }
    }

    type WatchStream = BoxStream<pb::JobEvent>;

    async fn watch(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let name = req.into_inner().name;
        if !name.is_empty() {
            check_name("job name", &name)?;
        }
        let store = self.core.store().clone();
        let mut jobs = store
            .watch(Kind::Job, 0)
            .await
            .map_err(crate::core::CoreError::from)?;
        let mut allocs = store
            .watch(Kind::Alloc, 0)
            .await
            .map_err(crate::core::CoreError::from)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    c = jobs.recv() => match c {
                        None | Some(WatchEvent::Compacted { .. }) => break,
                        Some(WatchEvent::Change(c)) if !name.is_empty() && c.name != name => continue,
                        Some(WatchEvent::Change(c)) => match c.value {
                            None => pb::job_event::Event::JobDeleted(c.name),
                            Some(v) => match serde_json::from_slice::<JobRecord>(&v) {
                                Ok(j) => pb::job_event::Event::Job(j.to_pb()),
                                Err(_) => continue,
                            },
                        },
                    },
                    c = allocs.recv() => match c {
                        None | Some(WatchEvent::Compacted { .. }) => break,
                        Some(WatchEvent::Change(c)) => match c.value.as_deref().map(serde_json::from_slice::<AllocRecord>) {
                            Some(Ok(a)) if name.is_empty() || a.job == name => {
                                pb::job_event::Event::Allocation((&a).into())
                            }
                            _ => continue,
                        },
                    },
                    _ = tx.closed() => break,
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Api {
    async fn list(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.core.nodes().await?;
        let usage = usage(&self.core).await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes
                .iter()
                .map(|n| {
                    let (u, c) = usage.get(&n.name).copied().unwrap_or_default();
                    n.value.to_pb(u, c)
                })
                .collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        let id = &req.get_ref().id;
        let node = find_node(&self.core, id).await?;
        let usage = usage(&self.core).await?;
        let (u, c) = usage.get(&node.id).copied().unwrap_or_default();
        Ok(Response::new(pb::GetNodeResponse {
            node: Some(node.to_pb(u, c)),
        }))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let req = req.into_inner();
        let node = find_node(&self.core, &req.id).await?;
        // Under the planning lock, so a registration or node_down cannot
        // interleave with this read-modify-write.
        let rec = {
            let _guard = self.core.planning.lock().await;
            let current = self
                .core
                .store()
                .get::<NodeRecord>(Kind::Node, &node.id)
                .await
                .map_err(crate::core::CoreError::from)?
                .ok_or_else(|| Status::not_found(format!("node {} was removed", node.id)))?;
            let mut rec = current.value;
            rec.draining = req.enable;
            self.core
                .store()
                .put(Kind::Node, &rec.id, &rec)
                .await
                .map_err(crate::core::CoreError::from)?;
            rec
        };
        tracing::info!(node_id = %rec.id, draining = rec.draining, "node drain changed");
        let usage = usage(&self.core).await?;
        let (u, c) = usage.get(&rec.id).copied().unwrap_or_default();
        Ok(Response::new(pb::DrainNodeResponse {
            node: Some(rec.to_pb(u, c)),
        }))
    }
}

/// Finds a node by id or unique id prefix.
async fn find_node(core: &Core, id: &str) -> Result<NodeRecord, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("node id is empty"));
    }
    let nodes = core.nodes().await?;
    let hits: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.name.starts_with(id) || n.value.hostname == id)
        .collect();
    match hits.len() {
        0 => Err(Status::not_found(format!("no node with id {id:?}"))),
        1 => Ok(hits
            .into_iter()
            .map(|n| n.value)
            .next()
            .unwrap_or_else(|| unreachable!())),
        n => Err(Status::invalid_argument(format!(
            "node id {id:?} matches {n} nodes; give more of it"
        ))),
    }
}

async fn usage(core: &Core) -> Result<BTreeMap<String, (Resources, u32)>, Status> {
    let mut out: BTreeMap<String, (Resources, u32)> = BTreeMap::new();
    for a in core.allocs().await? {
        if a.value.is_live() {
            let e = out.entry(a.value.node_id.clone()).or_default();
            e.0 = e.0.plus(a.value.resources);
            e.1 += 1;
        }
    }
    Ok(out)
}

/// Finds an allocation by id or unique id prefix.
pub(crate) async fn find_alloc(core: &Core, id: &str) -> Result<AllocRecord, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("allocation id is empty"));
    }
    let hits: Vec<AllocRecord> = core
        .allocs()
        .await?
        .into_iter()
        .map(|a| a.value)
        .filter(|a| a.id.starts_with(id) || a.name == id)
        .collect();
    let n = hits.len();
    let mut it = hits.into_iter();
    match (n, it.next()) {
        (1, Some(a)) => Ok(a),
        (0, _) | (_, None) => Err(Status::not_found(format!("no allocation with id {id:?}"))),
        (n, Some(_)) => Err(Status::invalid_argument(format!(
            "allocation id {id:?} matches {n} allocations; give more of it"
        ))),
    }
}

#[tonic::async_trait]
impl pb::alloc_service_server::AllocService for Api {
    async fn list(
        &self,
        req: Request<pb::ListAllocsRequest>,
    ) -> Result<Response<pb::ListAllocsResponse>, Status> {
        let req = req.into_inner();
        let allocs = self.core.allocs().await?;
        Ok(Response::new(pb::ListAllocsResponse {
            allocations: allocs
                .iter()
                .map(|a| &a.value)
                .filter(|a| req.job.is_empty() || a.job == req.job)
                .filter(|a| req.node_id.is_empty() || a.node_id.starts_with(&req.node_id))
                .map(Into::into)
                .collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetAllocRequest>,
    ) -> Result<Response<pb::GetAllocResponse>, Status> {
        let a = find_alloc(&self.core, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetAllocResponse {
            allocation: Some((&a).into()),
        }))
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let alloc = find_alloc(&self.core, &req.alloc_id).await?;
        let rx = crate::agents::request_logs(&self.core, &alloc, &req).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExecStream = BoxStream<pb::ExecResponse>;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let rx = crate::exec::start(&self.core, req.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
