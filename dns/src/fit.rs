//! Fitting an answer into the size a UDP client can take (RFC 1035 4.2.1,
//! RFC 6891 6.2.3): 512 bytes, or the EDNS0 payload size it advertised
//! (capped by the server's own limit).
//!
//! hickory's encoder already stops at the limit and sets TC, but it keeps
//! writing later sections after an earlier one was cut, and it writes the
//! OPT record last, where a full message has no room left for it: a client
//! would then see a truncated answer without EDNS and fall back to 512
//! bytes. So the answer is first encoded without OPT against the limit
//! less the OPT record's 11 bytes; what fits there is kept:
//!
//! - answers cut: TC, the answers that fit, no other section (RFC 2181 9:
//!   a truncated answer is retried over TCP, the rest is of no use);
//! - authority cut: TC, answers and the authority that fit;
//! - only additionals cut: no TC (RFC 2181 9), the additionals that fit.
//!
//! hickory compresses only the first 120 names of a message (as Unbound,
//! against CVE-2024-8508); the trial uses the same encoder, so it counts
//! the uncompressed names after those too.
//!
//! A cheap upper bound of the size skips that trial for the usual small
//! answer, so that only large ones are encoded twice.

use hickory_server::proto::op::Metadata;
use hickory_server::proto::rr::{RData, Record};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use crate::answer::Reply;

/// Size of an OPT record without options: root name, type, class, TTL,
/// RDLENGTH.
pub const OPT_LEN: u16 = 11;

/// Size of the message header.
const HEADER_LEN: usize = 12;

