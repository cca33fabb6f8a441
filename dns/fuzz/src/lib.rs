//! The fuzz target's zone, its checks and its seed queries, shared by the
//! `answer` fuzz target (`fuzz_targets/answer.rs`) and the stable test that
//! replays the corpus (`dns/tests/fuzz_corpus.rs` includes this file).
//!
//! Every input is answered twice, as a UDP and as a TCP request, through
//! [`Handler::answer_bytes`], the server's own request path (parse, answer
//! from the index, fit to the UDP size, encode). Besides "no panic, no
//! wait", [`check`] holds each response to what a client relies on:
//!
//! - both transports answer, or neither (a header under 12 bytes, or a
//!   response rather than a query);
//! - the response parses, carries the query's id, is a response, and is
//!   not SERVFAIL (this handler has no forwarder, so SERVFAIL can only mean
//!   the response failed to encode);
//! - over UDP it fits the client's size (512 bytes without EDNS, else its
//!   payload size but at least 512, capped by the zone's 4096);
//! - over TCP, TC is never set; over UDP, without TC, no answer or
//!   authority record is missing compared to TCP (only additionals may be
//!   cut without TC, RFC 2181 9).

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use drover_dns::config::ZoneConfig;
use drover_dns::handler::Handler;
use drover_dns::{Event, SharedIndex};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};

/// The zone's cap on UDP answers (the default of `max_udp_payload`).
const MAX_UDP: u16 = 4096;

/// Instances of the `big` service: more than any UDP answer holds.
pub const BIG: u32 = 300;

const SVC: &str = "/skydns/internal/drover/service/";

/// A zone-only handler (names outside the zone are refused, nothing is
/// forwarded) over an index like a small cluster's: `web` (three
/// instances, tags, one `tcp`-only, one `udp`-only), `dns` (IPv6),
/// `big` ([`BIG`] instances), `long` (labels of 63 characters), nodes, an
/// in-zone NS name with an address, and reverse zones for
/// `10.89.0.0/16` and `fd00::/64`.
pub fn handler() -> Handler {
    let config = ZoneConfig {
        zone_only: true,
        ns_addrs: vec!["10.89.0.1".parse().expect("an address")],
        reverse_networks: vec![
            "10.89.0.0/16".parse().expect("a network"),
            "fd00::/64".parse().expect("a network"),
        ],
        max_udp_payload: MAX_UDP,
        ..ZoneConfig::default()
    };
    let zone = config.zone().expect("the fuzz zone is valid");
    let index = SharedIndex::default();
    let put = |key: String, value: String| {
        let event = Event::Put {
            key: key.into_bytes(),
            value: value.into_bytes(),
        };
        index
            .write(|i| i.apply(&event))
            .expect("fixture records are valid");
    };
    let web = [
        ("a1", "10.89.3.7", r#","tags":["v2"],"protocol":"tcp""#),
        ("b2", "10.89.3.8", r#","tags":["blue","v2"]"#),
        ("c3", "10.89.4.2", r#","protocol":"udp","ttl":30"#),
    ];
    for (id, host, extra) in web {
        put(
            format!("{SVC}web/{id}"),
            format!(r#"{{"host":"{host}","port":8080,"priority":10,"weight":5{extra}}}"#),
        );
    }
    put(
        format!("{SVC}dns/d4"),
        r#"{"host":"fd00::4","port":53}"#.into(),
    );
    put(
        format!("{SVC}dns/d5"),
        r#"{"host":"10.89.3.7","port":53}"#.into(),
    );
    for n in 0..BIG {
        let host = Ipv4Addr::from(0x0a59_1000 + n);
        put(
            format!("{SVC}big/i{n:04}"),
            format!(r#"{{"host":"{host}","port":80}}"#),
        );
    }
    let long = "l".repeat(63);
    for n in 0..3 {
        put(
            format!("{SVC}{long}/{long:.60}{n:03}"),
            format!(r#"{{"host":"10.89.5.{n}","port":9}}"#),
        );
    }
    put(
        "/skydns/internal/drover/node/n1".into(),
        r#"{"host":"10.89.0.1"}"#.into(),
    );
    put(
        "/skydns/internal/drover/node/n2".into(),
        r#"{"host":"fd00::1"}"#.into(),
    );
    index.write(|i| i.set_revision(4242));
    Handler::new(zone, index, None)
}

/// Runs a future that must not wait: the zone-only path does no I/O.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the request path waited without a forwarder"),
    }
}

/// Answers `request` over UDP and TCP and checks both responses (see the
/// module's doc); panics with what was wrong.
pub fn check(handler: &Handler, request: &[u8]) {
    let udp = now(handler.answer_bytes(request, Protocol::Udp));
    let tcp = now(handler.answer_bytes(request, Protocol::Tcp));
    let (udp, tcp) = match (udp, tcp) {
        (Some(udp), Some(tcp)) => (udp, tcp),
        (None, None) => {
            let is_response = request.get(2).is_some_and(|b| b & 0x80 != 0);
            assert!(
                request.len() < 12 || is_response,
                "a {}-byte query got no response",
                request.len()
            );
            return;
        }
        (udp, tcp) => panic!(
            "one transport answered: udp {:?}, tcp {:?}",
            udp.map(|b| b.len()),
            tcp.map(|b| b.len())
        ),
    };
    let udp_msg = parsed("udp", &udp, request);
    let tcp_msg = parsed("tcp", &tcp, request);
    let limit = Message::from_vec(request)
        .ok()
        .and_then(|m| m.edns)
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP));
    assert!(
        udp.len() <= usize::from(limit),
        "a {}-byte UDP response over the client's {limit}",
        udp.len()
    );
    assert!(!tcp_msg.metadata.truncation, "TC set over TCP");
    if !udp_msg.metadata.truncation {
        assert_eq!(
            (udp_msg.answers.len(), udp_msg.authorities.len()),
            (tcp_msg.answers.len(), tcp_msg.authorities.len()),
            "records missing over UDP without TC"
        );
    }
}

/// The response `bytes` to `request` over `transport`, parsed and checked
/// for what holds on either transport.
fn parsed(transport: &str, bytes: &[u8], request: &[u8]) -> Message {
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => panic!("the {transport} response does not parse: {e}; {bytes:02x?}"),
    };
    let id = u16::from_be_bytes([request[0], request[1]]);
    assert_eq!(message.metadata.id, id, "{transport}: response id");
    assert_eq!(
        message.metadata.message_type,
        MessageType::Response,
        "{transport}: QR"
    );
    assert_ne!(
        message.metadata.response_code,
        ResponseCode::ServFail,
        "{transport}: SERVFAIL (an encoding failure) for {request:02x?}"
    );
    message
}

/// A query for `name` and `qtype`, with EDNS0 and that payload size when
/// `edns` is given.
fn query(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).expect("seed names are valid");
    message.add_query(Query::query(name, qtype));
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        message.set_edns(e);
    }
    message.to_vec().expect("seed queries encode")
}

