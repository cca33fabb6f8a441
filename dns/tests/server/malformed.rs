//! Malformed packets over UDP and TCP never stop the server: after each
//! kind, a valid query is still answered. Well-formed but unsupported
//! requests get their error codes.

use std::time::Duration;

use anyhow::{Context, Result};
use drover_dns::config::ZoneConfig;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::harness::{fixture, TestServer};

async fn server() -> Result<TestServer> {
    let config = ZoneConfig {
        zone_only: true,
        ..ZoneConfig::default()
    };
    let server = TestServer::start(config, Vec::new()).await?;
    fixture(&server.index);
    Ok(server)
}

fn query(name: &str) -> Message {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message
}

/// A header with one question, then `tail`.
fn with_header(tail: &[u8]) -> Vec<u8> {
    let mut packet = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    packet.extend_from_slice(tail);
    packet
}

/// The corpus: truncations of a valid query, compression loops,
/// oversized and random packets.
fn corpus() -> Vec<Vec<u8>> {
    let valid = query("web.service.drover.internal.").to_vec().unwrap();
    let mut packets: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
    // Compression loops: a pointer to itself, two pointers to each other,
    // a label then a pointer back to it.
    packets.push(with_header(&[0xc0, 0x0c, 0, 1, 0, 1]));
    packets.push(with_header(&[0xc0, 0x0e, 0xc0, 0x0c, 0, 1, 0, 1]));
    packets.push(with_header(&[1, b'a', 0xc0, 0x0c, 0, 1, 0, 1]));
    // A pointer past the end, a label longer than 63, a name over 255.
    packets.push(with_header(&[0xc0, 0xff, 0, 1, 0, 1]));
    packets.push(with_header(&[64, b'a', 0, 0, 1, 0, 1]));
    let mut long = Vec::new();
    for _ in 0..10 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    packets.push(with_header(&long));
    // Counts that promise far more than the packet holds.
    packets.push(vec![
        0xab, 0xcd, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    // Oversized: a valid query followed by 60 kB of garbage, and 60 kB of
    // nothing but garbage.
    let mut big = valid.clone();
    big.extend(std::iter::repeat_n(0xee, 60_000));
    packets.push(big);
    packets.push(vec![0xff; 60_000]);
    // A response (QR set): dropped, never answered.
    let mut response = valid.clone();
    response[2] |= 0x80;
    packets.push(response);
    // Random bytes, and random bytes behind a plausible header.
    let mut rng = StdRng::seed_from_u64(0xd05e);
    for i in 0..400 {
        let len = rng.random_range(0..600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        packets.push(if i % 2 == 0 {
            bytes
        } else {
            with_header(&bytes)
        });
    }
    packets
}

/// A valid query is answered, over UDP and TCP.
async fn still_answers(server: &TestServer) -> Result<()> {
    for transport in ["+notcp", "+tcp"] {
        let dig = server
            .dig(&["web.service.drover.internal", transport])
            .await
            .context(transport)?;
        assert_eq!(dig.answer.len(), 3, "{transport}: {}", dig.text);
    }
    assert!(server.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_udp_packets_do_not_stop_the_server() -> Result<()> {
    let server = server().await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    for packet in corpus() {
        socket.send_to(&packet, server.addr()).await?;
    }
    still_answers(&server).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tcp_streams_do_not_stop_the_server() -> Result<()> {
    let server = server().await?;
    // A client that sends one byte and waits: it must not hold the others.
    let mut stalled = TcpStream::connect(server.addr()).await?;
    stalled.write_all(&[0]).await?;
    for packet in corpus().into_iter().step_by(3) {
        let mut stream = TcpStream::connect(server.addr()).await?;
        let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
        stream.write_all(&len.to_be_bytes()).await?;
        let _ = stream.write_all(&packet).await;
    }
    // A frame that promises more than it sends, then closes; an empty
    // frame; raw garbage without framing.
    for bytes in [&[0x01, 0xf4, 1, 2, 3][..], &[0, 0], &[0xff; 300]] {
        let mut stream = TcpStream::connect(server.addr()).await?;
        stream.write_all(bytes).await?;
    }
    still_answers(&server).await?;
    drop(stalled);
    // Several queries on one connection are each answered.
    let mut stream = TcpStream::connect(server.addr()).await?;
    for _ in 0..3 {
        let reply = exchange_tcp(
            &mut stream,
            &query("web.service.drover.internal.").to_vec()?,
        )
        .await?;
        assert_eq!(reply.answers.len(), 3);
    }
    Ok(())
}

async fn exchange_tcp(stream: &mut TcpStream, request: &[u8]) -> Result<Message> {
    let len = u16::try_from(request.len())?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(request).await?;
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16()).await??;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}

async fn exchange_udp(server: &TestServer, request: &Message) -> Result<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&request.to_vec()?, server.addr()).await?;
    let mut buf = vec![0; 65535];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await??;
    Ok(Message::from_vec(&buf[..len])?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_requests_get_their_error_codes() -> Result<()> {
    let server = server().await?;
    // Two questions: FORMERR.
    let mut two = query("web.service.drover.internal.");
    two.add_query(Query::query(
        Name::from_ascii("drover.internal.")?,
        RecordType::SOA,
    ));
    let reply = exchange_udp(&server, &two).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // No question: FORMERR.
    let none = Message::new(7, MessageType::Query, OpCode::Query);
    let reply = exchange_udp(&server, &none).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // NOTIFY and other opcodes: NOTIMP.
    let mut notify = query("drover.internal.");
    notify.metadata.op_code = OpCode::Notify;
    let reply = exchange_udp(&server, &notify).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    // EDNS version 1: BADVERS, with our OPT saying version 0.
    let mut v1 = query("web.service.drover.internal.");
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.set_edns(edns);
    let reply = exchange_udp(&server, &v1).await?;
    // BADVERS and BADSIG share code 16; hickory decodes it as BADSIG.
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert_eq!(reply.edns.as_ref().map(Edns::version), Some(0));
    assert!(reply.answers.is_empty());
    // The ID and the question are echoed.
    let reply = exchange_udp(&server, &query("WEB.service.drover.internal.")).await?;
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(
        reply.queries[0].name().to_ascii(),
        "WEB.service.drover.internal."
    );
    assert!(reply.metadata.authoritative);
    still_answers(&server).await
}
