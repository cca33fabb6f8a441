//! Unit tests of the zone's answers, on a fixed index and a seeded random
//! source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use hickory_server::proto::rr::rdata::SOA;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::config::ZoneConfig;
use crate::index::Event;

const SVC: &str = "/skydns/internal/drover/service/";

fn put(index: &mut Index, key: &str, value: &str) {
    index
        .apply(&Event::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        })
        .unwrap();
}

/// web: a1 (v2, tcp), b2 (blue), c3 (v2, ttl 30); dns: d4 (udp, IPv6);
/// nodes n1, n2.
fn fixture() -> (Zone, Index) {
    let zone = ZoneConfig {
        reverse_networks: vec!["10.89.0.0/16".parse().unwrap()],
        ns_addrs: vec!["10.89.0.1".parse().unwrap()],
        ..ZoneConfig::default()
    }
    .zone()
    .unwrap();
    let mut index = Index::new();
    let ep = |host: &str, port: u16, extra: &str| {
        format!(r#"{{"host":"{host}","port":{port},"priority":10,"weight":5{extra}}}"#)
    };
    put(
        &mut index,
        &format!("{SVC}web/a1"),
        &ep("10.89.3.7", 8080, r#","tags":["v2"],"protocol":"tcp""#),
    );
    put(
        &mut index,
        &format!("{SVC}web/b2"),
        &ep("10.89.3.8", 8080, r#","tags":["blue"]"#),
    );
    put(
        &mut index,
        &format!("{SVC}web/c3"),
        &ep("10.89.4.2", 8081, r#","tags":["v2"],"ttl":30"#),
    );
    put(
        &mut index,
        &format!("{SVC}dns/d4"),
        &ep("fd00::4", 53, r#","protocol":"udp""#),
    );
    put(
        &mut index,
        "/skydns/internal/drover/node/n1",
        r#"{"host":"192.0.2.1"}"#,
    );
    put(
        &mut index,
        "/skydns/internal/drover/node/n2",
        r#"{"host":"10.89.0.1"}"#,
    );
    index.set_revision(77);
    (zone, index)
}

fn ask(zone: &Zone, index: &Index, name: &str, qtype: RecordType) -> Outcome {
    ask_class(zone, index, name, qtype, DNSClass::IN)
}

fn ask_class(
    zone: &Zone,
    index: &Index,
    name: &str,
    qtype: RecordType,
    qclass: DNSClass,
) -> Outcome {
    let name = Name::from_ascii(name).unwrap();
    let question = Question {
        name: &name,
        qtype,
        qclass,
    };
    answer(zone, index, &question, &mut StdRng::seed_from_u64(1))
}

fn reply(outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Answer(reply) => reply,
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// The answers as text, sorted: `name ttl TYPE data`.
fn texts(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect();
    out.sort();
    out
}

fn assert_negative(reply: &Reply, rcode: ResponseCode, soa_owner: &str) {
    assert_eq!(reply.rcode, rcode);
    assert!(reply.answers.is_empty() && reply.additionals.is_empty());
    let [soa] = &reply.authorities[..] else {
        panic!("expected one SOA, got {:?}", reply.authorities)
    };
    assert_eq!(soa.name.to_ascii(), soa_owner);
    assert_eq!(soa.ttl, 5, "the negative TTL");
    let RData::SOA(rdata) = &soa.data else {
        panic!("{soa:?}")
    };
    assert_eq!((rdata.serial, rdata.minimum), (77, 5));
}

#[test]
fn a_service_answers_every_instance_shuffled() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "web.service.drover.internal.",
        RecordType::A,
    ));
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert!(r.authorities.is_empty() && r.additionals.is_empty());
    assert_eq!(
        texts(&r.answers),
        [
            "web.service.drover.internal. 30 A 10.89.4.2",
            "web.service.drover.internal. 5 A 10.89.3.7",
            "web.service.drover.internal. 5 A 10.89.3.8",
        ]
    );
    // Over many answers every order shows up.
    let name = Name::from_ascii("web.service.drover.internal.").unwrap();
    let question = Question {
        name: &name,
        qtype: RecordType::A,
        qclass: DNSClass::IN,
    };
    let mut rng = StdRng::seed_from_u64(7);
    let orders: BTreeSet<String> = (0..200)
        .map(|_| {
            let r = reply(answer(&zone, &index, &question, &mut rng));
            r.answers
                .iter()
                .map(|a| a.data.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(orders.len(), 6, "{orders:?}");
}

#[test]
fn names_echo_the_question_and_ignore_its_case() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "WEB.Service.Drover.Internal",
        RecordType::A,
    ));
    assert_eq!(r.answers.len(), 3);
    assert_eq!(r.answers[0].name.to_ascii(), "WEB.Service.Drover.Internal");
}

#[test]
fn aaaa_of_an_ipv4_service_is_nodata_and_v6_is_answered() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "web.service.drover.internal.",
        RecordType::AAAA,
    ));
    assert_negative(&r, ResponseCode::NoError, "drover.internal.");
    let r = reply(ask(
        &zone,
        &index,
        "dns.service.drover.internal.",
        RecordType::AAAA,
    ));
    assert_eq!(
        texts(&r.answers),
        ["dns.service.drover.internal. 5 AAAA fd00::4"]
    );
    let r = reply(ask(
        &zone,
        &index,
        "dns.service.drover.internal.",
        RecordType::A,
    ));
    assert_negative(&r, ResponseCode::NoError, "drover.internal.");
    // ANY gives every address record.
    let r = reply(ask(
        &zone,
        &index,
        "web.service.drover.internal.",
        RecordType::ANY,
    ));
    assert_eq!(r.answers.len(), 3);
}

