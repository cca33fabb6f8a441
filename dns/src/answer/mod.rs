//! What the zone answers to one question: a pure function of the zone,
//! the index, the question and a random source (for the order of
//! instances), so that every record kind and negative answer is tested
//! without a socket, and the handler around it stays thin.
//!
//! Names the zone holds (relative to its apex, `drover.internal.`):
//!
//! | name | records |
//! |---|---|
//! | apex | SOA, NS |
//! | `service`, `node`, `_tcp.service`, `_udp.service` | none: they exist so that a resolver minimising its query names (RFC 9156) walks down to the names below instead of stopping at an NXDOMAIN (RFC 8020) |
//! | `<service>.service` | A/AAAA of every instance |
//! | `<x>.<service>.service` | A/AAAA of the instance `x` (an allocation id), else of the instances tagged `x` |
//! | `_<service>._<proto>.service` | SRV (RFC 2782) of every instance with that protocol, each target `<instance>.<service>.service` with its addresses in the additional section |
//! | `<node>.node` | A/AAAA of the node |
//! | the NS name, when in the zone | A/AAAA of `ns_addrs` |
//!
//! Any other name of the zone is NXDOMAIN; a name above without records of
//! the asked type is NODATA; both carry the SOA in the authority section,
//! with the store's revision as serial so that it changes with the data.
//! The zone is never forwarded, whatever the name: a resolver that asks us
//! for `x.drover.internal` must not learn what an upstream invents for it.
//!
//! Reverse names (PTR) are answered for every indexed address in the zone;
//! inside the configured reverse networks the server is authoritative
//! (NXDOMAIN for unknown addresses), outside them only known addresses are
//! answered and the rest goes upstream.

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, PTR, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::{ReverseZone, Zone};
use crate::index::{is_label, Endpoint, Index, Transport};

/// One question, as asked.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// The name as the client wrote it (its case is echoed in answers).
    pub name: &'a Name,
    /// The type asked for.
    pub qtype: RecordType,
    /// The class asked for.
    pub qclass: DNSClass,
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer from the zone, authoritatively.
    Answer(Reply),
    /// Not the zone's: ask an upstream.
    Forward,
    /// Not served here: REFUSED.
    Refused,
}

/// An authoritative answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// NOERROR (answers or NODATA) or NXDOMAIN.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of negative answers).
    pub authorities: Vec<Record>,
    /// The additional section (SRV targets' addresses).
    pub additionals: Vec<Record>,
}

/// Answers `question` from `zone` and `index`; `rng` orders instances.
pub fn answer<R: Rng + ?Sized>(
    zone: &Zone,
    index: &Index,
    question: &Question<'_>,
    rng: &mut R,
) -> Outcome {
    if zone.origin.zone_of(question.name) {
        if !serves(question) {
            return Outcome::Refused;
        }
        return Outcome::Answer(in_zone(zone, index, question, rng));
    }
    if let Some(outcome) = reverse(zone, index, question) {
        return outcome;
    }
    if zone.forwarding {
        Outcome::Forward
    } else {
        Outcome::Refused
    }
}

/// Whether a question for one of our names is one we answer: class IN (or
/// ANY), and no zone transfer (there are no secondaries to feed).
fn serves(question: &Question<'_>) -> bool {
    matches!(question.qclass, DNSClass::IN | DNSClass::ANY)
        && !matches!(question.qtype, RecordType::AXFR | RecordType::IXFR)
}

/// The records a name owns: for SRV names, `extra` holds the additional
/// records of the targets.
#[derive(Default)]
struct Owned {
    records: Vec<Record>,
    extra: Vec<Record>,
}

fn in_zone<R: Rng + ?Sized>(
    zone: &Zone,
    index: &Index,
    question: &Question<'_>,
    rng: &mut R,
) -> Reply {
    let Some(owned) = owner(zone, index, question.name, rng) else {
        return negative(&zone.soa, index, ResponseCode::NXDomain);
    };
    let answers = of_type(owned.records, question.qtype);
    if answers.is_empty() {
        return negative(&zone.soa, index, ResponseCode::NoError);
    }
    Reply {
        rcode: ResponseCode::NoError,
        answers,
        authorities: Vec::new(),
        additionals: owned.extra,
    }
}

