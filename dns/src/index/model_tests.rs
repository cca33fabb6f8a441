//! The records the scheduler writes (`drover_model::skydns`) read back
//! here as the endpoints and names they stand for: the two sides of the
//! SkyDNS layout cannot drift apart unnoticed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_model::job::ServiceSpec;
use drover_model::skydns::{node_key, service_key, Record};
use drover_model::Protocol;

use super::*;

fn service(protocol: Protocol) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        port: 8080,
        protocol,
        tags: vec!["v2".into(), "blue".into()],
        checks: Vec::new(),
    }
}

#[test]
fn an_instance_record_reads_back_whole() {
    let alloc = "0f3c9a1e-77b2-4c1d-9e0a-5b6c7d8e9f00";
    let key = service_key("drover.internal", "web", alloc);
    let parsed = parse_key(key.as_bytes()).unwrap();
    assert_eq!(parsed.service(), "web.service.drover.internal.");
    assert_eq!(parsed.instance(), alloc);
    for (protocol, transport) in [
        (Protocol::Tcp, Transport::Tcp),
        (Protocol::Udp, Transport::Udp),
    ] {
        let value = Record::instance("10.89.3.7".parse().unwrap(), &service(protocol), 7).to_json();
        let e = parse_endpoint(&key, &value).unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "10.89.3.7".parse().unwrap(),
                port: 8080,
                priority: 10,
                weight: 10,
                ttl: Some(7),
                protocol: Some(transport),
                tags: vec!["blue".into(), "v2".into()],
            }
        );
    }
}

#[test]
fn a_node_record_reads_back_as_its_address() {
    let key = node_key("drover.internal", "node-1");
    let parsed = parse_key(key.as_bytes()).unwrap();
    assert_eq!(parsed.name(), "node-1.node.drover.internal.");
    let value = Record::node("192.0.2.1".parse().unwrap(), 5).to_json();
    let e = parse_endpoint(&key, &value).unwrap();
    assert_eq!(e.host, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!((e.port, e.ttl, e.protocol), (0, Some(5), None));
}

/// CoreDNS's `etcd` plugin decodes the value into its `msg.Service`, whose
/// JSON names are `host`, `port`, `priority`, `weight`, `ttl` (numbers,
/// `ttl` a uint32); unknown fields are ignored there.
#[test]
fn an_instance_record_has_the_fields_coredns_reads() {
    let value =
        Record::instance("10.89.3.7".parse().unwrap(), &service(Protocol::Tcp), 5).to_json();
    let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(v["host"], "10.89.3.7");
    for (field, want) in [("port", 8080), ("priority", 10), ("weight", 10), ("ttl", 5)] {
        assert_eq!(v[field].as_u64(), Some(want), "{field} in {v}");
    }
}
