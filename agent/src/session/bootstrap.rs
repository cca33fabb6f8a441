//! Bringing the node's networking up once the scheduler has answered:
//! choosing the node's task subnet, then the bridge, forwarding and
//! isolation rules ([`NodeNetwork::init`]) and the sweep of what a crash
//! left.

use std::sync::Arc;

use drover_proto::v1 as pb;

use crate::allocs::Allocs;
use crate::config::AgentConfig;
use crate::net;
use crate::net::wiring::{NetConfig, NodeNetwork};

/// The node's task subnet: `--subnet` first, then the scheduler's
/// assignment (`Registered.subnet`), then the one kept from an earlier
/// start, then the configured default.
fn choose_subnet(
    config: &AgentConfig,
    net_cfg: &NetConfig,
    assigned: &str,
) -> Result<Option<net::Ipv4Net>, String> {
    if let Some(s) = config.subnet {
        return Ok(Some(s));
    }
    if !assigned.trim().is_empty() {
        return assigned
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("the scheduler assigned an unusable subnet: {e}"));
    }
    match net::wiring::saved_subnet(net_cfg) {
        Ok(Some(s)) => return Ok(Some(s)),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring the saved node subnet"),
    }
    Ok(config.default_subnet)
}

/// Brings the node's networking up once the scheduler has answered (its
/// `Registered` may carry the node's subnet): bridge, forwarding,
/// isolation rules, then removal of what a crash left of allocations no
/// longer on disk. Tried again on every `Registered` until it works; once
/// up it stays as it is for the life of the process.
pub(super) async fn network_ready(
    config: &AgentConfig,
    node_id: &str,
    registered: &pb::Registered,
    allocs: &mut Allocs,
) {
    let assigned = registered.subnet.as_str();
    let zone = crate::dns::zone_of(registered);
    if let Some(up) = allocs.network() {
        if let Err(error) = up.set_dns_zone(zone) {
            tracing::warn!(%error, zone, "cannot rewrite the tasks' resolv.conf");
        }
        if !assigned.is_empty() && config.subnet.is_none() && up.subnet().to_string() != assigned {
            tracing::warn!(have = %up.subnet(), assigned, "the scheduler assigned another subnet; keeping the current one until the agent restarts");
        }
        return;
    }
    let mut net_cfg = NetConfig::for_agent(&config.data_dir, &config.bridge, node_id);
    net_cfg.dns_zone = zone.to_owned();
    net_cfg.cluster_cidr = match registered.cluster_cidr.trim() {
        "" => None,
        cidr => cidr
            .parse()
            .inspect_err(|error| tracing::warn!(cidr, %error, "ignoring an unusable cluster CIDR"))
            .ok(),
    };
    let subnet = match choose_subnet(config, &net_cfg, assigned) {
        Ok(Some(s)) => s,
        Ok(None) => {
            let why = "this node has no task subnet: the scheduler assigned none and the agent \
                       has no --subnet";
            tracing::error!("{why}; allocations cannot start");
            allocs.set_network(Err(why.into()));
            return;
        }
        Err(why) => {
            tracing::error!(%why, "no node network");
            allocs.set_network(Err(why));
            return;
        }
    };
    match NodeNetwork::init(net_cfg, subnet).await {
        Ok(up) => {
            match allocs.ids_on_disk() {
                Ok(keep) => {
                    if let Err(error) = up.reconcile(&keep).await {
                        tracing::warn!(%error, "cannot remove networks left by a crash");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot list allocations on disk"),
            }
            allocs.set_network(Ok(Arc::new(up)));
        }
        Err(error) => {
            tracing::error!(%error, bridge = %config.bridge, %subnet, "cannot set up the node network");
            allocs.set_network(Err(format!("the node network is down: {error}")));
        }
    }
}
