//! Every record kind and flag of the zone, as dig sees them.

use std::collections::BTreeSet;

use anyhow::Result;
use drover_dns::config::ZoneConfig;

use crate::harness::{fixture, Dig, TestServer};

async fn server() -> Result<TestServer> {
    let config = ZoneConfig {
        reverse_networks: vec!["10.89.0.0/16".parse()?],
        zone_only: true,
        ..ZoneConfig::default()
    };
    let server = TestServer::start(config, Vec::new()).await?;
    fixture(&server.index);
    Ok(server)
}

/// NXDOMAIN or NODATA: no answer, the SOA in authority with the negative
/// TTL, AA.
fn assert_negative(dig: &Dig, status: &str, soa_owner: &str) {
    assert_eq!(dig.status, status, "{}", dig.text);
    assert!(dig.has("aa"), "{}", dig.text);
    assert!(dig.answer.is_empty(), "{}", dig.text);
    let [soa] = &dig.authority[..] else {
        panic!("one SOA expected:\n{}", dig.text)
    };
    assert_eq!(
        (soa.name.as_str(), soa.rtype.as_str(), soa.ttl),
        (soa_owner, "SOA", 5)
    );
    // mname rname serial refresh retry expire minimum
    let fields: Vec<&str> = soa.data.split_whitespace().collect();
    assert_eq!(fields[2], "42", "serial = the index's revision");
    assert_eq!(fields[6], "5", "minimum = the negative TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_of_a_service_are_every_instance_shuffled() -> Result<()> {
    let server = server().await?;
    let dig = server.dig(&["web.service.drover.internal", "A"]).await?;
    assert_eq!(dig.status, "NOERROR");
    assert!(
        dig.has("aa") && dig.has("qr") && !dig.has("tc"),
        "{}",
        dig.text
    );
    assert_eq!(dig.answer_data(), ["10.89.3.7", "10.89.3.8", "10.89.4.2"]);
    assert!(dig.answer.iter().all(|r| r.ttl == 5 && r.rtype == "A"));
    let mut orders = BTreeSet::new();
    for _ in 0..12 {
        let dig = server.dig(&["web.service.drover.internal"]).await?;
        let order: Vec<String> = dig.answer.iter().map(|r| r.data.clone()).collect();
        orders.insert(order.join(","));
    }
    assert!(orders.len() > 1, "one order in 12 answers: {orders:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_of_an_ipv4_service_is_nodata_and_ipv6_answers() -> Result<()> {
    let server = server().await?;
    let dig = server.dig(&["web.service.drover.internal", "AAAA"]).await?;
    assert_negative(&dig, "NOERROR", "drover.internal.");
    let dig = server.dig(&["dns.service.drover.internal", "AAAA"]).await?;
    assert_eq!(dig.answer_data(), ["fd00::4"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_answers_carry_their_targets_addresses() -> Result<()> {
    let server = server().await?;
    let dig = server
        .dig(&["_web._tcp.service.drover.internal", "SRV"])
        .await?;
    assert!(dig.has("aa"), "{}", dig.text);
    assert_eq!(
        dig.answer_data(),
        [
            "10 5 8080 a1.web.service.drover.internal.",
            "10 5 8080 b2.web.service.drover.internal.",
            "10 5 8080 c3.web.service.drover.internal.",
        ]
    );
    let mut extra: Vec<(String, String)> = dig
        .additional
        .iter()
        .map(|r| (r.name.clone(), r.data.clone()))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            ("a1.web.service.drover.internal.".into(), "10.89.3.7".into()),
            ("b2.web.service.drover.internal.".into(), "10.89.3.8".into()),
            ("c3.web.service.drover.internal.".into(), "10.89.4.2".into()),
        ]
    );
    // Each target resolves on its own.
    let dig = server.dig(&["b2.web.service.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.3.8"]);
    assert!(dig.has("aa"));
    // a1 is tcp only.
    let dig = server
        .dig(&["_web._udp.service.drover.internal", "SRV"])
        .await?;
    assert_eq!(dig.answer.len(), 2, "{}", dig.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_nodes_and_ptr() -> Result<()> {
    let server = server().await?;
    let dig = server.dig(&["v2.web.service.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.3.7", "10.89.4.2"]);
    let dig = server.dig(&["blue.web.service.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.3.8"]);
    let dig = server.dig(&["n2.node.drover.internal"]).await?;
    assert_eq!(dig.answer_data(), ["10.89.1.1"]);
    assert!(dig.has("aa"));
    let dig = server.dig(&["-x", "10.89.3.7"]).await?;
    assert_eq!(dig.answer_data(), ["a1.web.service.drover.internal."]);
    assert!(dig.has("aa"), "{}", dig.text);
    let dig = server.dig(&["-x", "10.89.0.1"]).await?;
    assert_eq!(dig.answer_data(), ["n1.node.drover.internal."]);
    let dig = server.dig(&["-x", "10.89.200.200"]).await?;
    assert_negative(&dig, "NXDOMAIN", "89.10.in-addr.arpa.");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apex_has_soa_and_ns() -> Result<()> {
    let server = server().await?;
    let dig = server.dig(&["drover.internal", "SOA"]).await?;
    assert!(dig.has("aa"));
    let [soa] = &dig.answer[..] else {
        panic!("{}", dig.text)
    };
    assert_eq!(
        soa.data,
        "ns.drover.internal. hostmaster.drover.internal. 42 3600 600 86400 5"
    );
    let dig = server.dig(&["drover.internal", "NS"]).await?;
    assert_eq!(dig.answer_data(), ["ns.drover.internal."]);
    assert!(dig.has("aa"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_and_nodata_carry_the_soa() -> Result<()> {
    let server = server().await?;
    for name in [
        "api.service.drover.internal",
        "zz.web.service.drover.internal",
        "n9.node.drover.internal",
        "what.drover.internal",
    ] {
        let dig = server.dig(&[name, "A"]).await?;
        assert_negative(&dig, "NXDOMAIN", "drover.internal.");
    }
    for (name, qtype) in [
        ("web.service.drover.internal", "TXT"),
        ("service.drover.internal", "A"),
        ("_tcp.service.drover.internal", "A"),
        ("drover.internal", "A"),
        ("_web._tcp.service.drover.internal", "A"),
    ] {
        let dig = server.dig(&[name, qtype]).await?;
        assert_negative(&dig, "NOERROR", "drover.internal.");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_classes_and_outside_names_are_refused_in_zone_only_mode() -> Result<()> {
    let server = server().await?;
    let dig = server
        .dig(&["web.service.drover.internal", "CH", "TXT"])
        .await?;
    assert_eq!(dig.status, "REFUSED", "{}", dig.text);
    assert!(!dig.has("aa"));
    let dig = server.dig(&["example.com", "A"]).await?;
    assert_eq!(dig.status, "REFUSED", "{}", dig.text);
    assert!(!dig.has("ra"), "zone-only: no recursion offered");
    let dig = server.dig(&["drover.internal", "AXFR", "+tcp"]).await;
    // dig reports a refused transfer as a failure; either way no zone.
    if let Ok(dig) = dig {
        assert!(dig.answer.is_empty(), "{}", dig.text);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_the_index_show_at_once_and_shutdown_is_clean() -> Result<()> {
    let server = server().await?;
    crate::harness::put(
        &server.index,
        &format!("{}web/e5", crate::harness::SVC),
        r#"{"host":"10.89.5.5","port":8080}"#,
    );
    let dig = server.dig(&["web.service.drover.internal"]).await?;
    assert_eq!(dig.answer.len(), 4);
    assert!(server.is_running());
    server.stop().await
}
