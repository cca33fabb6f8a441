//! Which SkyDNS records the cluster's state calls for: a pure function of
//! the jobs, the allocation records and the nodes.
//!
//! The rules:
//!
//! - a node that is up (ready) and whose address is an IP has its node
//!   record (`<node>.node.<zone>`);
//! - an allocation has one record per service of its group while its node
//!   is up, it is desired to run, its node reports it running, it has an
//!   address inside its node's subnet, and the service is healthy;
//! - a service is healthy when every check it declares has been reported
//!   and every reported check of it passes: a service without checks is
//!   healthy while its allocation runs, and one whose checks were never
//!   reported is not (no registration before the checks exist).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use drover_model::skydns::{node_key, service_key, Record};
use drover_model::CheckState;

use super::admit::address_allowed;
use super::Discovery;
use crate::job::ServiceSpec;
use crate::state::{AllocRecord, AllocStatus, DesiredState, JobRecord, NodeRecord, NodeStatus};

/// One record the state calls for: the node whose lease binds it, and
/// its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The node the record lives and dies with.
    pub node_id: String,
    /// The SkyDNS value.
    pub record: Record,
}

/// Records by key.
pub type Desired = BTreeMap<String, Wanted>;

/// Whether `service` is healthy given its allocation's reported `checks`:
/// each check it declares has a reported state, and every reported state
/// of it passes.
pub fn healthy(service: &ServiceSpec, checks: &[CheckState]) -> bool {
    let reported = |i: usize| {
        checks
            .iter()
            .any(|c| c.service == service.name && usize::try_from(c.index) == Ok(i))
    };
    CheckState::all_passing(checks, &service.name) && (0..service.checks.len()).all(reported)
}

/// The services of `alloc` (on `node`, of `job`) registered right now,
/// with their records.
pub fn alloc_records<'j>(
    discovery: &Discovery,
    node: &NodeRecord,
    job: Option<&'j JobRecord>,
    alloc: &AllocRecord,
) -> Vec<(&'j ServiceSpec, String, Record)> {
    let Some(ip) = registrable_ip(node, alloc) else {
        return Vec::new();
    };
    let Some(group) = job.and_then(|j| j.spec.group(&alloc.group)) else {
        return Vec::new();
    };
    group
        .services
        .iter()
        .filter(|s| healthy(s, &alloc.checks))
        .map(|s| {
            let key = service_key(&discovery.zone, &s.name, &alloc.id);
            (s, key, Record::instance(IpAddr::V4(ip), s, discovery.ttl))
        })
        .collect()
}

/// The address `alloc` is registered at, when it may be registered at
/// all: its node up and its own, desired to run and running, at an
/// address of its node's subnet.
fn registrable_ip(node: &NodeRecord, alloc: &AllocRecord) -> Option<Ipv4Addr> {
    let up = node.status == NodeStatus::Ready && node.id == alloc.node_id;
    let runs = alloc.desired == DesiredState::Run && alloc.status == AllocStatus::Running;
    if !up || !runs {
        return None;
    }
    let ip: Ipv4Addr = alloc.ip.parse().ok()?;
    address_allowed(node, ip).ok().map(|()| ip)
}

/// The node record of `node`, when it is up and its address is an IP.
pub fn node_record(discovery: &Discovery, node: &NodeRecord) -> Option<(String, Record)> {
    if node.status != NodeStatus::Ready {
        return None;
    }
    let host: IpAddr = node.address.parse().ok()?;
    Some((
        node_key(&discovery.zone, &node.id),
        Record::node(host, discovery.ttl),
    ))
}

/// Every record the state calls for.
pub fn desired(
    discovery: &Discovery,
    jobs: &BTreeMap<String, JobRecord>,
    allocs: &[AllocRecord],
    nodes: &[NodeRecord],
) -> Desired {
    let mut out = Desired::new();
    let by_id: BTreeMap<&str, &NodeRecord> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for n in nodes {
        if let Some((key, record)) = node_record(discovery, n) {
            let node_id = n.id.clone();
            out.insert(key, Wanted { node_id, record });
        }
    }
    for a in allocs {
        let Some(node) = by_id.get(a.node_id.as_str()) else {
            continue;
        };
        for (_, key, record) in alloc_records(discovery, node, jobs.get(&a.job), a) {
            let node_id = a.node_id.clone();
            out.insert(key, Wanted { node_id, record });
        }
    }
    out
}

/// How many instances of one service are registered, of how many its
/// group should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCount {
    /// The group.
    pub group: String,
    /// The service.
    pub service: String,
    /// Instances registered (healthy) right now.
    pub healthy: u32,
    /// Allocations of the group desired to run.
    pub instances: u32,
}

/// Per service of `job`, in the job's order: its healthy instances among
/// `allocs`, of those desired to run.
pub fn service_counts(
    discovery: &Discovery,
    job: &JobRecord,
    allocs: &[AllocRecord],
    nodes: &[NodeRecord],
) -> Vec<ServiceCount> {
    let by_id: BTreeMap<&str, &NodeRecord> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut out = Vec::new();
    for g in &job.spec.groups {
        let wanted: Vec<&AllocRecord> = allocs
            .iter()
            .filter(|a| a.job == job.spec.name && a.group == g.name)
            .filter(|a| a.desired == DesiredState::Run)
            .collect();
        let registered: Vec<Vec<String>> = wanted
            .iter()
            .map(|a| match by_id.get(a.node_id.as_str()) {
                Some(node) => alloc_records(discovery, node, Some(job), a)
                    .into_iter()
                    .map(|(s, _, _)| s.name.clone())
                    .collect(),
                None => Vec::new(),
            })
            .collect();
        for s in &g.services {
            let healthy = registered.iter().filter(|r| r.contains(&s.name)).count();
            out.push(ServiceCount {
                group: g.name.clone(),
                service: s.name.clone(),
                healthy: u32::try_from(healthy).unwrap_or(u32::MAX),
                instances: u32::try_from(wanted.len()).unwrap_or(u32::MAX),
            });
        }
    }
    out
}