#[test]
fn instances_and_tags_have_names() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "a1.web.service.drover.internal.",
        RecordType::A,
    ));
    assert_eq!(
        texts(&r.answers),
        ["a1.web.service.drover.internal. 5 A 10.89.3.7"]
    );
    let r = reply(ask(
        &zone,
        &index,
        "v2.web.service.drover.internal.",
        RecordType::A,
    ));
    assert_eq!(
        texts(&r.answers),
        [
            "v2.web.service.drover.internal. 30 A 10.89.4.2",
            "v2.web.service.drover.internal. 5 A 10.89.3.7",
        ]
    );
    let r = reply(ask(
        &zone,
        &index,
        "blue.web.service.drover.internal.",
        RecordType::A,
    ));
    assert_eq!(r.answers.len(), 1);
    // An unknown tag or instance, or an instance of another service, does
    // not exist.
    for name in [
        "green.web.service.drover.internal.",
        "d4.web.service.drover.internal.",
        "x.a1.web.service.drover.internal.",
    ] {
        let r = reply(ask(&zone, &index, name, RecordType::A));
        assert_negative(&r, ResponseCode::NXDomain, "drover.internal.");
    }
}

#[test]
fn srv_targets_resolve_and_come_with_their_addresses() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "_web._tcp.service.drover.internal.",
        RecordType::SRV,
    ));
    assert_eq!(
        texts(&r.answers),
        [
            "_web._tcp.service.drover.internal. 30 SRV 10 5 8081 c3.web.service.drover.internal.",
            "_web._tcp.service.drover.internal. 5 SRV 10 5 8080 a1.web.service.drover.internal.",
            "_web._tcp.service.drover.internal. 5 SRV 10 5 8080 b2.web.service.drover.internal.",
        ]
    );
    // The additional section follows the answers' order.
    let targets: Vec<String> = r
        .answers
        .iter()
        .map(|a| match &a.data {
            RData::SRV(srv) => srv.target.to_ascii(),
            other => panic!("{other:?}"),
        })
        .collect();
    let extra: Vec<String> = r.additionals.iter().map(|a| a.name.to_ascii()).collect();
    assert_eq!(targets, extra);
    for target in &targets {
        let r = reply(ask(&zone, &index, target, RecordType::A));
        assert_eq!(r.answers.len(), 1, "{target}");
    }
    // `_udp` lists the instances without a protocol, not a1 (tcp).
    let r = reply(ask(
        &zone,
        &index,
        "_web._udp.service.drover.internal.",
        RecordType::SRV,
    ));
    assert_eq!(r.answers.len(), 2);
    let r = reply(ask(
        &zone,
        &index,
        "_dns._tcp.service.drover.internal.",
        RecordType::SRV,
    ));
    assert_negative(&r, ResponseCode::NXDomain, "drover.internal.");
    // The SRV name has no address; an unknown protocol is no name.
    let r = reply(ask(
        &zone,
        &index,
        "_web._tcp.service.drover.internal.",
        RecordType::A,
    ));
    assert_negative(&r, ResponseCode::NoError, "drover.internal.");
    let r = reply(ask(
        &zone,
        &index,
        "_web._sctp.service.drover.internal.",
        RecordType::SRV,
    ));
    assert_negative(&r, ResponseCode::NXDomain, "drover.internal.");
}

