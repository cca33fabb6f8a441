//! `AllocService`: list and get allocations, and relay their logs and exec
//! sessions to their nodes.

use std::pin::Pin;

use drover_proto::v1 as pb;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{check_id, only_match, Api, Reply};
use crate::audit;
use crate::core::Core;
use crate::load;
use crate::relay::exec::read_start;
use crate::reschedule::show;
use crate::state::AllocRecord;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Finds an allocation by id, unique id prefix or name.
async fn find_alloc(core: &Core, id: &str) -> Result<AllocRecord, Status> {
    check_id("allocation", id)?;
    let mut allocs = core.cluster().alloc_records().await?;
    allocs.retain(|a| a.id.starts_with(id) || a.name == id);
    only_match("allocation", id, allocs)
}

#[tonic::async_trait]
impl pb::alloc_service_server::AllocService for Api {
    async fn list(&self, req: Request<pb::ListAllocsRequest>) -> Reply<pb::ListAllocsResponse> {
        let req = req.into_inner();
        let allocs = self.core.cluster().allocs().await?;
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

    async fn get(&self, req: Request<pb::GetAllocRequest>) -> Reply<pb::GetAllocResponse> {
        let a = find_alloc(&self.core, &req.get_ref().id).await?;
        let job = self.core.cluster().job(&a.job).await?;
        Ok(Response::new(pb::GetAllocResponse {
            allocation: Some(show::to_pb(job.as_ref().map(|j| &j.value.spec), &a)),
        }))
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Reply<Self::LogsStream> {
        let core = &self.core;
        let slot = core.load().admit(&load::client_of(&req), "log stream")?;
        let req = req.into_inner();
        let alloc = find_alloc(core, &req.alloc_id).await?;
        let rx = core.logs().open(core.registry(), &alloc, &req).await?;
        Ok(Response::new(Box::pin(load::holding(
            ReceiverStream::new(rx),
            slot,
        ))))
    }

    type ExecStream = BoxStream<pb::ExecResponse>;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecRequest>>,
    ) -> Reply<Self::ExecStream> {
        let slot = self
            .core
            .load()
            .admit(&load::client_of(&req), "exec session")?;
        let note = req.extensions().get::<audit::Note>().cloned();
        let mut inbound = req.into_inner();
        let (first, start) = read_start(&mut inbound).await?;
        if let Some(note) = note {
            note.exec(&start.alloc_id, &start.task, &start.user, &start.command);
        }
        let core = &self.core;
        let alloc = find_alloc(core, &start.alloc_id).await?;
        let execs = core.execs();
        let rx = execs
            .start(core.registry(), &alloc, first, start, inbound)
            .await?;
        Ok(Response::new(Box::pin(load::holding(
            ReceiverStream::new(rx),
            slot,
        ))))
    }
}