/// A header with one question, then `tail`.
fn with_header(tail: &[u8]) -> Vec<u8> {
    let mut packet = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    packet.extend_from_slice(tail);
    packet
}

/// The seed corpus, by file name: real queries for every record kind the
/// zone serves, EDNS0 payload sizes, and broken messages.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use RecordType::{A, AAAA, ANY, AXFR, MX, NS, PTR, SOA, SRV, TXT};
    let z = "drover.internal.";
    let questions = [
        ("a-web", format!("web.service.{z}"), A),
        ("aaaa-web-nodata", format!("web.service.{z}"), AAAA),
        ("aaaa-dns", format!("dns.service.{z}"), AAAA),
        ("any-dns", format!("dns.service.{z}"), ANY),
        ("srv-web-tcp", format!("_web._tcp.service.{z}"), SRV),
        ("srv-web-udp", format!("_web._udp.service.{z}"), SRV),
        ("srv-big", format!("_big._tcp.service.{z}"), SRV),
        ("a-big", format!("big.service.{z}"), A),
        ("a-tag", format!("v2.web.service.{z}"), A),
        ("a-instance", format!("a1.web.service.{z}"), A),
        ("a-mixed-case", "WeB.SeRvIcE.Drover.Internal.".to_owned(), A),
        ("a-node", format!("n1.node.{z}"), A),
        ("aaaa-node", format!("n2.node.{z}"), AAAA),
        ("a-ns", format!("ns.{z}"), A),
        ("soa-apex", z.to_owned(), SOA),
        ("ns-apex", z.to_owned(), NS),
        ("any-apex", z.to_owned(), ANY),
        ("axfr-apex", z.to_owned(), AXFR),
        ("mx-web-nodata", format!("web.service.{z}"), MX),
        ("a-nxdomain", format!("nope.service.{z}"), A),
        ("txt-empty-nonterminal", format!("_tcp.service.{z}"), TXT),
        ("a-outside", "example.com.".to_owned(), A),
        ("ptr-v4", "7.3.89.10.in-addr.arpa.".to_owned(), PTR),
        ("ptr-v4-unknown", "9.9.89.10.in-addr.arpa.".to_owned(), PTR),
        ("soa-reverse-apex", "89.10.in-addr.arpa.".to_owned(), SOA),
        (
            "ptr-v6",
            "4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.".to_owned(),
            PTR,
        ),
        ("a-long", format!("{l}.service.{z}", l = "l".repeat(63)), A),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = questions
        .iter()
        .enumerate()
        .map(|(i, (file, name, qtype))| (file.to_string(), query(i as u16, name, *qtype, None)))
        .collect();
    for payload in [512, 1232, 1400, 4096, 65535] {
        for (kind, name, qtype) in [
            ("a-big", format!("big.service.{z}"), A),
            ("srv-big", format!("_big._tcp.service.{z}"), SRV),
        ] {
            seeds.push((
                format!("edns{payload}-{kind}"),
                query(7, &name, qtype, Some(payload)),
            ));
        }
    }
    seeds.extend(broken(z));
    seeds
}

