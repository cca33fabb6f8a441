//! Relayed batches into the index: chunks staged until whole, resets
//! replacing, deltas changing, a broken stream leaving no half batch.

use super::*;

const WEB: &str = "/skydns/internal/drover/service/web/";

fn put(instance: &str, host: &str) -> pb::DnsRecord {
    pb::DnsRecord {
        key: format!("{WEB}{instance}"),
        value: format!(r#"{{"host":"{host}","port":8080}}"#).into_bytes(),
        deleted: false,
    }
}

fn del(instance: &str) -> pb::DnsRecord {
    pb::DnsRecord {
        key: format!("{WEB}{instance}"),
        value: Vec::new(),
        deleted: true,
    }
}

fn update(reset: bool, revision: i64, more: bool, records: Vec<pb::DnsRecord>) -> pb::DnsUpdate {
    pb::DnsUpdate {
        reset,
        revision,
        records,
        more,
    }
}

fn web(index: &SharedIndex) -> Vec<String> {
    index.read(|i| {
        i.service("web.service.drover.internal.")
            .map(|(id, ep)| format!("{id}={}", ep.host))
            .collect()
    })
}

#[test]
fn a_reset_in_chunks_replaces_the_index_only_when_whole() {
    let mut dns = NodeDns::new(DnsConfig::default(), CancellationToken::new());
    let mut feed = Feed::default();
    dns.update(
        &mut feed,
        update(true, 5, false, vec![put("old", "10.0.0.9")]),
    );
    assert_eq!(web(dns.index()), ["old=10.0.0.9"]);

    dns.update(
        &mut feed,
        update(true, 9, true, vec![put("a1", "10.0.0.1")]),
    );
    assert_eq!(web(dns.index()), ["old=10.0.0.9"], "half a reset applied");
    dns.update(
        &mut feed,
        update(true, 9, false, vec![put("b2", "10.0.0.2")]),
    );
    assert_eq!(web(dns.index()), ["a1=10.0.0.1", "b2=10.0.0.2"]);
    assert_eq!(dns.index().read(Index::revision), 9);

    // Changes: put, delete, an unusable record ignored alone.
    let bad = pb::DnsRecord {
        key: format!("{WEB}bad"),
        value: b"not json".to_vec(),
        deleted: false,
    };
    dns.update(
        &mut feed,
        update(
            false,
            11,
            false,
            vec![put("c3", "10.0.0.3"), del("a1"), bad],
        ),
    );
    assert_eq!(web(dns.index()), ["b2=10.0.0.2", "c3=10.0.0.3"]);
    assert_eq!(dns.index().read(Index::revision), 11);

    // A reset with no record empties the index.
    dns.update(&mut feed, update(true, 12, false, Vec::new()));
    assert!(web(dns.index()).is_empty());
}

#[test]
fn a_stream_broken_mid_batch_leaves_nothing_half_applied() {
    let mut dns = NodeDns::new(DnsConfig::default(), CancellationToken::new());
    let mut feed = Feed::default();
    dns.update(
        &mut feed,
        update(true, 5, false, vec![put("a1", "10.0.0.1")]),
    );
    dns.update(&mut feed, update(false, 6, true, vec![del("a1")]));
    // The session ends; the next one starts its own feed with a snapshot.
    dns.scheduler_lost();
    assert_eq!(web(dns.index()), ["a1=10.0.0.1"], "the last state is kept");
    let mut feed = Feed::default();
    dns.update(
        &mut feed,
        update(true, 7, false, vec![put("b2", "10.0.0.2")]),
    );
    assert_eq!(web(dns.index()), ["b2=10.0.0.2"]);
}

#[test]
fn the_zone_defaults_when_the_scheduler_names_none() {
    let mut r = pb::Registered::default();
    assert_eq!(zone_of(&r), DEFAULT_ZONE);
    r.dns_zone = "example.internal".into();
    assert_eq!(zone_of(&r), "example.internal");
}
