//! EDNS0 payload sizes, truncation over UDP and whole answers over TCP.

use anyhow::Result;
use drover_dns::config::ZoneConfig;

use crate::harness::{many, TestServer};

/// A server whose `big` service has 200 instances.
async fn server() -> Result<TestServer> {
    let config = ZoneConfig {
        zone_only: true,
        ..ZoneConfig::default()
    };
    let server = TestServer::start(config, Vec::new()).await?;
    many(&server.index, "big", 200);
    Ok(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_honour_the_clients_payload_size() -> Result<()> {
    let server = server().await?;
    let mut previous = 0;
    for (bufsize, granted) in [(512, 512), (1232, 1232), (2048, 2048), (4096, 4096)] {
        let arg = format!("+bufsize={bufsize}");
        let dig = server
            .dig(&["big.service.drover.internal", &arg, "+ignore"])
            .await?;
        assert_eq!(dig.edns_udp, Some(granted), "{}", dig.text);
        assert!(dig.has("tc") && dig.has("aa"), "{}", dig.text);
        assert!(dig.size <= bufsize, "{bufsize}: {} bytes", dig.size);
        // Full but for a record: as many as fit.
        assert!(
            dig.size + 45 > bufsize,
            "{bufsize}: only {} bytes",
            dig.size
        );
        assert!(
            dig.answer.len() > previous,
            "{bufsize}: {}",
            dig.answer.len()
        );
        previous = dig.answer.len();
    }
    // Less than 512 counts as 512 (RFC 6891); more than ours is capped.
    let dig = server
        .dig(&["big.service.drover.internal", "+bufsize=100", "+ignore"])
        .await?;
    assert_eq!(dig.edns_udp, Some(512));
    assert!(dig.size <= 512 && dig.has("tc"));
    // hickory compresses the first 120 names of a message only (as
    // Unbound, against CVE-2024-8508), so 200 addresses do not fit 4096
    // bytes either; 20 fit in 512, and then there is no TC.
    let dig = server
        .dig(&["big.service.drover.internal", "+bufsize=4096", "+ignore"])
        .await?;
    assert!(dig.has("tc") && dig.size <= 4096, "{}", dig.text);
    assert!(dig.answer.len() > 150, "{}", dig.answer.len());
    many(&server.index, "small", 20);
    let dig = server
        .dig(&["small.service.drover.internal", "+bufsize=512", "+ignore"])
        .await?;
    assert_eq!(dig.answer.len(), 20, "{}", dig.text);
    assert!(!dig.has("tc"));
    // Without EDNS: 512 bytes and no OPT in the answer.
    let dig = server
        .dig(&["big.service.drover.internal", "+noedns", "+ignore"])
        .await?;
    assert_eq!(dig.edns_udp, None, "{}", dig.text);
    assert!(dig.size <= 512 && dig.has("tc"));
    assert!(!dig.answer.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_the_payload_size() -> Result<()> {
    let config = ZoneConfig {
        zone_only: true,
        max_udp_payload: 1232,
        ..ZoneConfig::default()
    };
    let server = TestServer::start(config, Vec::new()).await?;
    many(&server.index, "big", 200);
    let dig = server
        .dig(&["big.service.drover.internal", "+bufsize=65000", "+ignore"])
        .await?;
    assert_eq!(dig.edns_udp, Some(1232));
    assert!(dig.size <= 1232 && dig.has("tc"), "{}", dig.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_instances_truncate_over_udp_and_arrive_whole_over_tcp() -> Result<()> {
    let server = server().await?;
    let udp = server
        .dig(&["big.service.drover.internal", "+bufsize=1232", "+ignore"])
        .await?;
    assert!(udp.has("tc"), "{}", udp.text);
    assert!(udp.answer.len() < 200);
    let tcp = server.dig(&["big.service.drover.internal", "+tcp"]).await?;
    assert!(!tcp.has("tc") && tcp.has("aa"), "{}", tcp.text);
    assert_eq!(tcp.answer.len(), 200);
    let mut hosts = tcp.answer_data();
    hosts.dedup();
    assert_eq!(hosts.len(), 200);
    // Without +ignore, dig itself retries over TCP after the TC.
    let retried = server.dig(&["big.service.drover.internal"]).await?;
    assert_eq!(retried.answer.len(), 200, "{}", retried.text);
    // SRV: 200 records and 200 additional addresses over TCP.
    let srv = server
        .dig(&["_big._tcp.service.drover.internal", "SRV", "+tcp"])
        .await?;
    assert_eq!((srv.answer.len(), srv.additional.len()), (200, 200));
    let srv = server
        .dig(&["_big._tcp.service.drover.internal", "SRV", "+ignore"])
        .await?;
    assert!(srv.has("tc") && srv.additional.is_empty(), "{}", srv.text);
    Ok(())
}
