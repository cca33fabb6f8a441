//! A parser for the `nameserver` lines of resolv.conf(5), the host's
//! upstream resolvers.
//!
//! Pure: the caller reads the file ([`crate::config::ZoneConfig::upstreams`]).
//! It reads the file as glibc does, because glibc is what the host's
//! programs use: `#` and `;` start comments, a `nameserver` line names
//! one address (anything after it is ignored), and only the first three
//! (glibc's `MAXNS`) count. Unlike glibc, lines it cannot use are reported
//! rather than silently skipped, for the caller to log; a link-local IPv6
//! address with a named scope (`fe80::1%eth0`) is one of them, as naming
//! the interface would need a syscall this crate does not make.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// How many nameservers glibc uses (`MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;

/// The DNS port upstreams are reached on.
const DNS_PORT: u16 = 53;

/// The nameservers of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// The nameservers, in file order, at most [`MAX_NAMESERVERS`].
    pub nameservers: Vec<SocketAddr>,
    /// Lines that named a server this parser could not use, each with why.
    pub skipped: Vec<String>,
}

impl ResolvConf {
    /// The nameservers as upstreams.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers.clone()
    }
}

/// Parses the text of a resolv.conf.
pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let lineno = number + 1;
        let Some(addr) = words.next() else {
            conf.skipped
                .push(format!("line {lineno}: nameserver without an address"));
            continue;
        };
        match parse_nameserver(addr) {
            Ok(server) if conf.nameservers.len() < MAX_NAMESERVERS => {
                conf.nameservers.push(server)
            }
            Ok(server) => conf.skipped.push(format!(
                "line {lineno}: {server} is past the first {MAX_NAMESERVERS}, which is all glibc uses"
            )),
            Err(why) => conf.skipped.push(format!("line {lineno}: {addr:?} {why}")),
        }
    }
    conf
}

/// One `nameserver` address: IPv4, IPv6, or IPv6 with a numeric scope.
fn parse_nameserver(text: &str) -> Result<SocketAddr, &'static str> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    let (addr, scope) = text.split_once('%').ok_or("is not an IP address")?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| "is not an IP address")?;
    let scope: u32 = scope
        .parse()
        .map_err(|_| "has a named scope; give the interface's index instead")?;
    Ok(SocketAddr::V6(SocketAddrV6::new(addr, DNS_PORT, 0, scope)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_as_glibc_reads_them() {
        let conf = parse(
            "# generated\n\
             search example.com\n\
             nameserver 192.0.2.1 # primary\n\
             nameserver\t2001:db8::53\n\
             ; nameserver 192.0.2.99\n\
             options ndots:1 timeout:2\n\
             nameserver fe80::1%2 extra words\n\
             nameserver 192.0.2.4\n",
        );
        let want: Vec<SocketAddr> = ["192.0.2.1:53", "[2001:db8::53]:53", "[fe80::1%2]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(conf.nameservers, want);
        assert_eq!(conf.upstreams(), want);
        assert_eq!(conf.skipped.len(), 1);
        assert!(conf.skipped[0].starts_with("line 8: 192.0.2.4:53 is past the first 3"));
    }

    #[test]
    fn unusable_lines_are_reported_not_fatal() {
        let conf = parse(
            "nameserver\nnameserver dns.example\nnameserver fe80::1%eth0\n\
             nameserver 10.0.0.1/8\nnameservers 192.0.2.9\nnameserver 127.0.0.53\n",
        );
        assert_eq!(conf.nameservers, ["127.0.0.53:53".parse().unwrap()]);
        let skipped = conf.skipped.join("\n");
        for says in [
            "line 1: nameserver without an address",
            "line 2: \"dns.example\" is not an IP address",
            "line 3: \"fe80::1%eth0\" has a named scope",
            "line 4: \"10.0.0.1/8\" is not an IP address",
        ] {
            assert!(skipped.contains(says), "{says}: {skipped}");
        }
        assert_eq!(conf.skipped.len(), 4);
    }

    #[test]
    fn an_empty_file_names_no_upstream() {
        assert_eq!(parse(""), ResolvConf::default());
        assert!(parse("search x\noptions edns0\n").nameservers.is_empty());
    }
}
