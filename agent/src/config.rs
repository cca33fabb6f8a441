//! How the agent is set up: [`AgentConfig`], filled by `drover agent` and
//! `drover dev` from their flags and the node policy file.

use std::path::PathBuf;
use std::time::Duration;

use crate::net;
use crate::policy;

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Scheduler gRPC address, e.g. `http://127.0.0.1:4680`.
    pub scheduler: String,
    /// Where node identity and task state live.
    pub data_dir: PathBuf,
    /// Drover binary re-executed as each task's supervisor.
    pub exe: PathBuf,
    /// Address other nodes reach this one at.
    pub address: String,
    /// Capacity overrides; detected from the host when `None`.
    pub cpu_millis: Option<i64>,
    /// Memory capacity override, MiB.
    pub memory_mb: Option<i64>,
    /// Mutual TLS towards the scheduler (`https://` addresses).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Cgroup directory, relative to each hierarchy's root, under which
    /// every task gets `<alloc>/<task>` (default `drover`).
    pub cgroup_parent: PathBuf,
    /// What any scheduler may ask of this node.
    pub policy: policy::NodePolicy,
    /// Name of the node bridge ([`net::wiring::DEFAULT_BRIDGE`]).
    pub bridge: String,
    /// The node's task subnet, overriding the one the scheduler assigns.
    pub subnet: Option<net::Ipv4Net>,
    /// The subnet used when neither `subnet`, the scheduler nor an earlier
    /// start gives one (`drover dev`: 10.89.0.0/24).
    pub default_subnet: Option<net::Ipv4Net>,
    /// The node id the agent's certificate is bound to, if it is
    /// (`drover tls agent --node ID`): the agent is that node.
    pub node_id: Option<String>,
    /// How long the files (logs included) of a finished allocation are
    /// kept once the scheduler no longer lists it ([`DEFAULT_KEEP_FINISHED`]).
    pub keep_finished: Duration,
    /// The node's DNS server on the bridge address.
    pub dns: crate::dns::DnsConfig,
    /// Operator metadata (`--meta rack=r1`), registered as `Node.meta` for
    /// constraints on `${meta.NAME}`; entries checked by the caller
    /// (`drover_model::job::check_meta`).
    pub meta: std::collections::BTreeMap<String, String>,
}

/// Default of [`AgentConfig::keep_finished`]: one hour.
pub const DEFAULT_KEEP_FINISHED: Duration = Duration::from_secs(3600);
