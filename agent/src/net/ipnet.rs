//! An IPv4 network in CIDR form.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::NetError;

/// An IPv4 network: a network address with its host bits clear and a prefix
/// length, e.g. `10.89.3.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The network of `addr` with `prefix` bits; host bits of `addr` are
    /// cleared, so `10.89.3.7/24` gives `10.89.3.0/24`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        if prefix > 32 {
            return Err(NetError::invalid(
                "prefix length",
                prefix.to_string(),
                "must be at most 32",
            ));
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

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    /// Parses `a.b.c.d/n`; the address must be the network address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| NetError::invalid("IPv4 network", s, reason);
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected a.b.c.d/prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
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

    #[test]
    fn parses_and_prints() {
        let n: Ipv4Net = "10.89.3.0/24".parse().expect("valid");
        assert_eq!(n.to_string(), "10.89.3.0/24");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 89, 3, 255));
        assert_eq!(n.first_host(), Some(Ipv4Addr::new(10, 89, 3, 1)));
        assert_eq!(n.size(), 256);
        assert!(n.contains(Ipv4Addr::new(10, 89, 3, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 4, 1)));
        assert_eq!(n.offset_of(Ipv4Addr::new(10, 89, 3, 9)), Some(9));
        assert_eq!(n.nth(256), None);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "10.89.3.1/24",
            "10.89.3.0",
            "10.89.3.0/33",
            "x/24",
            "10.89.3.0/",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} should not parse");
        }
        let all: Ipv4Net = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        let host = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 7), 32).expect("valid");
        assert_eq!(host.first_host(), None);
    }
}
