//! `drover agent --cleanup`: removing a node. Stops every task and
//! removes all the networking the agent made; does not contact the
//! scheduler.

use std::path::PathBuf;

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::net;
use crate::node;
use crate::runtime::Runtime;

/// `drover agent --cleanup`, for removing the node: stops every task
/// (through the runtime, as a stop would), then removes every allocation
/// namespace and veth, the bridge, the routes the agent made, its nftables
/// table and the networking state (subnet, IPAM). Does not contact the
/// scheduler.
pub async fn cleanup(config: &AgentConfig) -> Result<net::wiring::CleanupReport, AgentError> {
    let node_id = node::node_id(&config.data_dir, &node::hostname())?;
    let runtime = Runtime::new(config.data_dir.join("allocs"), config.exe.clone()).with_cgroups(
        PathBuf::from("/sys/fs/cgroup"),
        config.cgroup_parent.clone(),
    );
    let tasks = runtime.list()?;
    let stops = tasks.iter().map(|(alloc, task)| {
        let runtime = &runtime;
        async move {
            if let Err(error) = runtime.stop(alloc, task).await {
                tracing::warn!(alloc_id = %alloc, task = %task, %error, "stop failed");
            }
        }
    });
    futures::future::join_all(stops).await;
    tracing::info!(tasks = tasks.len(), "tasks stopped");
    let net_cfg = net::wiring::NetConfig::for_agent(&config.data_dir, &config.bridge, &node_id);
    let report = net::wiring::cleanup_node(&net_cfg, true).await?;
    tracing::info!(?report, "node networking removed");
    Ok(report)
}
