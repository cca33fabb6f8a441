//! The harness of the server tests: a server on loopback port 0 with an
//! index the test fills, Debian's `dig` as the client, and a fake upstream
//! resolver that records what it is asked.
//!
//! Everything listens on 127.0.0.1 and stops when its guard drops, even
//! when the test fails.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drover_dns::config::ZoneConfig;
use drover_dns::forward::Forwarder;
use drover_dns::handler::Handler;
use drover_dns::server::{serve, ServerError};
use drover_dns::{Event, SharedIndex};
use hickory_server::proto::op::{Message, MessageType, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where Debian's bind9-dnsutils installs dig.
pub const DIG: &str = "/usr/bin/dig";

/// Key prefix of the services of the default zone.
pub const SVC: &str = "/skydns/internal/drover/service/";

/// Sets up logging once, to the test's output (`RUST_LOG` filters it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Writes `value` at `key` of the index.
pub fn put(index: &SharedIndex, key: &str, value: &str) {
    let event = Event::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    if let Err(e) = index.write(|i| i.apply(&event)) {
        panic!("test record {key}: {e}");
    }
}

/// The fixture of most tests: web (a1 v2 tcp, b2 blue, c3 v2), dns (d4,
/// IPv6), nodes n1 and n2.
pub fn fixture(index: &SharedIndex) {
    let ep = |host: &str, port: u16, extra: &str| {
        format!(r#"{{"host":"{host}","port":{port},"priority":10,"weight":5{extra}}}"#)
    };
    put(
        index,
        &format!("{SVC}web/a1"),
        &ep("10.89.3.7", 8080, r#","tags":["v2"],"protocol":"tcp""#),
    );
    put(
        index,
        &format!("{SVC}web/b2"),
        &ep("10.89.3.8", 8080, r#","tags":["blue"]"#),
    );
    put(
        index,
        &format!("{SVC}web/c3"),
        &ep("10.89.4.2", 8080, r#","tags":["v2"]"#),
    );
    put(index, &format!("{SVC}dns/d4"), &ep("fd00::4", 53, ""));
    put(
        index,
        "/skydns/internal/drover/node/n1",
        r#"{"host":"10.89.0.1"}"#,
    );
    put(
        index,
        "/skydns/internal/drover/node/n2",
        r#"{"host":"10.89.1.1"}"#,
    );
    index.write(|i| i.set_revision(42));
}

/// `count` instances of service `name`, at distinct addresses.
pub fn many(index: &SharedIndex, name: &str, count: u32) {
    for n in 0..count {
        let host = Ipv4Addr::from(0x0a59_0a00 + n);
        put(
            index,
            &format!("{SVC}{name}/i{n:04}"),
            &format!(r#"{{"host":"{host}","port":80}}"#),
        );
    }
}

/// A server on 127.0.0.1, UDP and TCP on one port; stopped on drop.
pub struct TestServer {
    /// The port of both sockets.
    pub port: u16,
    /// The index it answers from.
    pub index: SharedIndex,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// Starts a server for `config`, forwarding to `upstreams` (none:
    /// no forwarder).
    pub async fn start(config: ZoneConfig, upstreams: Vec<SocketAddr>) -> Result<Self> {
        Self::start_with(config, upstreams, SharedIndex::default()).await
    }

    /// Starts a server answering from `index`.
    pub async fn start_with(
        config: ZoneConfig,
        upstreams: Vec<SocketAddr>,
        index: SharedIndex,
    ) -> Result<Self> {
        init_tracing();
        let zone = config.zone()?;
        let forwarder =
            (!upstreams.is_empty()).then(|| Forwarder::new(upstreams, config.forward_timeout()));
        let handler = Handler::new(zone, index.clone(), forwarder);
        let (udp, tcp) = bind_pair().await?;
        let port = udp.local_addr()?.port();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(handler, vec![udp], vec![tcp], stop.clone()));
        Ok(Self {
            port,
            index,
            stop,
            task: Some(task),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Runs `dig @127.0.0.1 -p PORT +norec +tries=1 ARGS` and parses it.
    pub async fn dig(&self, args: &[&str]) -> Result<Dig> {
        let port = self.port.to_string();
        let output = tokio::process::Command::new(DIG)
            .args([
                "@127.0.0.1",
                "-p",
                &port,
                "+norec",
                "+tries=1",
                "+timeout=5",
            ])
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {DIG} (install bind9-dnsutils)"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!("dig {args:?} failed ({}): {text}", output.status);
        }
        Dig::parse(&text).with_context(|| format!("dig {args:?}:\n{text}"))
    }

    /// Whether the server still runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await???;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `f` every 20 ms until it holds or `deadline` passes.
pub async fn poll_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let end = tokio::time::Instant::now() + deadline;
    while !f() {
        if tokio::time::Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A UDP socket and a TCP listener on the same loopback port.
async fn bind_pair() -> Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    bail!("no loopback port free for both UDP and TCP: {last:?}")
}

/// One resource record of dig's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    /// Owner name.
    pub name: String,
    /// TTL.
    pub ttl: u32,
    /// Type (`A`, `SRV`, ...).
    pub rtype: String,
    /// RDATA as dig prints it.
    pub data: String,
}

/// What dig printed, parsed.
#[derive(Debug, Default)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, ...
    pub status: String,
    /// Header flags (`qr`, `aa`, `tc`, `rd`, `ra`).
    pub flags: BTreeSet<String>,
    /// The answer section.
    pub answer: Vec<Rr>,
    /// The authority section.
    pub authority: Vec<Rr>,
    /// The additional section (without the OPT pseudo-section).
    pub additional: Vec<Rr>,
    /// The server's EDNS UDP size, when it sent OPT.
    pub edns_udp: Option<u16>,
    /// The size of the response in bytes (`MSG SIZE rcvd`).
    pub size: usize,
    /// The whole output, for assertion messages.
    pub text: String,
}

impl Dig {
    fn parse(text: &str) -> Result<Self> {
        let mut dig = Dig {
            text: text.to_owned(),
            ..Dig::default()
        };
        let mut section: Option<&str> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
                dig.status = field(rest, "status: ")?;
            } else if let Some(rest) = line.strip_prefix(";; flags:") {
                let flags = rest.split(';').next().unwrap_or_default();
                dig.flags = flags.split_whitespace().map(str::to_owned).collect();
            } else if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd: ") {
                dig.size = rest.trim().parse()?;
            } else if let Some(rest) = line.strip_prefix("; EDNS:") {
                dig.edns_udp = Some(field(rest, "udp: ")?.parse()?);
            } else if line.starts_with(";; ") && line.ends_with("SECTION:") {
                section = line.split_whitespace().nth(1);
            } else if line.trim().is_empty() {
                section = None;
            } else if !line.starts_with(';') {
                let rr = parse_rr(line)?;
                match section {
                    Some("ANSWER") => dig.answer.push(rr),
                    Some("AUTHORITY") => dig.authority.push(rr),
                    Some("ADDITIONAL") => dig.additional.push(rr),
                    _ => {}
                }
            }
        }
        if dig.status.is_empty() {
            bail!("no header in dig's output");
        }
        Ok(dig)
    }

    /// The answers' data, sorted.
    pub fn answer_data(&self) -> Vec<String> {
        let mut data: Vec<String> = self.answer.iter().map(|r| r.data.clone()).collect();
        data.sort();
        data
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }
}

fn field(text: &str, key: &str) -> Result<String> {
    let start = text.find(key).context(key.to_owned())? + key.len();
    let value = &text[start..];
    let end = value.find([',', ' ']).unwrap_or(value.len());
    Ok(value[..end].to_owned())
}

fn parse_rr(line: &str) -> Result<Rr> {
    let mut words = line.split_whitespace();
    let (Some(name), Some(ttl), Some(_class), Some(rtype)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        bail!("not a record: {line}");
    };
    Ok(Rr {
        name: name.to_owned(),
        ttl: ttl.parse()?,
        rtype: rtype.to_owned(),
        data: words.collect::<Vec<_>>().join(" "),
    })
}

/// A fake upstream resolver on 127.0.0.1 (UDP and TCP on one port): it
/// answers every A question with 192.0.2.53, except names starting with
/// `big.`, which get TC over UDP and 100 addresses over TCP, and names
/// starting with `fail.`, which get SERVFAIL. It records every name asked.
pub struct FakeUpstream {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts it.
    pub async fn start() -> Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = vec![
            tokio::spawn(fake_udp(udp, seen.clone())),
            tokio::spawn(fake_tcp(tcp, seen.clone())),
        ];
        Ok(Self { addr, seen, tasks })
    }

    /// Every name it was asked, in order, as `name/protocol`.
    pub fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn fake_answer(query: &[u8], tcp: bool, seen: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = question.name().to_ascii();
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{name}/{}", if tcp { "tcp" } else { "udp" }));
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let lower = name.to_ascii_lowercase();
    let count = if lower.starts_with("big.") { 100 } else { 1 };
    if lower.starts_with("fail.") {
        reply.metadata.response_code = ResponseCode::ServFail;
    } else if count > 1 && !tcp {
        reply.metadata.truncation = true;
    } else {
        for i in 0..count {
            let ip = Ipv4Addr::new(192, 0, 2, 53 + i);
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(ip)),
            ));
        }
    }
    reply.to_vec().ok()
}

async fn fake_udp(socket: UdpSocket, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = vec![0; 65535];
    while let Ok((len, from)) = socket.recv_from(&mut buf).await {
        if let Some(reply) = fake_answer(&buf[..len], false, &seen) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

async fn fake_tcp(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(len) = stream.read_u16().await else {
                return;
            };
            let mut buf = vec![0; usize::from(len)];
            if stream.read_exact(&mut buf).await.is_err() {
                return;
            }
            if let Some(reply) = fake_answer(&buf, true, &seen) {
                let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
                let _ = stream.write_all(&len.to_be_bytes()).await;
                let _ = stream.write_all(&reply).await;
            }
        });
    }
}