#[test]
fn nodes_resolve() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "n1.node.drover.internal.",
        RecordType::A,
    ));
    assert_eq!(
        texts(&r.answers),
        ["n1.node.drover.internal. 5 A 192.0.2.1"]
    );
    let r = reply(ask(
        &zone,
        &index,
        "n9.node.drover.internal.",
        RecordType::A,
    ));
    assert_negative(&r, ResponseCode::NXDomain, "drover.internal.");
}

#[test]
fn the_apex_has_soa_and_ns_and_the_ns_its_address() {
    let (zone, index) = fixture();
    let r = reply(ask(&zone, &index, "drover.internal.", RecordType::SOA));
    let [soa] = &r.answers[..] else {
        panic!("{r:?}")
    };
    let RData::SOA(rdata) = &soa.data else {
        panic!("{soa:?}")
    };
    assert_eq!(rdata.serial, 77, "the index's revision");
    let r = reply(ask(&zone, &index, "drover.internal.", RecordType::NS));
    assert_eq!(
        texts(&r.answers),
        ["drover.internal. 5 NS ns.drover.internal."]
    );
    assert_eq!(
        reply(ask(&zone, &index, "drover.internal.", RecordType::ANY))
            .answers
            .len(),
        2
    );
    let r = reply(ask(&zone, &index, "drover.internal.", RecordType::A));
    assert_negative(&r, ResponseCode::NoError, "drover.internal.");
    let r = reply(ask(&zone, &index, "ns.drover.internal.", RecordType::A));
    assert_eq!(texts(&r.answers), ["ns.drover.internal. 5 A 10.89.0.1"]);
}

#[test]
fn structural_names_exist_and_others_do_not() {
    let (zone, index) = fixture();
    for name in [
        "service.drover.internal.",
        "node.drover.internal.",
        "_tcp.service.drover.internal.",
        "_udp.service.drover.internal.",
    ] {
        let r = reply(ask(&zone, &index, name, RecordType::A));
        assert_negative(&r, ResponseCode::NoError, "drover.internal.");
    }
    for name in [
        "nope.drover.internal.",
        "api.service.drover.internal.",
        "a.b.c.d.service.drover.internal.",
        "*.web.service.drover.internal.",
        "_x.service.drover.internal.",
        "n1.service.drover.internal.",
    ] {
        let r = reply(ask(&zone, &index, name, RecordType::A));
        assert_negative(&r, ResponseCode::NXDomain, "drover.internal.");
    }
}

