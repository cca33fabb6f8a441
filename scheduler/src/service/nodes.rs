//! `NodeService`: list, get and drain nodes, with the resources their live
//! allocations claim.

use std::collections::BTreeMap;

use drover_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{check_id, only_match, Api, Reply};
use crate::audit;
use crate::core::Core;
use crate::job::Resources;
use crate::state::NodeRecord;

/// Finds a node by id, unique id prefix or hostname.
async fn find_node(core: &Core, id: &str) -> Result<NodeRecord, Status> {
    check_id("node", id)?;
    let hits: Vec<NodeRecord> = core
        .cluster()
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.name.starts_with(id) || n.value.hostname == id)
        .map(|n| n.value)
        .collect();
    only_match("node", id, hits)
}

/// The wire form of `node` with what its live allocations claim.
async fn with_usage(core: &Core, node: &NodeRecord) -> Result<pb::Node, Status> {
    let usage = usage(core).await?;
    let (u, c) = usage.get(&node.id).copied().unwrap_or_default();
    Ok(node.to_pb(u, c))
}

/// Resources claimed and live allocations, by node.
async fn usage(core: &Core) -> Result<BTreeMap<String, (Resources, u32)>, Status> {
    let mut out: BTreeMap<String, (Resources, u32)> = BTreeMap::new();
    for a in core.cluster().allocs().await? {
        if a.value.is_live() {
            let e = out.entry(a.value.node_id.clone()).or_default();
            e.0 = e.0.plus(a.value.resources);
            e.1 += 1;
        }
    }
    Ok(out)
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Api {
    async fn list(&self, _req: Request<pb::ListNodesRequest>) -> Reply<pb::ListNodesResponse> {
        let nodes = self.core.cluster().nodes().await?;
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

    async fn get(&self, req: Request<pb::GetNodeRequest>) -> Reply<pb::GetNodeResponse> {
        let node = find_node(&self.core, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetNodeResponse {
            node: Some(with_usage(&self.core, &node).await?),
        }))
    }

    async fn images(&self, req: Request<pb::NodeImagesRequest>) -> Reply<pb::NodeImagesResponse> {
        let node = find_node(&self.core, &req.get_ref().id).await?;
        let listing = self
            .core
            .images()
            .ask(self.core.registry(), &node.id)
            .await?;
        Ok(Response::new(listing))
    }

    async fn drain(&self, req: Request<pb::DrainNodeRequest>) -> Reply<pb::DrainNodeResponse> {
        let what = if req.get_ref().enable {
            "drain"
        } else {
            "undo drain"
        };
        audit::note(&req, format!("node {}", req.get_ref().id), what);
        let req = req.into_inner();
        let node = find_node(&self.core, &req.id).await?;
        let rec = self
            .core
            .cluster()
            .set_draining(&node.id, req.enable)
            .await?
            .ok_or_else(|| Status::not_found(format!("node {} was removed", node.id)))?;
        tracing::info!(node_id = %rec.id, draining = rec.draining, "node drain changed");
        if node.draining && !rec.draining {
            self.core.capacity(crate::queue::Capacity::DrainLifted);
        }
        Ok(Response::new(pb::DrainNodeResponse {
            node: Some(with_usage(&self.core, &rec).await?),
        }))
    }
}