/// Well-formed queries the server must refuse or reject, and malformed
/// messages: truncations, compression loops, bad counts, a response.
fn broken(z: &str) -> Vec<(String, Vec<u8>)> {
    let web = format!("web.service.{z}");
    let mut out = Vec::new();
    let valid = query(9, &web, RecordType::A, Some(1232));
    // An OPT record with payload 0 and EDNS version 1 (BADVERS): the
    // payload is the CLASS field, 2 bytes after the OPT's root name.
    let opt = valid.len() - 11;
    let mut tiny = valid.clone();
    tiny[opt + 3..opt + 5].copy_from_slice(&[0, 0]);
    out.push(("edns0-payload-zero".to_owned(), tiny));
    let mut badvers = valid.clone();
    badvers[opt + 6] = 1;
    out.push(("edns-version-1".to_owned(), badvers));
    for cut in [0, 5, 12, 13, 20, valid.len() - 11, valid.len() - 1] {
        out.push((format!("truncated-{cut}"), valid[..cut].to_vec()));
    }
    let mut chaos = Message::new(3, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii(&web).expect("valid"), RecordType::A);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    out.push(("class-ch".to_owned(), chaos.to_vec().expect("encodes")));
    let mut two = Message::new(4, MessageType::Query, OpCode::Query);
    for name in [&web, z] {
        two.add_query(Query::query(
            Name::from_ascii(name).expect("valid"),
            RecordType::A,
        ));
    }
    out.push(("two-questions".to_owned(), two.to_vec().expect("encodes")));
    let none = Message::new(5, MessageType::Query, OpCode::Query);
    out.push(("no-question".to_owned(), none.to_vec().expect("encodes")));
    let mut notify = valid.clone();
    notify[2] = 0x20; // opcode 4, NOTIFY
    out.push(("opcode-notify".to_owned(), notify));
    let mut response = valid.clone();
    response[2] |= 0x80;
    out.push(("qr-response".to_owned(), response));
    out.push((
        "loop-self".to_owned(),
        with_header(&[0xc0, 0x0c, 0, 1, 0, 1]),
    ));
    out.push((
        "loop-pair".to_owned(),
        with_header(&[0xc0, 0x0e, 0xc0, 0x0c, 0, 1, 0, 1]),
    ));
    out.push((
        "loop-label".to_owned(),
        with_header(&[1, b'a', 0xc0, 0x0c, 0, 1, 0, 1]),
    ));
    out.push((
        "pointer-past-end".to_owned(),
        with_header(&[0xc0, 0xff, 0, 1, 0, 1]),
    ));
    out.push((
        "label-64".to_owned(),
        with_header(&[64, b'a', 0, 0, 1, 0, 1]),
    ));
    let mut long = Vec::new();
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    out.push(("name-over-255".to_owned(), with_header(&long)));
    out.push((
        "counts-ffff".to_owned(),
        vec![
            0xab, 0xcd, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    ));
    out
}