#[test]
fn other_classes_and_transfers_are_refused_and_outside_names_forwarded() {
    let (zone, index) = fixture();
    let name = "web.service.drover.internal.";
    assert_eq!(
        ask_class(&zone, &index, name, RecordType::A, DNSClass::CH),
        Outcome::Refused
    );
    let any = reply(ask_class(&zone, &index, name, RecordType::A, DNSClass::ANY));
    assert_eq!(any.answers.len(), 3);
    assert_eq!(
        ask(&zone, &index, "drover.internal.", RecordType::AXFR),
        Outcome::Refused
    );
    assert_eq!(
        ask(&zone, &index, "example.com.", RecordType::A),
        Outcome::Forward
    );
    assert_eq!(
        ask(&zone, &index, "internal.", RecordType::SOA),
        Outcome::Forward
    );
    let zone_only = Zone {
        forwarding: false,
        ..zone
    };
    assert_eq!(
        ask(&zone_only, &index, "example.com.", RecordType::A),
        Outcome::Refused
    );
}

#[test]
fn ptr_answers_every_task_address() {
    let (zone, index) = fixture();
    let r = reply(ask(
        &zone,
        &index,
        "7.3.89.10.in-addr.arpa.",
        RecordType::PTR,
    ));
    assert_eq!(
        texts(&r.answers),
        ["7.3.89.10.in-addr.arpa. 5 PTR a1.web.service.drover.internal."]
    );
    let r = reply(ask(
        &zone,
        &index,
        "4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        RecordType::PTR,
    ));
    assert_eq!(
        r.answers.len(),
        1,
        "outside the reverse networks, a known address"
    );
    // Inside the reverse network: unknown addresses are NXDOMAIN, other
    // types NODATA, names in between empty non-terminals, the apex SOA.
    let rz = "89.10.in-addr.arpa.";
    let r = reply(ask(
        &zone,
        &index,
        "9.9.89.10.in-addr.arpa.",
        RecordType::PTR,
    ));
    assert_negative(&r, ResponseCode::NXDomain, rz);
    let r = reply(ask(&zone, &index, "7.3.89.10.in-addr.arpa.", RecordType::A));
    assert_negative(&r, ResponseCode::NoError, rz);
    let r = reply(ask(&zone, &index, "3.89.10.in-addr.arpa.", RecordType::PTR));
    assert_negative(&r, ResponseCode::NoError, rz);
    let r = reply(ask(&zone, &index, rz, RecordType::SOA));
    assert!(matches!(
        r.answers[..],
        [Record {
            data: RData::SOA(SOA { serial: 77, .. }),
            ..
        }]
    ));
    // Node addresses have names too.
    let r = reply(ask(
        &zone,
        &index,
        "1.0.89.10.in-addr.arpa.",
        RecordType::PTR,
    ));
    assert_eq!(
        texts(&r.answers),
        ["1.0.89.10.in-addr.arpa. 5 PTR n2.node.drover.internal."]
    );
    // Outside: unknown addresses and other types go upstream.
    assert_eq!(
        ask(&zone, &index, "2.2.0.192.in-addr.arpa.", RecordType::PTR),
        Outcome::Forward
    );
    assert_eq!(
        ask(&zone, &index, "1.2.0.192.in-addr.arpa.", RecordType::TXT),
        Outcome::Forward
    );
    let r = reply(ask(
        &zone,
        &index,
        "1.2.0.192.in-addr.arpa.",
        RecordType::PTR,
    ));
    assert_eq!(
        texts(&r.answers),
        ["1.2.0.192.in-addr.arpa. 5 PTR n1.node.drover.internal."]
    );
}

#[test]
fn two_names_on_one_address_give_two_ptrs() {
    let (zone, mut index) = fixture();
    put(
        &mut index,
        &format!("{SVC}metrics/a1"),
        r#"{"host":"10.89.3.7","port":9090}"#,
    );
    let r = reply(ask(
        &zone,
        &index,
        "7.3.89.10.in-addr.arpa.",
        RecordType::PTR,
    ));
    assert_eq!(r.answers.len(), 2);
}
