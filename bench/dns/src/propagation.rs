//! Propagation: from a change to the first DNS answer that shows it.
//!
//! Here, the mode "from the etcd write": for each of `changes` new
//! instances of the service `prop`, the clock starts, the instance's
//! SkyDNS record is put into the store (in a task of its own), and this
//! side asks the server for the instance's name in a tight loop until the
//! answer holds its address; then the record is deleted and timed until
//! the name is NXDOMAIN again. The put's own acknowledgement is timed too
//! (from the same start), to tell the store's part from the watch's. The
//! server is either the bench's in-process one or another host's node DNS
//! (through the scheduler's relay), whichever `client` asks.
//!
//! The modes "from a check passing" are in `checked.rs`: the instance is
//! made to appear by its check, and the clock starts at the agent's
//! verdict; the polling loop ([`until`]) is the same.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::time::Instant;

use crate::client::Client;
use crate::zone::ZONE;

/// What makes an instance appear and disappear, and where it is asked.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A put (and then a delete) of its record in the store; the bench's
    /// in-process server asked.
    EtcdWrite,
    /// The same write into the multi-host harness's store; another host's
    /// node DNS asked (the scheduler relays the record to its agent).
    EtcdWriteOtherHost,
    /// Its http check turning passing (then critical) on `drover dev`'s
    /// agent; the node DNS on the bridge and dev's host DNS asked.
    CheckSameNode,
    /// Its check turning on one host of the multi-host harness; the other
    /// host's node DNS asked.
    CheckOtherHost,
}

/// The timings of one mode, each from the start of a change.
#[derive(Debug, Default)]
pub struct Samples {
    /// Until an answer held the new instance.
    pub appear: Vec<Duration>,
    /// Until the store acknowledged the put.
    pub put_ack: Vec<Duration>,
    /// Until the deleted instance's name was NXDOMAIN.
    pub disappear: Vec<Duration>,
}

/// Longest a change may take to show before the run fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// One question's patience: a lost UDP packet costs this much.
const ASK_TIMEOUT: Duration = Duration::from_millis(100);

/// Times `changes` appearances and disappearances of records written
/// through `etcd`, asking `client`'s server.
pub async fn run(etcd: &etcd_client::Client, client: &mut Client, changes: u32) -> Result<Samples> {
    let mut samples = Samples::default();
    for n in 0..changes {
        let id = format!("p{n:05}");
        let addr = Ipv4Addr::from(0x0a70_0000 + n);
        let key = format!("/skydns/internal/drover/service/prop/{id}");
        let name = Name::from_ascii(format!("{id}.prop.service.{ZONE}."))?;
        let start = Instant::now();
        let ack = {
            let mut etcd = etcd.clone();
            let value = format!(r#"{{"host":"{addr}","port":80}}"#);
            tokio::spawn(async move {
                etcd.put(key.as_str(), value, None).await?;
                Ok::<_, etcd_client::Error>((start.elapsed(), key))
            })
        };
        until(client, &name, start, Duration::ZERO, |r| {
            r.0 == ResponseCode::NoError && r.1.contains(&IpAddr::V4(addr))
        })
        .await
        .with_context(|| format!("instance {id} never appeared"))?;
        samples.appear.push(start.elapsed());
        let (acked, key) = ack.await??;
        samples.put_ack.push(acked);

        let start = Instant::now();
        {
            let mut etcd = etcd.clone();
            tokio::spawn(async move { etcd.delete(key, None).await });
        }
        until(client, &name, start, Duration::ZERO, |r| {
            r.0 == ResponseCode::NXDomain
        })
        .await
        .with_context(|| format!("instance {id} never went away"))?;
        samples.disappear.push(start.elapsed());
    }
    Ok(samples)
}

/// Asks `name` A until `done` holds for (rcode, addresses), waiting
/// `poll` between questions (none when zero), or fails at [`DEADLINE`]
/// after `start`.
pub async fn until(
    client: &mut Client,
    name: &Name,
    start: Instant,
    poll: Duration,
    done: impl Fn(&(ResponseCode, Vec<IpAddr>)) -> bool,
) -> Result<()> {
    loop {
        if let Ok(m) = client.ask(name, RecordType::A, ASK_TIMEOUT).await {
            let addrs = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            if done(&(m.metadata.response_code, addrs)) {
                return Ok(());
            }
        }
        if start.elapsed() > DEADLINE {
            bail!("not within {DEADLINE:?}");
        }
        if !poll.is_zero() {
            tokio::time::sleep(poll).await;
        }
    }
}
