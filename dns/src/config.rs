//! The zone the server answers for, and where it forwards the rest.
//!
//! [`ZoneConfig`] is what an operator writes (flags or a file, through
//! serde with `deny_unknown_fields`); [`ZoneConfig::zone`] checks it and
//! returns every problem at once, each naming its field, and builds the
//! [`Zone`] the request path uses: names already parsed and the SOA and NS
//! records already built, so that no query parses configuration.
//! [`ZoneConfig::upstreams`] is kept apart because it may read a file (the
//! host's `resolv.conf`), and the zone itself never does I/O.
//!
//! Defaults and why:
//! - TTL 5 s for records and for negative answers: an instance that fails
//!   its check leaves every cache within seconds, and a new one is found as
//!   fast (the SOA minimum is the negative TTL, RFC 2308).
//! - forwarding timeout 2 s per upstream: under glibc's 5 s query timeout
//!   with two upstreams tried, so a client sees our SERVFAIL rather than its
//!   own timeout.
//! - the largest UDP answer 4096 bytes, capped by what each client
//!   advertises in EDNS0: the server runs on the node's bridge and loopback,
//!   where a fragment is not lost on the way as it may be across the
//!   Internet (the reason for DNS Flag Day's 1232).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{Name, RData, Record};
use ipnet::IpNet;
use serde::Deserialize;

use crate::resolv;

/// A configuration the server cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Fields hold values that cannot work; every problem is listed.
    #[error("invalid DNS configuration: {}", .problems.join("; "))]
    Invalid {
        /// One line per problem, each naming its field.
        problems: Vec<String>,
    },
    /// The resolv.conf that names the upstreams could not be read.
    #[error("reading upstream resolvers from {path}: {source}; name them with `upstreams` or set `zone_only`")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
}

/// What an operator configures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    /// The zone answered from the index (`drover.internal`).
    pub zone: String,
    /// TTL of the records, in seconds, when an endpoint names none.
    pub ttl: u32,
    /// TTL of negative answers, in seconds: the SOA minimum (RFC 2308).
    pub negative_ttl: u32,
    /// The SOA's primary server name; `ns.<zone>` when unset.
    pub soa_mname: Option<String>,
    /// The SOA's mailbox as a name; `hostmaster.<zone>` when unset.
    pub soa_rname: Option<String>,
    /// The apex's NS target; `ns.<zone>` when unset.
    pub ns_name: Option<String>,
    /// Addresses `ns_name` resolves to when it lies in the zone (none by
    /// default: the name then exists without addresses).
    pub ns_addrs: Vec<IpAddr>,
    /// Networks of task addresses whose reverse names (`in-addr.arpa`,
    /// `ip6.arpa`) the server answers authoritatively, NXDOMAIN included;
    /// each is widened to the octet (IPv6: nibble) boundary below it.
    /// Reverse names of indexed addresses outside them are answered too,
    /// but other names there are forwarded.
    pub reverse_networks: Vec<IpNet>,
    /// Upstream resolvers; when unset, the nameservers of `resolv_conf`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The resolv.conf read when `upstreams` is unset.
    pub resolv_conf: PathBuf,
    /// How long one upstream may take to answer, in milliseconds, before
    /// the next one is tried.
    pub forward_timeout_ms: u64,
    /// Refuse (REFUSED) every name outside the zone instead of forwarding.
    pub zone_only: bool,
    /// The largest UDP answer, in bytes, whatever a client advertises.
    pub max_udp_payload: u16,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            zone: "drover.internal".to_owned(),
            ttl: 5,
            negative_ttl: 5,
            soa_mname: None,
            soa_rname: None,
            ns_name: None,
            ns_addrs: Vec::new(),
            reverse_networks: Vec::new(),
            upstreams: None,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            forward_timeout_ms: 2000,
            zone_only: false,
            max_udp_payload: 4096,
        }
    }
}

/// RFC 2181 section 8: a TTL is at most 2^31 - 1.
const MAX_TTL: u32 = i32::MAX as u32;

/// The SOA's refresh, retry and expire: unused without secondaries, set to
/// the usual values so that tools reading the SOA see something sane.
const SOA_TIMERS: (i32, i32, i32) = (3600, 600, 86400);

