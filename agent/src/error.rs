//! [`AgentError`]: what stops the agent (or `drover agent --cleanup`)
//! before it can serve: bad configuration or identity, local state that
//! cannot be read, node networking that cannot be removed.

use std::path::PathBuf;

use crate::{net, runtime};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration or local state.
    #[error("{0}")]
    Config(String),
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime failed to list existing tasks.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// Node networking failed (`--cleanup`).
    #[error(transparent)]
    Net(#[from] net::NetError),
}
