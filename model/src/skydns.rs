//! Service-discovery records in the SkyDNS etcd layout, as the scheduler
//! writes them and every DNS reader (Drover's, CoreDNS's `etcd` plugin,
//! SkyDNS) reads them.
//!
//! A key is `/skydns/` followed by the labels of a DNS name in reverse
//! order:
//!
//! | name                                      | key                                          |
//! |-------------------------------------------|----------------------------------------------|
//! | `<alloc-id>.web.service.drover.internal`  | `/skydns/internal/drover/service/web/<alloc-id>` |
//! | `<node-id>.node.drover.internal`          | `/skydns/internal/drover/node/<node-id>`     |
//!
//! The value is a JSON [`Record`]: SkyDNS's `host`, `port`, `priority`,
//! `weight` and `ttl` under the names CoreDNS reads, plus Drover's own
//! `protocol` and `tags`, which other readers ignore. The TTL is the
//! configured one, never anything derived from a lease (the CoreDNS
//! advisory GHSA-93mf-426m-g6x9 served lease ids as TTLs).
//!
//! Pure: building and recognising keys, and the value type.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::job::ServiceSpec;
use crate::wire::Protocol;

/// Where the SkyDNS layout lives in the store.
pub const PREFIX: &str = "/skydns/";

/// The service-discovery zone when none is configured.
pub const DEFAULT_ZONE: &str = "drover.internal";

/// SRV priority of every instance: all are equal.
pub const PRIORITY: u16 = 10;

/// SRV weight of every instance: all are equal.
pub const WEIGHT: u16 = 10;

/// The key prefix of `zone` (`drover.internal`, lowercase, no final dot):
/// `/skydns/internal/drover/`.
pub fn zone_prefix(zone: &str) -> String {
    let mut key = PREFIX.to_owned();
    for label in zone.trim_end_matches('.').rsplit('.') {
        key.push_str(&label.to_ascii_lowercase());
        key.push('/');
    }
    key
}

/// The key of instance `alloc_id` of service `service` in `zone`:
/// `/skydns/internal/drover/service/web/<alloc-id>`.
pub fn service_key(zone: &str, service: &str, alloc_id: &str) -> String {
    format!("{}service/{service}/{alloc_id}", zone_prefix(zone))
}

/// The key of node `node_id` in `zone`: `/skydns/internal/drover/node/<node-id>`.
pub fn node_key(zone: &str, node_id: &str) -> String {
    format!("{}node/{node_id}", zone_prefix(zone))
}

/// What a key of the layout that Drover writes names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner<'a> {
    /// An instance of a service: the allocation holding it.
    Instance {
        /// The service's name.
        service: &'a str,
        /// The allocation's id.
        alloc_id: &'a str,
    },
    /// A node's own address.
    Node {
        /// The node's id.
        node_id: &'a str,
    },
}

/// What `key` names, when it is a key Drover writes in `zone`
/// (`service/<service>/<alloc>` or `node/<node>` under the zone's
/// prefix); `None` for any other key.
pub fn owner_of<'a>(zone: &str, key: &'a str) -> Option<Owner<'a>> {
    let prefix = zone_prefix(zone);
    let rest = key.strip_prefix(prefix.as_str())?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["service", service, alloc_id] if !service.is_empty() && !alloc_id.is_empty() => {
            Some(Owner::Instance { service, alloc_id })
        }
        ["node", node_id] if !node_id.is_empty() => Some(Owner::Node { node_id }),
        _ => None,
    }
}

/// The JSON value at a key: where one instance listens, or a node's
/// address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The IP address A (AAAA) answers give.
    pub host: String,
    /// The port SRV answers give; absent for a node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    /// SRV priority; absent for a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// SRV weight; absent for a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// Seconds resolvers may cache the answer: the configured TTL.
    pub ttl: u32,
    /// Which `_<proto>` SRV name lists the instance (Drover's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Labels naming subsets of the instances (Drover's field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

impl Record {
    /// The record of an instance of `service` at `host`, cached for `ttl`
    /// seconds.
    pub fn instance(host: IpAddr, service: &ServiceSpec, ttl: u32) -> Record {
        Record {
            host: host.to_string(),
            port: service.port,
            priority: Some(PRIORITY),
            weight: Some(WEIGHT),
            ttl,
            protocol: Some(service.protocol),
            tags: service.tags.clone(),
        }
    }

    /// The record of a node at `host`, cached for `ttl` seconds.
    pub fn node(host: IpAddr, ttl: u32) -> Record {
        Record {
            host: host.to_string(),
            port: 0,
            priority: None,
            weight: None,
            ttl,
            protocol: None,
            tags: Vec::new(),
        }
    }

    /// The JSON stored at the key.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, integers and a string enum always encodes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::job::CheckSpec;

    fn web() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            port: 8080,
            protocol: Protocol::Tcp,
            tags: vec!["v2".into(), "blue".into()],
            checks: Vec::<CheckSpec>::new(),
        }
    }

    #[test]
    fn keys_spell_the_name_backwards() {
        assert_eq!(zone_prefix("drover.internal"), "/skydns/internal/drover/");
        assert_eq!(zone_prefix("Drover.Internal."), "/skydns/internal/drover/");
        assert_eq!(
            service_key("drover.internal", "web", "0f3c9a1e"),
            "/skydns/internal/drover/service/web/0f3c9a1e"
        );
        assert_eq!(node_key("a.b.example", "n1"), "/skydns/example/b/a/node/n1");
    }

    #[test]
    fn only_the_keys_drover_writes_have_an_owner() {
        let z = "drover.internal";
        assert_eq!(
            owner_of(z, &service_key(z, "web", "a1")),
            Some(Owner::Instance {
                service: "web",
                alloc_id: "a1"
            })
        );
        assert_eq!(
            owner_of(z, &node_key(z, "n1")),
            Some(Owner::Node { node_id: "n1" })
        );
        for other in [
            "/skydns/internal/drover/service/web",
            "/skydns/internal/drover/service/web/a1/x",
            "/skydns/internal/drover/other/web/a1",
            "/skydns/internal/other/service/web/a1",
            "/skydns/internal/drover/node/",
            "/drover/allocs/a1",
        ] {
            assert_eq!(owner_of(z, other), None, "{other}");
        }
    }

    #[test]
    fn an_instance_carries_the_configured_ttl_and_skydns_field_names() {
        let r = Record::instance("10.89.3.7".parse().unwrap(), &web(), 7);
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "host": "10.89.3.7", "port": 8080, "priority": 10, "weight": 10,
                "ttl": 7, "protocol": "tcp", "tags": ["v2", "blue"]
            })
        );
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_node_record_is_its_host_and_ttl() {
        let r = Record::node("192.0.2.1".parse().unwrap(), 5);
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"host": "192.0.2.1", "ttl": 5}));
    }
}
