//! The benchmark's zone, written out for both servers: `services`
//! services of `instances` instances each, as SkyDNS records for Drover's
//! store and as a zone file for knot, and the dnsperf query file.
//!
//! Both serve the same names and answers:
//! - `<svc>.service.drover.internal.` A: one address per instance;
//! - `<id>.<svc>.service.drover.internal.` A: the instance's address;
//! - `_<svc>._tcp.service.drover.internal.` SRV: one record per instance,
//!   target `<id>.<svc>...`, whose A records both add to the additional
//!   section;
//! - the apex SOA and NS, TTL 5 everywhere.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The zone both servers answer for.
pub const ZONE: &str = "drover.internal";

/// The records' TTL (Drover's default).
pub const TTL: u32 = 5;

/// One instance of one service.
pub struct Instance {
    /// The service's label (`svc0042`).
    pub service: String,
    /// The instance's label (an allocation id in Drover: 8 hex digits).
    pub id: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its port.
    pub port: u16,
}

/// `services` x `instances` instances at distinct addresses of 10.96/12.
pub fn instances(services: u32, instances: u32) -> Vec<Instance> {
    (0..services)
        .flat_map(|s| {
            (0..instances).map(move |i| {
                let n = s * instances + i;
                Instance {
                    service: format!("svc{s:04}"),
                    id: format!("{:08x}", n.wrapping_mul(0x9e37_79b9)),
                    addr: Ipv4Addr::from(0x0a60_0000 + n),
                    port: 8080,
                }
            })
        })
        .collect()
}

impl Instance {
    /// Its key in the SkyDNS layout.
    pub fn key(&self) -> String {
        format!(
            "/skydns/internal/drover/service/{}/{}",
            self.service, self.id
        )
    }

    /// Its SkyDNS value, as Drover's scheduler writes it.
    pub fn value(&self) -> String {
        format!(
            r#"{{"host":"{}","port":{},"priority":10,"weight":10,"ttl":{TTL},"protocol":"tcp"}}"#,
            self.addr, self.port
        )
    }
}

/// The same records as a zone file for knot.
pub fn zone_file(instances: &[Instance]) -> String {
    let mut out = format!(
        "$ORIGIN {ZONE}.\n$TTL {TTL}\n\
         @ SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 5\n\
         @ NS ns.{ZONE}.\n"
    );
    for i in instances {
        let (svc, id, addr, port) = (&i.service, &i.id, i.addr, i.port);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{svc}.service A {addr}");
        let _ = writeln!(out, "{id}.{svc}.service A {addr}");
        let _ = writeln!(
            out,
            "_{svc}._tcp.service SRV 10 10 {port} {id}.{svc}.service.{ZONE}."
        );
    }
    out
}

/// dnsperf's query file: for every service an A and an SRV question, in
/// a fixed random order.
pub fn query_file(services: u32) -> String {
    let mut lines: Vec<String> = (0..services)
        .flat_map(|s| {
            [
                format!("svc{s:04}.service.{ZONE}. A"),
                format!("_svc{s:04}._tcp.service.{ZONE}. SRV"),
            ]
        })
        .collect();
    lines.shuffle(&mut StdRng::seed_from_u64(12));
    lines.join("\n") + "\n"
}
