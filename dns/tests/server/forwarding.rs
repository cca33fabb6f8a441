//! Names outside the zone go to the upstreams; names of the zone never do.

use std::time::{Duration, Instant};

use anyhow::Result;
use drover_dns::config::ZoneConfig;
use tokio::net::UdpSocket;

use crate::harness::{fixture, FakeUpstream, TestServer};

fn config(timeout_ms: u64) -> ZoneConfig {
    ZoneConfig {
        reverse_networks: vec!["10.89.0.0/16".parse().unwrap()],
        forward_timeout_ms: timeout_ms,
        ..ZoneConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_names_are_forwarded_and_not_authoritative() -> Result<()> {
    let upstream = FakeUpstream::start().await?;
    let server = TestServer::start(config(2000), vec![upstream.addr]).await?;
    let dig = server.dig(&["example.com", "A"]).await?;
    assert_eq!(dig.status, "NOERROR", "{}", dig.text);
    assert_eq!(dig.answer_data(), ["192.0.2.53"]);
    assert!(!dig.has("aa") && dig.has("ra"), "{}", dig.text);
    assert_eq!(upstream.seen(), ["example.com./udp"]);
    // The question's case travels as asked (0x20 randomisation survives).
    let dig = server.dig(&["ExAmple.ORG"]).await?;
    assert_eq!(dig.answer[0].name, "ExAmple.ORG.");
    // A truncated upstream answer is asked again over TCP, and comes
    // whole to a TCP client.
    let dig = server.dig(&["big.example.com", "+tcp"]).await?;
    assert_eq!(dig.answer.len(), 100, "{}", dig.text);
    let seen = upstream.seen();
    assert!(
        seen.contains(&"big.example.com./udp".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"big.example.com./tcp".to_owned()),
        "{seen:?}"
    );
    // ...and is cut to fit a UDP client, with TC.
    let dig = server
        .dig(&["big.example.com", "+ignore", "+bufsize=512"])
        .await?;
    assert!(dig.has("tc") && dig.size <= 512, "{}", dig.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_names_are_never_forwarded() -> Result<()> {
    let upstream = FakeUpstream::start().await?;
    let server = TestServer::start(config(2000), vec![upstream.addr]).await?;
    fixture(&server.index);
    for args in [
        &["web.service.drover.internal", "A"][..],
        &["nope.service.drover.internal", "A"],
        &["web.service.drover.internal", "MX"],
        &["deep.a.b.c.drover.internal", "A"],
        &["drover.internal", "DNSKEY"],
        &["web.service.drover.internal", "CH", "TXT"],
        &["-x", "10.89.77.77"],
        &["-x", "10.89.3.7"],
        &["WEB.SERVICE.DROVER.INTERNAL", "A", "+tcp"],
    ] {
        let dig = server.dig(args).await?;
        assert_ne!(dig.status, "SERVFAIL", "{args:?}: {}", dig.text);
    }
    assert_eq!(upstream.seen(), Vec::<String>::new());
    // The upstream works: an outside name reaches it.
    server.dig(&["example.net"]).await?;
    assert_eq!(upstream.seen(), ["example.net./udp"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_gives_servfail_within_the_timeout() -> Result<()> {
    // A socket that never answers, and a port nobody listens on.
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let closed = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    // dig gives up after 5 s (see the harness), so an answer at all shows
    // the server gave up on the upstream first; the lower bound shows it
    // waited for the upstream's timeout before doing so.
    let server = TestServer::start(config(300), vec![silent.local_addr()?]).await?;
    let start = Instant::now();
    let dig = server.dig(&["example.com"]).await?;
    let took = start.elapsed();
    assert_eq!(dig.status, "SERVFAIL", "{}", dig.text);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    drop(server);
    // A refused port fails at once: with a forwarding timeout far beyond
    // dig's 5 s, a SERVFAIL can only come from the refusal.
    let server = TestServer::start(config(60_000), vec![closed]).await?;
    let dig = server.dig(&["example.com"]).await?;
    assert_eq!(dig.status, "SERVFAIL", "{}", dig.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_fail_over_in_order() -> Result<()> {
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let upstream = FakeUpstream::start().await?;
    let server = TestServer::start(config(300), vec![silent.local_addr()?, upstream.addr]).await?;
    let dig = server.dig(&["example.com"]).await?;
    assert_eq!(dig.answer_data(), ["192.0.2.53"], "{}", dig.text);
    // An upstream's SERVFAIL is tried elsewhere, then reported.
    let dig = server.dig(&["fail.example.com"]).await?;
    assert_eq!(dig.status, "SERVFAIL", "{}", dig.text);
    assert_eq!(
        upstream.seen(),
        ["example.com./udp", "fail.example.com./udp"]
    );
    Ok(())
}