fn of_type(mut records: Vec<Record>, qtype: RecordType) -> Vec<Record> {
    if qtype != RecordType::ANY {
        records.retain(|r| r.record_type() == qtype);
    }
    records
}

/// NXDOMAIN or NODATA with the zone's SOA, its serial the index's
/// revision.
fn negative(soa: &Record, index: &Index, rcode: ResponseCode) -> Reply {
    Reply {
        rcode,
        answers: Vec::new(),
        authorities: vec![with_serial(soa, index)],
        additionals: Vec::new(),
    }
}

fn with_serial(soa: &Record, index: &Index) -> Record {
    let mut soa = soa.clone();
    if let RData::SOA(rdata) = &mut soa.data {
        // Serial arithmetic (RFC 1982) wraps, so the low 32 bits do.
        rdata.serial = index.revision() as u32;
    }
    soa
}

/// The records of `name` (in the zone), or `None` when it does not exist.
fn owner<R: Rng + ?Sized>(zone: &Zone, index: &Index, name: &Name, rng: &mut R) -> Option<Owned> {
    let depth = name.iter().len().checked_sub(zone.origin.iter().len())?;
    let labels: Vec<String> = name
        .iter()
        .take(depth)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    if name.eq_ignore_root(&zone.origin) {
        let mut soa = with_serial(&zone.soa, index);
        soa.name = name.clone();
        let mut ns = zone.ns.clone();
        ns.name = name.clone();
        return Some(Owned {
            records: vec![soa, ns],
            extra: Vec::new(),
        });
    }
    if name.eq_ignore_root(&zone.ns_name) {
        let records = zone
            .ns_addrs
            .iter()
            .map(|r| renamed(r.clone(), name))
            .collect();
        return Some(Owned {
            records,
            extra: Vec::new(),
        });
    }
    // Every name we hold is made of labels Drover writes; anything else
    // (an escaped dot, a wildcard, a byte outside [a-z0-9_-]) is not ours.
    if !labels.iter().all(|l| is_label(l)) {
        return None;
    }
    let origin = &zone.origin_text;
    let mut found = match labels.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["service" | "node"] => Some(Owned::default()),
        [proto, "service"] if Transport::from_label(proto).is_some() => Some(Owned::default()),
        [service, "service"] => {
            let service = format!("{service}.service.{origin}");
            let all: Vec<&Endpoint> = index.service(&service).map(|(_, ep)| ep).collect();
            nonempty(addresses(zone, name, all))
        }
        [srv, proto, "service"]
            if srv.starts_with('_') && Transport::from_label(proto).is_some() =>
        {
            let service = format!("{}.service.{origin}", &srv[1..]);
            let transport = Transport::from_label(proto)?;
            srv_records(zone, index, name, &service, transport, rng)
        }
        [label, service, "service"] => {
            let service = format!("{service}.service.{origin}");
            instance_or_tag(zone, index, name, label, &service)
        }
        [node, "node"] => {
            let node = index.instance(&format!("{node}.node.{origin}"))?;
            nonempty(addresses(zone, name, vec![node]))
        }
        _ => None,
    }?;
    // SRV records come shuffled with their targets' addresses in step.
    if found.extra.is_empty() {
        found.records.shuffle(rng);
    }
    Some(found)
}

fn nonempty(owned: Owned) -> Option<Owned> {
    (!owned.records.is_empty()).then_some(owned)
}

fn renamed(mut record: Record, name: &Name) -> Record {
    record.name = name.clone();
    record
}

/// A/AAAA records named `name` for `endpoints`.
fn addresses(zone: &Zone, name: &Name, endpoints: Vec<&Endpoint>) -> Owned {
    Owned {
        records: endpoints
            .into_iter()
            .map(|ep| address(zone, name.clone(), ep))
            .collect(),
        extra: Vec::new(),
    }
}

fn address(zone: &Zone, name: Name, endpoint: &Endpoint) -> Record {
    let rdata = match endpoint.host {
        std::net::IpAddr::V4(v4) => RData::A(A(v4)),
        std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, endpoint.ttl.unwrap_or(zone.ttl), rdata)
}