impl ZoneConfig {
    /// Checks every field and builds the zone; the error lists every
    /// problem.
    pub fn zone(&self) -> Result<Zone, ConfigError> {
        let mut problems = Vec::new();
        let origin = parse_name("zone", &self.zone, &mut problems);
        if origin.as_ref().is_some_and(Name::is_root) {
            problems.push("zone: must not be the root".to_owned());
        }
        let origin = origin.unwrap_or_else(Name::root);
        let in_zone = |label: &str| format!("{label}.{}", self.zone);
        let mname = parse_name(
            "soa_mname",
            self.soa_mname.as_deref().unwrap_or(&in_zone("ns")),
            &mut problems,
        );
        let rname = parse_name(
            "soa_rname",
            self.soa_rname.as_deref().unwrap_or(&in_zone("hostmaster")),
            &mut problems,
        );
        let ns_name = parse_name(
            "ns_name",
            self.ns_name.as_deref().unwrap_or(&in_zone("ns")),
            &mut problems,
        );
        for (field, ttl) in [("ttl", self.ttl), ("negative_ttl", self.negative_ttl)] {
            if ttl > MAX_TTL {
                problems.push(format!("{field}: {ttl} is over {MAX_TTL} (RFC 2181)"));
            }
        }
        if self.max_udp_payload < 512 {
            problems.push(format!(
                "max_udp_payload: {} is under 512, the least DNS allows",
                self.max_udp_payload
            ));
        }
        if !self.zone_only && self.forward_timeout_ms == 0 {
            problems.push("forward_timeout_ms: must be > 0 unless zone_only".to_owned());
        }
        for (i, up) in self.upstreams.iter().flatten().enumerate() {
            if up.port() == 0 || up.ip().is_unspecified() {
                problems.push(format!("upstreams[{i}]: {up} cannot be sent to"));
            }
        }
        let (Some(mname), Some(rname), Some(ns_name)) = (mname, rname, ns_name) else {
            return Err(ConfigError::Invalid { problems });
        };
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        Ok(Zone::new(self, origin, mname, rname, ns_name))
    }

    /// The upstream resolvers: `upstreams`, or else the nameservers of
    /// `resolv_conf` (read now); none in zone-only mode. Lines of the file
    /// that name no usable server are returned for the caller to log.
    pub fn upstreams(&self) -> Result<(Vec<SocketAddr>, Vec<String>), ConfigError> {
        if self.zone_only {
            return Ok((Vec::new(), Vec::new()));
        }
        if let Some(upstreams) = &self.upstreams {
            return Ok((upstreams.clone(), Vec::new()));
        }
        let text = std::fs::read_to_string(&self.resolv_conf).map_err(|source| {
            ConfigError::ResolvConf {
                path: self.resolv_conf.clone(),
                source,
            }
        })?;
        let parsed = resolv::parse(&text);
        Ok((parsed.upstreams(), parsed.skipped))
    }

    /// The forwarder to the upstreams ([`ZoneConfig::upstreams`]), `None`
    /// in zone-only mode. A node without a readable resolv.conf still
    /// answers its zone: the configuration then turns zone-only, and the
    /// log says so (as it names resolv.conf lines that were skipped).
    pub fn forwarder(&mut self) -> Option<crate::forward::Forwarder> {
        match self.upstreams() {
            Ok((upstreams, skipped)) => {
                for line in skipped {
                    tracing::warn!(resolv_conf = %self.resolv_conf.display(), %line,
                        "resolv.conf line names no usable upstream; skipped");
                }
                (!self.zone_only)
                    .then(|| crate::forward::Forwarder::new(upstreams, self.forward_timeout()))
            }
            Err(error) => {
                tracing::warn!(%error, "DNS answers only its zone: names outside it are refused");
                self.zone_only = true;
                None
            }
        }
    }

    /// How long one upstream may take.
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }
}

fn parse_name(field: &str, text: &str, problems: &mut Vec<String>) -> Option<Name> {
    match Name::from_ascii(text) {
        Ok(mut name) => {
            name.set_fqdn(true);
            Some(name.to_lowercase())
        }
        Err(e) => {
            problems.push(format!("{field}: {text:?} is not a DNS name: {e}"));
            None
        }
    }
}

