//! Unit tests of the index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const WEB: &str = "/skydns/internal/drover/service/web/";

fn put(key: &str, value: &str) -> Event {
    Event::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn delete(key: &str) -> Event {
    Event::Delete {
        key: key.as_bytes().to_vec(),
    }
}

fn endpoint(host: &str, port: u16) -> String {
    format!(r#"{{"host":"{host}","port":{port},"priority":10,"weight":10,"ttl":5}}"#)
}

#[test]
fn a_key_is_its_name_reversed() {
    let key = parse_key(format!("{WEB}0f3c9a1e-77b2").as_bytes()).unwrap();
    assert_eq!(key.service(), "web.service.drover.internal.");
    assert_eq!(key.instance(), "0f3c9a1e-77b2");
    assert_eq!(key.name(), "0f3c9a1e-77b2.web.service.drover.internal.");
    let short = parse_key(b"/skydns/web/_http").unwrap();
    assert_eq!((short.service(), short.instance()), ("web.", "_http"));
}

#[test]
fn bad_keys_are_refused_naming_the_key() {
    let long_label = "a".repeat(64);
    let long_name = format!("/skydns/{}/x", vec!["a".repeat(63); 4].join("/"));
    for (key, says) in [
        ("/other/web/x".to_owned(), "is not under /skydns/"),
        ("/skydns".to_owned(), "is not under /skydns/"),
        ("/skydns/".to_owned(), "names no service"),
        ("/skydns/web".to_owned(), "names no service"),
        (WEB.to_owned(), "label \"\""),
        ("/skydns/internal//web/x".to_owned(), "label \"\""),
        (format!("{WEB}Abc"), "label \"Abc\""),
        (format!("{WEB}a.b"), "label \"a.b\""),
        (format!("{WEB}*"), "label \"*\""),
        (format!("{WEB}{long_label}"), "must be 1-63 characters"),
        (long_name.clone(), "the name is 257 characters long"),
    ] {
        let err = parse_key(key.as_bytes()).expect_err(&key).to_string();
        assert!(err.contains(says), "{key}: {err}");
        assert!(err.contains(&format!("{key:?}")), "{key}: {err}");
    }
    let err = parse_key(b"/skydns/web/\xff").unwrap_err();
    assert!(matches!(err, IndexError::BadLabel { .. }), "{err}");
}

#[test]
fn values_parse_or_say_what_is_expected() {
    let key = "/skydns/internal/drover/service/web/a1";
    let ep = parse_endpoint(key, EXAMPLE.as_bytes()).unwrap();
    assert_eq!(
        ep,
        Endpoint {
            host: "10.89.3.7".parse().unwrap(),
            port: 8080,
            priority: 10,
            weight: 10,
            ttl: Some(5),
            protocol: None,
            tags: vec!["v2".to_owned()],
        }
    );
    let v6 = parse_endpoint(key, endpoint("fd00::7", 53).as_bytes()).unwrap();
    assert_eq!(v6.host, "fd00::7".parse::<IpAddr>().unwrap());
    // Fields other SkyDNS writers set are ignored.
    let extra = r#"{"host":"10.0.0.1","port":1,"priority":0,"weight":0,"ttl":0,"text":"x"}"#;
    assert!(parse_endpoint(key, extra.as_bytes()).is_ok());

    for (value, says) in [
        (r#"{"port":53}"#, "missing field `host`"),
        (r#"{"host":"10.0.0.1","tags":"v2"}"#, "expected a sequence"),
        (
            r#"{"host":"10.0.0.1","port":70000,"priority":0,"weight":0,"ttl":0}"#,
            "invalid value: integer `70000`",
        ),
        ("not json", "expected ident"),
        ("", "EOF while parsing"),
    ] {
        let err = parse_endpoint(key, value.as_bytes()).expect_err(value);
        assert!(matches!(err, IndexError::BadValue { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("value of {key}: ")), "{msg}");
        assert!(msg.contains(says) && msg.ends_with(EXAMPLE), "{msg}");
        assert!(std::error::Error::source(&err).is_some());
    }
    let err = parse_endpoint(key, br#"{"host":"10.0.0.1","protocol":"sctp"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("value of {key}: protocol \"sctp\" is neither \"tcp\" nor \"udp\"")
    );
    let err = parse_endpoint(key, endpoint("db.example", 5432).as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("value of {key}: host \"db.example\" is not an IP address")
    );
}

#[test]
fn only_host_is_required_and_drovers_fields_are_checked() {
    let key = "/skydns/internal/drover/node/n1";
    // A node's record: the host alone; SkyDNS's defaults fill the rest.
    let node = parse_endpoint(key, br#"{"host":"192.0.2.10"}"#).unwrap();
    assert_eq!(
        (node.port, node.priority, node.weight, node.ttl),
        (0, 10, 10, None)
    );
    assert!(node.tags.is_empty() && node.protocol.is_none());
    // TTL 0 is "the zone's", as CoreDNS reads it.
    let zero = parse_endpoint(key, br#"{"host":"192.0.2.10","ttl":0}"#).unwrap();
    assert_eq!(zero.ttl, None);
    // Tags are lowercased, deduplicated, and those no query could name
    // are dropped rather than hiding the endpoint.
    let tagged = parse_endpoint(
        key,
        br#"{"host":"10.0.0.1","tags":["Blue","v2","blue","not a label",""],"protocol":"UDP"}"#,
    )
    .unwrap();
    assert_eq!(tagged.tags, ["blue", "v2"]);
    assert!(tagged.has_tag("blue") && !tagged.has_tag("Blue"));
    assert_eq!(tagged.protocol, Some(Transport::Udp));
    assert!(tagged.serves(Transport::Udp) && !tagged.serves(Transport::Tcp));
    assert!(node.serves(Transport::Udp) && node.serves(Transport::Tcp));
    assert_eq!(Transport::from_label("_TCP"), Some(Transport::Tcp));
    assert_eq!(Transport::from_label("tcp"), None);
}

#[test]
fn the_reverse_map_follows_puts_and_deletes() {
    let mut index = Index::new();
    let names = |index: &Index, ip: &str| {
        index
            .names_of(ip.parse().unwrap())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let db = "/skydns/internal/drover/service/db/a1";
    index
        .apply(&put(&format!("{WEB}a1"), &endpoint("10.89.3.7", 80)))
        .unwrap();
    index.apply(&put(db, &endpoint("10.89.3.7", 5432))).unwrap();
    index
        .apply(&put(&format!("{WEB}b2"), &endpoint("10.89.3.8", 80)))
        .unwrap();
    assert_eq!(
        names(&index, "10.89.3.7"),
        [
            "a1.db.service.drover.internal.",
            "a1.web.service.drover.internal."
        ]
    );
    // A move takes the name off its old address.
    index
        .apply(&put(&format!("{WEB}a1"), &endpoint("10.89.3.9", 80)))
        .unwrap();
    assert_eq!(
        names(&index, "10.89.3.7"),
        ["a1.db.service.drover.internal."]
    );
    assert_eq!(
        names(&index, "10.89.3.9"),
        ["a1.web.service.drover.internal."]
    );
    // So do a delete and a value that no longer parses.
    index.apply(&delete(db)).unwrap();
    index.apply(&put(&format!("{WEB}b2"), "{}")).unwrap_err();
    assert!(names(&index, "10.89.3.7").is_empty());
    assert!(names(&index, "10.89.3.8").is_empty());
    index.apply(&delete(&format!("{WEB}a1"))).unwrap();
    assert_eq!(index, Index::new());
}

#[test]
fn a_shared_index_is_one_index() {
    let shared = SharedIndex::default();
    let writer = shared.clone();
    writer.write(|index| {
        index
            .apply(&put(&format!("{WEB}a1"), &endpoint("10.89.3.7", 80)))
            .unwrap();
        index.set_revision(42);
    });
    assert_eq!(
        shared.read(|index| (index.len(), index.revision())),
        (1, 42)
    );
    assert!(shared.read(|index| index.has_service("web.service.drover.internal")));
    writer.replace(Index::new());
    assert!(shared.read(Index::is_empty));
}

#[test]
fn puts_and_deletes_keep_the_index_equal_to_the_store() {
    let mut index = Index::new();
    assert!(index.is_empty());
    assert!(index
        .apply(&put(&format!("{WEB}b2"), &endpoint("10.89.3.8", 80)))
        .unwrap());
    assert!(index
        .apply(&put(&format!("{WEB}a1"), &endpoint("10.89.3.7", 80)))
        .unwrap());
    let db = "/skydns/internal/drover/service/db/c3";
    assert!(index.apply(&put(db, &endpoint("10.89.4.2", 5432))).unwrap());
    assert_eq!(index.len(), 3);

    // Every instance of a service, in instance order; queries ignore
    // case and may omit the final dot.
    let hosts = |index: &Index, name: &str| {
        index
            .service(name)
            .map(|(id, ep)| format!("{id}={}", ep.host))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        hosts(&index, "web.service.drover.internal."),
        ["a1=10.89.3.7", "b2=10.89.3.8"]
    );
    assert_eq!(
        hosts(&index, "WEB.Service.drover.internal"),
        hosts(&index, "web.service.drover.internal.")
    );
    assert!(hosts(&index, "api.service.drover.internal.").is_empty());
    let c3 = index.instance("c3.db.service.drover.internal").unwrap();
    assert_eq!(c3.port, 5432);
    assert!(index.instance("c3.web.service.drover.internal.").is_none());
    assert!(index.instance("internal").is_none());

    // Rewriting the same value changes nothing; a new one replaces it.
    assert!(!index
        .apply(&put(&format!("{WEB}a1"), &endpoint("10.89.3.7", 80)))
        .unwrap());
    assert!(index
        .apply(&put(&format!("{WEB}a1"), &endpoint("10.89.3.9", 80)))
        .unwrap());
    assert_eq!(
        hosts(&index, "web.service.drover.internal")[0],
        "a1=10.89.3.9"
    );

    // A value that no longer parses drops the stale endpoint.
    let err = index.apply(&put(&format!("{WEB}a1"), "{}")).unwrap_err();
    assert!(matches!(err, IndexError::BadValue { .. }), "{err}");
    assert_eq!(
        hosts(&index, "web.service.drover.internal"),
        ["b2=10.89.3.8"]
    );

    // A bad key changes nothing.
    let before = index.clone();
    assert!(index
        .apply(&put("/skydns/Web/x", &endpoint("10.0.0.1", 1)))
        .is_err());
    assert!(index.apply(&delete("/elsewhere/x")).is_err());
    assert_eq!(index, before);

    // Deletes: the last instance takes its service with it.
    assert!(index.apply(&delete(&format!("{WEB}b2"))).unwrap());
    assert!(!index.apply(&delete(&format!("{WEB}b2"))).unwrap());
    assert!(index
        .service("web.service.drover.internal")
        .next()
        .is_none());
    assert!(index.apply(&delete(db)).unwrap());
    assert!(index.is_empty());
    assert_eq!(index, Index::new());
}
