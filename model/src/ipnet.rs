//! An IPv4 network in CIDR form, the one type for the cluster CIDR, node
//! subnets (scheduler) and the node's bridge subnet and peer routes
//! (agent). Its text form, `10.89.0.0/16`, is also its serde form: it is
//! stored that way in etcd (`nodes/<id>`, `subnets/<cidr>`) and in the
//! agent's `<data-dir>/net/` files.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: a network address with its host bits clear and a prefix
/// length, e.g. `10.89.3.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a text or an address and prefix is not an IPv4 network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 network {value:?}: {reason}")]
pub struct InvalidNet {
    /// The text given (`a.b.c.d/n`).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Ipv4Net {
    /// The network of `addr` with `prefix` bits; host bits of `addr` are
    /// cleared, so `10.89.3.7/24` gives `10.89.3.0/24`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, InvalidNet> {
        if prefix > 32 {
            return Err(InvalidNet {
                value: format!("{addr}/{prefix}"),
                reason: "prefix length must be at most 32",
            });
        }
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// How many addresses the network spans, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        let (a0, a1) = self.range();
        let (b0, b1) = other.range();
        a0 <= b0 && b1 <= a1
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let (a0, a1) = self.range();
        let (b0, b1) = other.range();
        a0 <= b1 && b0 <= a1
    }

    /// First and last address (network and broadcast), as integers.
    pub fn range(&self) -> (u32, u32) {
        (u32::from(self.network), u32::from(self.broadcast()))
    }

    /// The address `offset` places after the network address, if it is
    /// still inside the network.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        if offset >= self.size() {
            return None;
        }
        let n = u64::from(u32::from(self.network)) + offset;
        u32::try_from(n).ok().map(Ipv4Addr::from)
    }

    /// Where `ip` sits inside the network, counted from the network address.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip) - u32::from(self.network)))
    }

    /// The first host address, by Drover's convention the bridge's
    /// (gateway's) address on a node subnet.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| self.nth(1)).flatten()
    }
}

/// The netmask of `prefix` (at most 32) as an integer.
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = InvalidNet;

    /// Parses `a.b.c.d/n`; the address must be the network address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| InvalidNet {
            value: s.to_string(),
            reason,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected a.b.c.d/prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if prefix > 32 {
            return Err(bad("prefix length must be at most 32"));
        }
        let net = Self::new(addr, prefix)?;
        if net.network != addr {
            return Err(bad("host bits are set (not a network address)"));
        }
        Ok(net)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().expect("valid network")
    }

    #[test]
    fn parses_and_prints() {
        let net = n("10.89.3.0/24");
        assert_eq!(net.to_string(), "10.89.3.0/24");
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 89, 3, 255));
        assert_eq!(net.first_host(), Some(Ipv4Addr::new(10, 89, 3, 1)));
        assert_eq!(net.size(), 256);
        assert_eq!(net.range(), (0x0a59_0300, 0x0a59_03ff));
        assert!(net.contains(Ipv4Addr::new(10, 89, 3, 77)));
        assert!(!net.contains(Ipv4Addr::new(10, 89, 4, 1)));
        assert_eq!(net.offset_of(Ipv4Addr::new(10, 89, 3, 9)), Some(9));
        assert_eq!(net.nth(256), None);
    }

    #[test]
    fn serde_form_is_the_text_form() {
        let json = serde_json::to_string(&n("10.89.0.0/16")).expect("serialize");
        assert_eq!(json, "\"10.89.0.0/16\"");
        let back: Ipv4Net = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, n("10.89.0.0/16"));
        let bad: Result<Ipv4Net, _> = serde_json::from_str("\"10.89.0.1/16\"");
        assert!(bad.is_err());
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "10.89.3.1/24",
            "10.89.3.0",
            "10.89.3.0/33",
            "x/24",
            "10.89.3.0/",
            "1.2.3.0/",
        ] {
            let err = bad.parse::<Ipv4Net>().expect_err(bad);
            assert_eq!(err.value, bad);
        }
        assert!(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 33).is_err());
        let all = n("0.0.0.0/0");
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(all.range(), (0, u32::MAX));
        let host = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 7), 32).expect("valid");
        assert_eq!(host.network(), Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(host.first_host(), None);
    }

    #[test]
    fn networks_overlap_and_contain() {
        let wide = n("10.89.0.0/16");
        assert!(wide.contains_net(&n("10.89.7.0/24")));
        assert!(wide.contains_net(&wide));
        assert!(!n("10.89.7.0/24").contains_net(&wide));
        assert!(!wide.contains_net(&n("10.90.7.0/24")));
        assert!(wide.overlaps(&n("10.89.7.0/24")));
        assert!(n("10.89.7.0/24").overlaps(&wide));
        assert!(!n("10.89.7.0/24").overlaps(&n("10.89.8.0/24")));
    }
}