/// A reverse zone: the network it covers and its apex name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseZone {
    /// The network, widened to the octet or nibble boundary.
    pub network: IpNet,
    /// `<octets>.in-addr.arpa.` or `<nibbles>.ip6.arpa.`.
    pub apex: Name,
    /// The SOA record at the apex.
    pub soa: Record,
}

/// A checked zone, ready for the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The apex, lowercase, fully qualified.
    pub origin: Name,
    /// The apex in text with the final dot (`drover.internal.`), for
    /// building the index's names.
    pub origin_text: String,
    /// Records' TTL when an endpoint names none.
    pub ttl: u32,
    /// Negative answers' TTL, and the SOA record's.
    pub negative_ttl: u32,
    /// The SOA at the apex, serial 0 (the handler sets the index's
    /// revision).
    pub soa: Record,
    /// The NS at the apex.
    pub ns: Record,
    /// The NS target and its address records when it lies in the zone.
    pub ns_name: Name,
    /// Address records of `ns_name`, when it lies in the zone.
    pub ns_addrs: Vec<Record>,
    /// Reverse zones answered authoritatively.
    pub reverse: Vec<ReverseZone>,
    /// The largest UDP answer.
    pub max_udp_payload: u16,
    /// Whether names outside the zone are forwarded (else REFUSED).
    pub forwarding: bool,
}

impl Zone {
    fn new(config: &ZoneConfig, origin: Name, mname: Name, rname: Name, ns_name: Name) -> Self {
        let neg = config.negative_ttl;
        let (refresh, retry, expire) = SOA_TIMERS;
        let soa_at = |apex: &Name| {
            let soa = SOA::new(mname.clone(), rname.clone(), 0, refresh, retry, expire, neg);
            Record::from_rdata(apex.clone(), neg, RData::SOA(soa))
        };
        let ns_addrs = if origin.zone_of(&ns_name) {
            config
                .ns_addrs
                .iter()
                .map(|ip| {
                    let rdata = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    Record::from_rdata(ns_name.clone(), config.ttl, rdata)
                })
                .collect()
        } else {
            Vec::new()
        };
        let reverse = config
            .reverse_networks
            .iter()
            .map(|net| {
                let (network, apex) = reverse_apex(net);
                let soa = soa_at(&apex);
                ReverseZone { network, apex, soa }
            })
            .collect();
        let mut origin_text = origin.to_ascii();
        if !origin_text.ends_with('.') {
            origin_text.push('.');
        }
        Self {
            soa: soa_at(&origin),
            ns: Record::from_rdata(origin.clone(), config.ttl, RData::NS(NS(ns_name.clone()))),
            origin,
            origin_text,
            ttl: config.ttl,
            negative_ttl: neg,
            ns_name,
            ns_addrs,
            reverse,
            max_udp_payload: config.max_udp_payload,
            forwarding: !config.zone_only,
        }
    }
}

