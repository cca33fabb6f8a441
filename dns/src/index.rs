//! The in-memory index of service endpoints, keyed by the SkyDNS etcd
//! layout.
//!
//! A key below [`PREFIX`] names a DNS name by its labels in reverse order:
//! `/skydns/internal/drover/service/web/0f3c9a1e` is
//! `0f3c9a1e.web.service.drover.internal.`. The last segment is the
//! *instance* (Drover writes the allocation id there), the others the
//! *service*: a query for `web.service.drover.internal.` is answered with
//! every instance below it. The value is an [`Endpoint`] in JSON.
//!
//! Everything here is pure: the caller feeds the store's events to
//! [`Index::apply`] and asks the index for names.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

/// Where the SkyDNS layout lives in the store.
pub const PREFIX: &str = "/skydns/";

/// What a value looks like, for error messages.
const EXAMPLE: &str = r#"{"host":"10.89.3.7","port":8080,"priority":10,"weight":10,"ttl":5}"#;

/// Longest DNS label, in bytes (RFC 1035).
const MAX_LABEL: usize = 63;

/// Longest DNS name in dotted form without the final dot: RFC 1035's 255
/// bytes on the wire.
const MAX_NAME: usize = 253;

/// A key or value in the store that the index cannot use; each names the
/// key.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The key lies outside the SkyDNS layout.
    #[error("key {key:?} is not under {PREFIX}")]
    NotUnderPrefix {
        /// The key (lossy UTF-8).
        key: String,
    },
    /// The key has a single label: no service and instance.
    #[error("key {key:?} names no service: expected {PREFIX}<zone>/.../<service>/<instance>")]
    TooFewLabels {
        /// The key (lossy UTF-8).
        key: String,
    },
    /// A segment of the key is not a DNS label Drover writes.
    #[error("key {key:?}: label {label:?} must be 1-63 characters from [a-z0-9_-]")]
    BadLabel {
        /// The key (lossy UTF-8).
        key: String,
        /// The offending segment.
        label: String,
    },
    /// The name the key spells is longer than DNS allows.
    #[error("key {key:?}: the name is {len} characters long, over DNS's 253")]
    NameTooLong {
        /// The key (lossy UTF-8).
        key: String,
        /// Length of the name in dotted form, without the final dot.
        len: usize,
    },
    /// The value is not an endpoint record.
    #[error("value of {key}: {source}; expected JSON like {example}", example = EXAMPLE)]
    BadValue {
        /// The key.
        key: String,
        /// What JSON parsing found.
        #[source]
        source: serde_json::Error,
    },
    /// The endpoint's host is a name, not an address.
    #[error("value of {key}: host {host:?} is not an IP address")]
    HostNotAnAddress {
        /// The key.
        key: String,
        /// The host as given.
        host: String,
    },
}

/// A key of the layout, as the DNS name it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    /// Dotted, lowercase, with the final dot: `web.service.drover.internal.`.
    service: String,
    /// The first label of the name: `0f3c9a1e`.
    instance: String,
}

impl ServiceKey {
    /// The service name, dotted with the final dot
    /// (`web.service.drover.internal.`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance label (Drover's allocation id).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The instance's own name (`0f3c9a1e.web.service.drover.internal.`).
    pub fn name(&self) -> String {
        format!("{}.{}", self.instance, self.service)
    }
}

/// Where one instance of a service listens: the record SkyDNS stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The address A and AAAA answers give.
    pub host: IpAddr,
    /// The port SRV answers give.
    pub port: u16,
    /// SRV priority: lower is tried first.
    pub priority: u16,
    /// SRV weight among instances of the same priority.
    pub weight: u16,
    /// Seconds resolvers may cache the answer.
    pub ttl: u32,
}

/// The JSON form of [`Endpoint`]. SkyDNS's other fields (`text`, `group`,
/// ...) are ignored, as SkyDNS readers do; these five are required.
#[derive(Deserialize)]
struct RawEndpoint {
    host: String,
    port: u16,
    priority: u16,
    weight: u16,
    ttl: u32,
}

