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
//!
//! The value is SkyDNS's JSON with two optional fields of Drover's own,
//! `tags` (a list of labels: `v2.web.service.drover.internal.` names the
//! instances of `web` tagged `v2`) and `protocol` (`"tcp"` or `"udp"`:
//! which `_<proto>` SRV name lists the instance; absent, both do). CoreDNS's
//! `etcd` plugin ignores both fields, so a record Drover writes still reads
//! the same there, only without tag names and with every SRV protocol.
//! Of SkyDNS's own fields only `host` is required: a node's record
//! (`/skydns/internal/drover/node/<node>`) needs no port, and an absent
//! `ttl` (or `0`, as CoreDNS reads it) means the zone's configured TTL.
//!
//! Besides the forward map the index keeps a reverse map, address to the
//! names that hold it, for PTR answers; both change together in
//! [`Index::apply`] so that they cannot disagree.
//!
//! [`SharedIndex`] is how the server and the watch loop share one index: a
//! reader-writer lock, not a copy-on-write snapshot, because a store event
//! changes one entry and a copy of an index of ten thousand endpoints per
//! event would cost more than the microseconds a reader waits for a write.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;

/// Where the SkyDNS layout lives in the store.
pub const PREFIX: &str = "/skydns/";

/// What a value looks like, for error messages.
const EXAMPLE: &str =
    r#"{"host":"10.89.3.7","port":8080,"priority":10,"weight":10,"ttl":5,"tags":["v2"]}"#;

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
    /// The endpoint's protocol is neither `tcp` nor `udp`.
    #[error("value of {key}: protocol {protocol:?} is neither \"tcp\" nor \"udp\"")]
    BadProtocol {
        /// The key.
        key: String,
        /// The protocol as given.
        protocol: String,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address A and AAAA answers give.
    pub host: IpAddr,
    /// The port SRV answers give (0 when the record has none, as a node's).
    pub port: u16,
    /// SRV priority: lower is tried first (10 when absent, as in SkyDNS).
    pub priority: u16,
    /// SRV weight among instances of the same priority (10 when absent).
    pub weight: u16,
    /// Seconds resolvers may cache the answer; `None` (absent or 0) means
    /// the zone's configured TTL.
    pub ttl: Option<u32>,
    /// The transport the service speaks; `None` lists it under both
    /// `_tcp` and `_udp`.
    pub protocol: Option<Transport>,
    /// Lowercase DNS labels naming subsets of a service's instances.
    pub tags: Vec<String>,
}

impl Endpoint {
    /// Whether the instance carries `tag` (lowercase).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Whether the `_<proto>` SRV name of the service lists the instance.
    pub fn serves(&self, transport: Transport) -> bool {
        self.protocol.is_none_or(|p| p == transport)
    }
}

/// The `_<proto>` of an SRV name (RFC 2782).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `_tcp`.
    Tcp,
    /// `_udp`.
    Udp,
}

impl Transport {
    /// The transport an SRV label names (`_tcp`, `_udp`, any case).
    pub fn from_label(label: &str) -> Option<Self> {
        if label.eq_ignore_ascii_case("_tcp") {
            Some(Self::Tcp)
        } else if label.eq_ignore_ascii_case("_udp") {
            Some(Self::Udp)
        } else {
            None
        }
    }
}