/// Widens `net` to the octet (IPv4) or nibble (IPv6) boundary at or below
/// its prefix and names the reverse zone of the result.
pub fn reverse_apex(net: &IpNet) -> (IpNet, Name) {
    let (unit, arpa_labels) = match net {
        IpNet::V4(_) => (8, 2),
        IpNet::V6(_) => (4, 2),
    };
    let prefix = net.prefix_len() / unit * unit;
    let widened = IpNet::new(net.addr(), prefix)
        .map(|n| n.trunc())
        .unwrap_or(*net);
    let full = Name::from(widened.addr());
    let labels = usize::from(prefix / unit) + arpa_labels;
    (widened, full.trim_to(labels))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_the_drover_zone() {
        let zone = ZoneConfig::default().zone().unwrap();
        assert_eq!(zone.origin.to_ascii(), "drover.internal.");
        assert_eq!(zone.origin_text, "drover.internal.");
        assert_eq!((zone.ttl, zone.negative_ttl), (5, 5));
        let RData::SOA(soa) = &zone.soa.data else {
            panic!("{:?}", zone.soa)
        };
        assert_eq!(soa.mname.to_ascii(), "ns.drover.internal.");
        assert_eq!(soa.rname.to_ascii(), "hostmaster.drover.internal.");
        assert_eq!(soa.minimum, 5);
        assert_eq!(zone.soa.ttl, 5);
        assert_eq!(zone.ns.data, RData::NS(NS(zone.ns_name.clone())));
        assert!(zone.ns_addrs.is_empty() && zone.reverse.is_empty());
        assert!(zone.forwarding);
        assert_eq!(zone.max_udp_payload, 4096);
    }

    #[test]
    fn a_custom_zone_is_lowercased_and_its_ns_gets_addresses() {
        let config = ZoneConfig {
            zone: "Cluster.Example".to_owned(),
            ns_addrs: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            zone_only: true,
            ..ZoneConfig::default()
        };
        let zone = config.zone().unwrap();
        assert_eq!(zone.origin_text, "cluster.example.");
        assert_eq!(zone.ns_addrs.len(), 2);
        assert!(!zone.forwarding);
        // An NS outside the zone gets no address records from us.
        let outside = ZoneConfig {
            ns_name: Some("ns1.example.net".to_owned()),
            ..config
        };
        assert!(outside.zone().unwrap().ns_addrs.is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let config = ZoneConfig {
            zone: "a..b".to_owned(),
            soa_rname: Some("x".repeat(70)),
            negative_ttl: u32::MAX,
            max_udp_payload: 100,
            forward_timeout_ms: 0,
            upstreams: Some(vec!["0.0.0.0:53".parse().unwrap()]),
            ..ZoneConfig::default()
        };
        let err = config.zone().unwrap_err().to_string();
        for says in [
            "zone: \"a..b\" is not a DNS name",
            "soa_rname: ",
            "negative_ttl: 4294967295 is over",
            "max_udp_payload: 100 is under 512",
            "forward_timeout_ms: must be > 0",
            "upstreams[0]: 0.0.0.0:53 cannot be sent to",
        ] {
            assert!(err.contains(says), "{says}: {err}");
        }
        let root = ZoneConfig {
            zone: ".".to_owned(),
            ..ZoneConfig::default()
        };
        assert!(root.zone().unwrap_err().to_string().contains("root"));
    }

    #[test]
    fn config_files_refuse_unknown_fields() {
        let config: ZoneConfig =
            serde_json::from_str(r#"{"zone":"c.test","reverse_networks":["10.89.0.0/16"]}"#)
                .unwrap();
        assert_eq!(config.zone, "c.test");
        assert_eq!(config.ttl, 5);
        let err = serde_json::from_str::<ZoneConfig>(r#"{"zone_name":"x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `zone_name`"),
            "{err}"
        );
    }

    #[test]
    fn reverse_zones_widen_to_octets_and_nibbles() {
        for (net, network, apex) in [
            ("10.89.0.0/16", "10.89.0.0/16", "89.10.in-addr.arpa."),
            ("10.89.16.0/20", "10.89.0.0/16", "89.10.in-addr.arpa."),
            ("10.89.3.7/32", "10.89.3.7/32", "7.3.89.10.in-addr.arpa."),
            ("10.0.0.0/7", "0.0.0.0/0", "in-addr.arpa."),
            (
                "fd00:1::/62",
                "fd00:1::/60",
                "0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.",
            ),
        ] {
            let (widened, name) = reverse_apex(&net.parse().unwrap());
            assert_eq!(widened.to_string(), network, "{net}");
            assert_eq!(name.to_ascii(), apex, "{net}");
        }
    }

    #[test]
    fn upstreams_come_from_the_config_or_resolv_conf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\nnameserver bogus\n").unwrap();
        let config = ZoneConfig {
            resolv_conf: path,
            ..ZoneConfig::default()
        };
        let (ups, skipped) = config.upstreams().unwrap();
        assert_eq!(ups, ["192.0.2.1:53".parse().unwrap()]);
        assert_eq!(skipped.len(), 1);
        let explicit = ZoneConfig {
            upstreams: Some(vec!["127.0.0.1:5353".parse().unwrap()]),
            ..config.clone()
        };
        assert_eq!(explicit.upstreams().unwrap().0.len(), 1);
        let zone_only = ZoneConfig {
            zone_only: true,
            ..config.clone()
        };
        assert!(zone_only.upstreams().unwrap().0.is_empty());
        let missing = ZoneConfig {
            resolv_conf: dir.path().join("nope"),
            ..config
        };
        let err = missing.upstreams().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("zone_only"), "{err}");
    }
}
