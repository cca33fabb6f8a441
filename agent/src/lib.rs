//! Drover's node agent.
//!
//! The agent dials the scheduler and holds one `AgentService.Connect`
//! stream ([`session`]): it registers the node ([`node`]: identity,
//! capacity, attributes), heartbeats, decodes the assignments it is sent
//! at that edge ([`assignment`]), converges the node onto them
//! ([`allocs`]: a pure plan and an executor), runs the health checks of
//! their services ([`checks`]), reports allocation status, serves log
//! ([`log_stream`]) and exec ([`exec`]) requests, and serves the
//! service-discovery zone on the node's bridge ([`dns`], from records the
//! scheduler relays). Every
//! task runs under its own supervisor process ([`runtime`], with
//! [`cgroup`] limits, the node [`policy`] and a [`seccomp`] filter), so
//! the agent can die and
//! come back without losing one. [`net`] wires allocations to the node
//! bridge and the node to its peers; [`cleanup`](mod@cleanup) removes it all when the
//! node leaves. [`config`] and [`error`] hold the agent's setup and what
//! stops it; [`io_error`] the file operation that failed, which the
//! cgroup and runtime errors wrap. [`metrics`] are what Prometheus scrapes.

pub mod allocs;
pub mod assignment;
pub mod cgroup;
pub mod checks;
pub mod cleanup;
pub mod config;
mod counters;
pub mod dns;
pub mod error;
pub mod exec;
pub mod io_error;
pub mod log_stream;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod node;
pub mod policy;
pub mod private_fs;
pub mod runtime;
pub mod seccomp;
pub mod session;

pub use cleanup::cleanup;
pub use config::{AgentConfig, DEFAULT_KEEP_FINISHED};
pub use error::AgentError;
pub use session::run;