/// The JSON form of [`Endpoint`]. SkyDNS's other fields (`text`, `group`,
/// ...) are ignored, as SkyDNS readers do; only `host` is required.
#[derive(Deserialize)]
struct RawEndpoint {
    host: String,
    #[serde(default)]
    port: u16,
    #[serde(default = "default_priority")]
    priority: u16,
    #[serde(default = "default_priority")]
    weight: u16,
    #[serde(default)]
    ttl: u32,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// SkyDNS's priority (and Drover's weight) when a record names none.
fn default_priority() -> u16 {
    10
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

pub(crate) fn is_label(label: &str) -> bool {
    (1..=MAX_LABEL).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// Parses the value stored at `key` (named in errors) into an endpoint.
/// Tags are lowercased; a tag that is not a DNS label is dropped, since no
/// query could name it, rather than hiding the whole endpoint.
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
    let protocol = match raw.protocol.as_deref() {
        None => None,
        Some(p) if p.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
        Some(p) if p.eq_ignore_ascii_case("udp") => Some(Transport::Udp),
        Some(p) => {
            return Err(IndexError::BadProtocol {
                key: key.to_owned(),
                protocol: p.to_owned(),
            })
        }
    };
    let mut tags: Vec<String> = raw
        .tags
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .filter(|t| is_label(t))
        .collect();
    tags.sort();
    tags.dedup();
    Ok(Endpoint {
        host,
        port: raw.port,
        priority: raw.priority,
        weight: raw.weight,
        ttl: (raw.ttl != 0).then_some(raw.ttl),
        protocol,
        tags,
    })
}

/// Every endpoint of the layout, by service name, then instance, and the
/// names that hold each address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    services: BTreeMap<String, BTreeMap<String, Endpoint>>,
    /// Address to the instance names (`<instance>.<service>`) that hold it.
    reverse: BTreeMap<IpAddr, BTreeSet<String>>,
    /// The store revision the index reflects (0 before the first load).
    revision: i64,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of `puts` (a full read of the store, or a snapshot relayed
    /// from one) at `revision`. Records that do not parse are logged and
    /// left out: one bad record never hides the others.
    pub fn load(puts: impl IntoIterator<Item = Event>, revision: i64) -> Self {
        let mut index = Self::new();
        for event in puts {
            if let Err(error) = index.apply(&event) {
                tracing::warn!(%error, "ignoring a DNS record");
            }
        }
        index.revision = revision;
        index
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
        let name = key.name();
        let instances = self.services.entry(key.service).or_default();
        if instances.get(&key.instance) == Some(&endpoint) {
            return false;
        }
        let host = endpoint.host;
        if let Some(old) = instances.insert(key.instance, endpoint) {
            unlink(&mut self.reverse, old.host, &name);
        }
        self.reverse.entry(host).or_default().insert(name);
        true
    }

    fn remove(&mut self, key: &ServiceKey) -> bool {
        let Some(instances) = self.services.get_mut(&key.service) else {
            return false;
        };
        let Some(old) = instances.remove(&key.instance) else {
            return false;
        };
        if instances.is_empty() {
            self.services.remove(&key.service);
        }
        unlink(&mut self.reverse, old.host, &key.name());
        true
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

    /// Whether the service `name` has an instance.
    pub fn has_service(&self, name: &str) -> bool {
        self.services.contains_key(&normalize(name))
    }

    /// The endpoint of one instance by its own name
    /// (`<instance>.<service>`, any case, final dot optional).
    pub fn instance(&self, name: &str) -> Option<&Endpoint> {
        let name = normalize(name);
        let (instance, service) = name.split_once('.')?;
        self.services.get(service)?.get(instance)
    }

    /// The names (`<instance>.<service>.`, lowercase) whose endpoint is
    /// at `addr`, in name order.
    pub fn names_of(&self, addr: IpAddr) -> impl Iterator<Item = &str> {
        self.reverse
            .get(&addr)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// How many endpoints the index holds.
    pub fn len(&self) -> usize {
        self.services.values().map(BTreeMap::len).sum()
    }

    /// Whether the index holds no endpoint.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The store revision the index reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Records the store revision the index now reflects.
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }
}

/// Removes `name` from the names at `host`, and the address once none is
/// left.
fn unlink(reverse: &mut BTreeMap<IpAddr, BTreeSet<String>>, host: IpAddr, name: &str) {
    if let Some(names) = reverse.get_mut(&host) {
        names.remove(name);
        if names.is_empty() {
            reverse.remove(&host);
        }
    }
}

/// One [`Index`] shared between the watch loop that writes it and the
/// request handlers that read it. Cloning shares the same index.
///
/// A lock poisoned by a panicking writer is taken over as it is: each
/// [`Index::apply`] leaves the index whole before it could panic, and
/// serving the last state beats failing every query.
#[derive(Debug, Clone, Default)]
pub struct SharedIndex(Arc<RwLock<Index>>);

impl SharedIndex {
    /// Shares `index`.
    pub fn new(index: Index) -> Self {
        Self(Arc::new(RwLock::new(index)))
    }

    /// Runs `f` on the index under the read lock. Keep `f` short: writers
    /// wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` on the index under the write lock.
    pub fn write<R>(&self, f: impl FnOnce(&mut Index) -> R) -> R {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the whole index (after a full load of the store).
    pub fn replace(&self, index: Index) {
        self.write(|current| *current = index);
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
mod model_tests;
#[cfg(test)]
mod tests;