/// One change of the store under [`PREFIX`], as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `key` was written with `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// `key` was deleted.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// Parses a key of the layout into the name it stands for: the labels
/// after [`PREFIX`], reversed. Each label must be what Drover writes (1-63
/// characters from `[a-z0-9_-]`: DNS names are case-insensitive, and a
/// lowercase-only store cannot hold two keys for one name).
pub fn parse_key(key: &[u8]) -> Result<ServiceKey, IndexError> {
    let text = String::from_utf8_lossy(key);
    let owned = || text.clone().into_owned();
    let rest = text
        .strip_prefix(PREFIX)
        .ok_or_else(|| IndexError::NotUnderPrefix { key: owned() })?;
    let labels: Vec<&str> = rest.split('/').collect();
    if labels.len() < 2 {
        return Err(IndexError::TooFewLabels { key: owned() });
    }
    if let Some(label) = labels.iter().find(|l| !is_label(l)) {
        return Err(IndexError::BadLabel {
            key: owned(),
            label: (*label).to_owned(),
        });
    }
    // `a/b/c` is as long as `a.b.c`.
    if rest.len() > MAX_NAME {
        return Err(IndexError::NameTooLong {
            key: owned(),
            len: rest.len(),
        });
    }
    let (instance, service) = labels
        .split_last()
        .ok_or_else(|| IndexError::TooFewLabels { key: owned() })?;
    let mut name = String::with_capacity(rest.len());
    for label in service.iter().rev() {
        name.push_str(label);
        name.push('.');
    }
    Ok(ServiceKey {
        service: name,
        instance: (*instance).to_owned(),
    })
}

fn is_label(label: &str) -> bool {
    (1..=MAX_LABEL).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// Parses the value stored at `key` (named in errors) into an endpoint.
pub fn parse_endpoint(key: &str, value: &[u8]) -> Result<Endpoint, IndexError> {
    let raw: RawEndpoint =
        serde_json::from_slice(value).map_err(|source| IndexError::BadValue {
            key: key.to_owned(),
            source,
        })?;
    let host = raw.host.parse().map_err(|_| IndexError::HostNotAnAddress {
        key: key.to_owned(),
        host: raw.host.clone(),
    })?;
    Ok(Endpoint {
        host,
        port: raw.port,
        priority: raw.priority,
        weight: raw.weight,
        ttl: raw.ttl,
    })
}

/// Every endpoint of the layout, by service name, then instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    services: BTreeMap<String, BTreeMap<String, Endpoint>>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one store event; returns whether the index changed.
    ///
    /// A key that does not parse is refused and changes nothing. A put
    /// whose value does not parse removes what the key held before (the
    /// store no longer says where that instance is) and returns the error,
    /// for the caller to log: one bad record never stops the others.
    pub fn apply(&mut self, event: &Event) -> Result<bool, IndexError> {
        match event {
            Event::Put { key, value } => {
                let parsed = parse_key(key)?;
                match parse_endpoint(&String::from_utf8_lossy(key), value) {
                    Ok(endpoint) => Ok(self.insert(parsed, endpoint)),
                    Err(e) => {
                        self.remove(&parsed);
                        Err(e)
                    }
                }
            }
            Event::Delete { key } => Ok(self.remove(&parse_key(key)?)),
        }
    }

    fn insert(&mut self, key: ServiceKey, endpoint: Endpoint) -> bool {
        let instances = self.services.entry(key.service).or_default();
        instances.insert(key.instance, endpoint) != Some(endpoint)
    }

    fn remove(&mut self, key: &ServiceKey) -> bool {
        let Some(instances) = self.services.get_mut(&key.service) else {
            return false;
        };
        let removed = instances.remove(&key.instance).is_some();
        if instances.is_empty() {
            self.services.remove(&key.service);
        }
        removed
    }

    /// The instances of the service `name` (any case, final dot optional),
    /// ordered by instance.
    pub fn service(&self, name: &str) -> impl Iterator<Item = (&str, &Endpoint)> {
        self.services
            .get(&normalize(name))
            .into_iter()
            .flatten()
            .map(|(instance, endpoint)| (instance.as_str(), endpoint))
    }

    /// The endpoint of one instance by its own name
    /// (`<instance>.<service>`, any case, final dot optional).
    pub fn instance(&self, name: &str) -> Option<&Endpoint> {
        let name = normalize(name);
        let (instance, service) = name.split_once('.')?;
        self.services.get(service)?.get(instance)
    }

    /// How many endpoints the index holds.
    pub fn len(&self) -> usize {
        self.services.values().map(BTreeMap::len).sum()
    }

    /// Whether the index holds no endpoint.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// A queried name as the index keeps names: lowercase, with the final dot.
fn normalize(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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
                ttl: 5,
            }
        );
        let v6 = parse_endpoint(key, endpoint("fd00::7", 53).as_bytes()).unwrap();
        assert_eq!(v6.host, "fd00::7".parse::<IpAddr>().unwrap());
        // Fields other SkyDNS writers set are ignored.
        let extra = r#"{"host":"10.0.0.1","port":1,"priority":0,"weight":0,"ttl":0,"text":"x"}"#;
        assert!(parse_endpoint(key, extra.as_bytes()).is_ok());

        for (value, says) in [
            (r#"{"host":"10.0.0.1"}"#, "missing field `port`"),
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
        let err = parse_endpoint(key, endpoint("db.example", 5432).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("value of {key}: host \"db.example\" is not an IP address")
        );
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
}