/// Trims `reply` to fit in `limit` bytes with the question of `queries`
/// (and an OPT record when `edns`); returns whether the answer was cut
/// (TC). An answer whose trial encoding fails for another reason than its
/// size is left as it is, for the final encoding to report.
pub fn fit(
    reply: &mut Reply,
    metadata: &Metadata,
    queries: &Queries,
    limit: u16,
    edns: bool,
) -> bool {
    let room = if edns {
        limit.saturating_sub(OPT_LEN)
    } else {
        limit
    };
    if upper_bound(reply, queries) <= usize::from(room) {
        return false;
    }
    let mut buf = Vec::with_capacity(usize::from(room));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(room);
    let trial = MessageResponseBuilder::new(queries, None).build(
        *metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    let Ok(info) = trial.destructive_emit(&mut encoder) else {
        return false;
    };
    let counts = info.counts();
    let (answers, authorities, additionals) = (
        usize::from(counts.answers),
        usize::from(counts.authorities),
        usize::from(counts.additionals),
    );
    if answers < reply.answers.len() {
        reply.answers.truncate(answers);
        reply.authorities.clear();
        reply.additionals.clear();
        return true;
    }
    if authorities < reply.authorities.len() {
        reply.authorities.truncate(authorities);
        reply.additionals.clear();
        return true;
    }
    reply.additionals.truncate(additionals);
    false
}

/// The size of the message without name compression: never less than
/// the encoded size.
fn upper_bound(reply: &Reply, queries: &Queries) -> usize {
    HEADER_LEN
        + queries.as_bytes().len()
        + reply
            .answers
            .iter()
            .chain(&reply.authorities)
            .chain(&reply.additionals)
            .map(record_upper_bound)
            .sum::<usize>()
}

/// Owner name, type, class, TTL, RDLENGTH and RDATA, uncompressed; any
/// record kind this server does not build counts as too large, so that it
/// goes through the trial.
fn record_upper_bound(record: &Record) -> usize {
    let name = |n: &hickory_server::proto::rr::Name| n.len() + 1;
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name(&srv.target),
        RData::PTR(ptr) => name(&ptr.0),
        RData::NS(ns) => name(&ns.0),
        RData::SOA(soa) => name(&soa.mname) + name(&soa.rname) + 20,
        _ => usize::from(u16::MAX),
    };
    name(&record.name) + 10 + rdata
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_server::net::xfer::Protocol;
    use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
    use hickory_server::proto::rr::rdata::{A, SOA};
    use hickory_server::proto::rr::{Name, RecordType};
    use hickory_server::server::Request;

    use super::*;

    fn request(name: &Name) -> Request {
        let mut message = Message::new(7, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(name.clone(), RecordType::A));
        let bytes = message.to_vec().unwrap();
        Request::from_bytes(bytes, "127.0.0.1:5353".parse().unwrap(), Protocol::Udp).unwrap()
    }

    fn a(name: &Name, i: u32) -> Record {
        Record::from_rdata(
            name.clone(),
            5,
            RData::A(A(Ipv4Addr::from(0x0a59_0000 + i))),
        )
    }

    fn soa() -> Record {
        let n = Name::from_ascii("drover.internal.").unwrap();
        let soa = SOA::new(n.clone(), n.clone(), 1, 1, 1, 1, 5);
        Record::from_rdata(n, 5, RData::SOA(soa))
    }

    /// Encodes as the server will: the trimmed reply, then the OPT record.
    fn encoded_len(reply: &Reply, request: &Request, edns: bool) -> usize {
        let mut buf = Vec::new();
        let mut encoder = BinEncoder::new(&mut buf);
        let opt = hickory_server::proto::op::Edns::new();
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if edns {
            builder.edns(&opt);
        }
        builder
            .build(
                request.metadata,
                reply.answers.iter(),
                reply.authorities.iter(),
                std::iter::empty(),
                reply.additionals.iter(),
            )
            .destructive_emit(&mut encoder)
            .unwrap();
        buf.len()
    }

    #[test]
    fn small_answers_are_left_alone() {
        let name = Name::from_ascii("web.service.drover.internal.").unwrap();
        let req = request(&name);
        let mut reply = Reply {
            answers: (0..3).map(|i| a(&name, i)).collect(),
            ..Reply::default()
        };
        let before = reply.clone();
        assert!(!fit(&mut reply, &req.metadata, &req.queries, 512, false));
        assert_eq!(reply, before);
    }

    #[test]
    fn cut_answers_keep_room_for_opt_and_drop_the_rest() {
        let name = Name::from_ascii("web.service.drover.internal.").unwrap();
        let req = request(&name);
        for (limit, edns) in [(512, false), (512, true), (1232, true), (4096, true)] {
            let mut reply = Reply {
                answers: (0..300).map(|i| a(&name, i)).collect(),
                authorities: vec![soa()],
                additionals: vec![a(&name, 999)],
                ..Reply::default()
            };
            assert!(fit(&mut reply, &req.metadata, &req.queries, limit, edns));
            assert!(reply.authorities.is_empty() && reply.additionals.is_empty());
            let n = reply.answers.len();
            let len = encoded_len(&reply, &req, edns);
            assert!(len <= usize::from(limit), "{limit}: {len} bytes");
            // Full, give or take one record: hickory writes a name whole
            // before it compresses it, so a record needs its name's room.
            assert!(
                len + 45 > usize::from(limit),
                "{limit}: {n} answers, {len} bytes"
            );
        }
    }

    #[test]
    fn cut_additionals_alone_do_not_truncate() {
        let name = Name::from_ascii("web.service.drover.internal.").unwrap();
        let req = request(&name);
        let extra = Name::from_ascii("a-long-instance-name.web.service.drover.internal.").unwrap();
        let mut reply = Reply {
            answers: (0..10).map(|i| a(&name, i)).collect(),
            additionals: (0..40).map(|i| a(&extra, i)).collect(),
            ..Reply::default()
        };
        assert!(!fit(&mut reply, &req.metadata, &req.queries, 512, true));
        assert_eq!(reply.answers.len(), 10);
        assert!(!reply.additionals.is_empty() && reply.additionals.len() < 40);
        assert!(encoded_len(&reply, &req, true) <= 512);
    }
}
