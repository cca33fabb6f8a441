//! [`AgentError`]: what stops the agent (or `drover agent --cleanup`)
//! before it can serve: a node identity that cannot be established, tasks
//! on disk that cannot be listed, node networking that cannot be removed.

use crate::{net, node, runtime};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node's identity could not be established.
    #[error(transparent)]
    NodeId(#[from] node::NodeIdError),
    /// The runtime failed to list existing tasks.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// Node networking failed (`--cleanup`).
    #[error(transparent)]
    Net(#[from] net::NetError),
}
