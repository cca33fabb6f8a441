//! The test network: a switch (a bridge in a network namespace of its own)
//! and, per endpoint, a network namespace wired to it by a veth pair, with
//! `lo` up and one address on `eth0`. Built over rtnetlink with the agent's
//! own library; nothing is created in the caller's network namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use drover_agent::net::rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use drover_agent::net::rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};
use drover_agent::net::{Netlink, Netns};

/// The switch bridge's name inside the switch namespace.
pub(crate) const SWITCH_BRIDGE: &str = "sw0";
/// Each endpoint's interface to the switch, inside its own namespace.
pub(crate) const UPLINK: &str = "eth0";
/// `lo` has this index in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// Creates the switch bridge in `switch` and sets it up; returns its index.
pub(crate) async fn make_switch(switch: &Netns) -> Result<u32> {
    let net = Netlink::connect_in(switch).await?;
    net.handle()
        .link()
        .add(LinkBridge::new(SWITCH_BRIDGE).up().build())
        .execute()
        .await
        .with_context(|| format!("adding bridge {SWITCH_BRIDGE} in {}", switch.label()))?;
    let index = net
        .link_by_name(SWITCH_BRIDGE)
        .await?
        .with_context(|| format!("bridge {SWITCH_BRIDGE} vanished in {}", switch.label()))?
        .header
        .index;
    Ok(index)
}

/// Plugs `endpoint` into the switch: a veth `port` on the bridge (in the
/// switch namespace) whose peer is `eth0` in `endpoint`, addressed
/// `ip/prefix`, with `lo` up. No default route: the switch leads nowhere
/// but to the other endpoints.
pub(crate) async fn plug(
    switch: &Netns,
    bridge_index: u32,
    port: &str,
    endpoint: &Netns,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<()> {
    let sw = Netlink::connect_in(switch).await?;
    let peer = LinkUnspec::new_with_name(UPLINK)
        .setns_by_fd(endpoint.as_fd().as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(port)
        .controller(bridge_index)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    sw.handle()
        .link()
        .add(veth)
        .execute()
        .await
        .with_context(|| {
            format!(
                "adding veth {port} in {} (peer {UPLINK} in {})",
                switch.label(),
                endpoint.label()
            )
        })?;
    let inside = Netlink::connect_in(endpoint).await?;
    let uplink = inside
        .link_by_name(UPLINK)
        .await?
        .with_context(|| format!("{UPLINK} missing in {}", endpoint.label()))?
        .header
        .index;
    for index in [LOOPBACK_INDEX, uplink] {
        inside
            .handle()
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("setting link {index} up in {}", endpoint.label()))?;
    }
    inside
        .handle()
        .address()
        .add(uplink, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .with_context(|| format!("adding {ip}/{prefix} to {UPLINK} in {}", endpoint.label()))?;
    Ok(())
}