/// `<label>.<service>`: the instance `label`, else the instances tagged
/// `label`.
fn instance_or_tag(
    zone: &Zone,
    index: &Index,
    name: &Name,
    label: &str,
    service: &str,
) -> Option<Owned> {
    if let Some(endpoint) = index.instance(&format!("{label}.{service}")) {
        return Some(addresses(zone, name, vec![endpoint]));
    }
    let tagged: Vec<&Endpoint> = index
        .service(service)
        .map(|(_, ep)| ep)
        .filter(|ep| ep.has_tag(label))
        .collect();
    nonempty(addresses(zone, name, tagged))
}

/// SRV records of `service` for `transport`, in random order, with the
/// targets' addresses in the same order as `extra`.
fn srv_records<R: Rng + ?Sized>(
    zone: &Zone,
    index: &Index,
    name: &Name,
    service: &str,
    transport: Transport,
    rng: &mut R,
) -> Option<Owned> {
    let mut pairs: Vec<(Record, Record)> = index
        .service(service)
        .filter(|(_, ep)| ep.serves(transport))
        .filter_map(|(instance, ep)| {
            let target = Name::from_ascii(format!("{instance}.{service}")).ok()?;
            let ttl = ep.ttl.unwrap_or(zone.ttl);
            let srv = SRV::new(ep.priority, ep.weight, ep.port, target.clone());
            let record = Record::from_rdata(name.clone(), ttl, RData::SRV(srv));
            Some((record, address(zone, target, ep)))
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.shuffle(rng);
    let (records, extra) = pairs.into_iter().unzip();
    Some(Owned { records, extra })
}

/// PTR and the reverse zones; `None` when the name is not ours.
fn reverse(zone: &Zone, index: &Index, question: &Question<'_>) -> Option<Outcome> {
    let network = question.name.parse_arpa_name().ok();
    let address = network
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .map(|n| n.addr());
    let targets: Vec<Name> = address
        .into_iter()
        .flat_map(|addr| index.names_of(addr))
        .filter(|n| in_zone_text(n, &zone.origin_text))
        .filter_map(|n| Name::from_ascii(n).ok())
        .collect();
    let authority = zone
        .reverse
        .iter()
        .find(|rz| rz.apex.zone_of(question.name));
    let Some(rz) = authority else {
        let asks_ptr = matches!(question.qtype, RecordType::PTR | RecordType::ANY);
        if targets.is_empty() || !asks_ptr || question.qclass != DNSClass::IN {
            return None;
        }
        return Some(Outcome::Answer(ptr_reply(zone, question.name, targets)));
    };
    if !serves(question) {
        return Some(Outcome::Refused);
    }
    let reply = if question.name.eq_ignore_root(&rz.apex) {
        let ns = Record::from_rdata(
            question.name.clone(),
            zone.ttl,
            RData::NS(NS(zone.ns_name.clone())),
        );
        let soa = renamed(with_serial(&rz.soa, index), question.name);
        positive_or_nodata(rz, index, of_type(vec![soa, ns], question.qtype))
    } else if address.is_some() && !targets.is_empty() {
        let ptrs = ptr_reply(zone, question.name, targets).answers;
        positive_or_nodata(rz, index, of_type(ptrs, question.qtype))
    } else if address.is_none() && network.is_some() {
        // A name between the apex and the addresses: an empty non-terminal.
        negative(&rz.soa, index, ResponseCode::NoError)
    } else {
        negative(&rz.soa, index, ResponseCode::NXDomain)
    };
    Some(Outcome::Answer(reply))
}

fn positive_or_nodata(rz: &ReverseZone, index: &Index, answers: Vec<Record>) -> Reply {
    if answers.is_empty() {
        return negative(&rz.soa, index, ResponseCode::NoError);
    }
    Reply {
        answers,
        ..Reply::default()
    }
}

fn ptr_reply(zone: &Zone, name: &Name, targets: Vec<Name>) -> Reply {
    Reply {
        answers: targets
            .into_iter()
            .map(|t| Record::from_rdata(name.clone(), zone.ttl, RData::PTR(PTR(t))))
            .collect(),
        ..Reply::default()
    }
}

/// Whether the dotted `name` lies strictly below the dotted `origin`.
fn in_zone_text(name: &str, origin: &str) -> bool {
    name.len() > origin.len()
        && name.ends_with(origin)
        && name.as_bytes()[name.len() - origin.len() - 1] == b'.'
}

#[cfg(test)]
mod tests;
