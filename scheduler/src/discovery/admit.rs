//! What a node may report: only about its own allocations, at an address
//! of its own subnet that no other live allocation holds, with checks
//! only of the services the allocation's job declares. A report that
//! breaks a rule is refused whole: the allocation's record does not
//! change, so nothing the report says can reach DNS.
//!
//! Pure: the caller reads what the rules look at and logs the refusal.

use std::net::Ipv4Addr;

use crate::state::{AllocRecord, JobRecord, NodeRecord};
use crate::transitions::StatusReport;

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The allocation is another node's.
    #[error("allocation belongs to node {owner:?}")]
    OtherNode {
        /// The node it is placed on.
        owner: String,
    },
    /// The reported address is not an IPv4 address.
    #[error("ip {ip:?} is not an IPv4 address")]
    NotAnAddress {
        /// The address as reported.
        ip: String,
    },
    /// The node has no task subnet to check the address against.
    #[error("ip {ip} cannot be checked: the node has no task subnet")]
    NoSubnet {
        /// The address.
        ip: Ipv4Addr,
    },
    /// The reported address lies outside the node's subnet.
    #[error("ip {ip} is outside the node's subnet {subnet}")]
    OutsideSubnet {
        /// The address.
        ip: Ipv4Addr,
        /// The node's subnet.
        subnet: String,
    },
    /// The reported address is the subnet's network, broadcast or bridge
    /// (gateway) address, never a task's.
    #[error("ip {ip} is the network, broadcast or bridge address of the node's subnet {subnet}")]
    Reserved {
        /// The address.
        ip: Ipv4Addr,
        /// The node's subnet.
        subnet: String,
    },
    /// Another live allocation holds the reported address.
    #[error("ip {ip} is held by live allocation {other}")]
    InUse {
        /// The address.
        ip: Ipv4Addr,
        /// The allocation holding it.
        other: String,
    },
    /// The allocation's job is gone, so no check can be one of its.
    #[error("checks reported for job {job:?}, which does not exist")]
    NoJob {
        /// The job's name.
        job: String,
    },
    /// A reported check names a service the job does not declare.
    #[error("job {job:?} group {group:?} declares no service {service:?}")]
    UndeclaredService {
        /// The job.
        job: String,
        /// The group.
        group: String,
        /// The service reported.
        service: String,
    },
    /// A reported check is past the checks the service declares.
    #[error("service {service:?} declares {declared} checks, not check {index}")]
    UndeclaredCheck {
        /// The service.
        service: String,
        /// The index reported.
        index: u32,
        /// How many it declares.
        declared: usize,
    },
}

/// Whether `report` changes the allocation's address, which must then be
/// checked against the node's subnet and every other allocation.
pub fn changes_address(alloc: &AllocRecord, report: &StatusReport) -> bool {
    !report.ip.is_empty() && report.ip != alloc.ip
}

/// Whether `ip` may be a task address of `node`: inside its subnet, and
/// not the subnet's network, broadcast or bridge address.
pub fn address_allowed(node: &NodeRecord, ip: Ipv4Addr) -> Result<(), Refusal> {
    let Some(subnet) = node.subnet else {
        return Err(Refusal::NoSubnet { ip });
    };
    if !subnet.contains(ip) {
        return Err(Refusal::OutsideSubnet {
            ip,
            subnet: subnet.to_string(),
        });
    }
    if ip == subnet.network() || ip == subnet.broadcast() || subnet.first_host() == Some(ip) {
        return Err(Refusal::Reserved {
            ip,
            subnet: subnet.to_string(),
        });
    }
    Ok(())
}

/// Whether node `node_id` may report `report` about `alloc`. `node` is
/// the reporting node's record and `allocs` every allocation (both looked
/// at only when [`changes_address`]); `job` is the allocation's job
/// (looked at only when the report carries checks).
pub fn admit(
    node_id: &str,
    alloc: &AllocRecord,
    report: &StatusReport,
    node: Option<&NodeRecord>,
    job: Option<&JobRecord>,
    allocs: &[AllocRecord],
) -> Result<(), Refusal> {
    if alloc.node_id != node_id {
        return Err(Refusal::OtherNode {
            owner: alloc.node_id.clone(),
        });
    }
    if changes_address(alloc, report) {
        let ip: Ipv4Addr = report.ip.parse().map_err(|_| Refusal::NotAnAddress {
            ip: report.ip.clone(),
        })?;
        match node {
            Some(node) => address_allowed(node, ip)?,
            None => return Err(Refusal::NoSubnet { ip }),
        }
        let holder = allocs
            .iter()
            .find(|o| o.id != alloc.id && o.is_live() && o.ip.parse::<Ipv4Addr>().ok() == Some(ip));
        if let Some(other) = holder {
            return Err(Refusal::InUse {
                ip,
                other: other.id.clone(),
            });
        }
    }
    if report.checks.is_empty() {
        return Ok(());
    }
    let Some(job) = job else {
        return Err(Refusal::NoJob {
            job: alloc.job.clone(),
        });
    };
    let services = job
        .spec
        .group(&alloc.group)
        .map(|g| g.services.as_slice())
        .unwrap_or_default();
    for c in &report.checks {
        let Some(s) = services.iter().find(|s| s.name == c.service) else {
            return Err(Refusal::UndeclaredService {
                job: alloc.job.clone(),
                group: alloc.group.clone(),
                service: c.service.clone(),
            });
        };
        if usize::try_from(c.index).map_or(true, |i| i >= s.checks.len()) {
            return Err(Refusal::UndeclaredCheck {
                service: s.name.clone(),
                index: c.index,
                declared: s.checks.len(),
            });
        }
    }
    Ok(())
}
