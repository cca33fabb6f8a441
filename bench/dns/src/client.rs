//! A minimal DNS client over UDP: one question, one answer, a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// A UDP socket on loopback that asks one server.
pub struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

impl Client {
    /// A client of `server`.
    pub async fn new(server: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding a UDP client socket on 127.0.0.1")?;
        socket
            .connect(server)
            .await
            .with_context(|| format!("connecting a UDP socket to {server}"))?;
        Ok(Self {
            socket,
            server,
            next_id: 1,
        })
    }

    /// A client of `server` through `socket`, a UDP socket made elsewhere
    /// (e.g. inside another network namespace, where it stays). Needs a
    /// tokio runtime.
    pub fn from_std(socket: std::net::UdpSocket, server: SocketAddr) -> Result<Self> {
        socket
            .set_nonblocking(true)
            .context("making a UDP client socket non-blocking")?;
        socket
            .connect(server)
            .with_context(|| format!("connecting a UDP socket to {server}"))?;
        let socket = UdpSocket::from_std(socket).context("registering a UDP client socket")?;
        Ok(Self {
            socket,
            server,
            next_id: 1,
        })
    }

    /// Asks `name` `qtype`; the response, or an error after `timeout`.
    pub async fn ask(
        &mut self,
        name: &Name,
        qtype: RecordType,
        timeout: Duration,
    ) -> Result<Message> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(name.clone(), qtype));
        let bytes = query.to_vec().context("encoding a query")?;
        self.socket.send(&bytes).await.context("sending a query")?;
        let mut buf = vec![0; 4096];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                .await
                .with_context(|| {
                    format!(
                        "no answer from {} for {name} within {timeout:?}",
                        self.server
                    )
                })?
                .context("receiving an answer")?;
            let message = Message::from_vec(&buf[..n]).context("parsing an answer")?;
            // A late answer to an earlier query that timed out: skip it.
            if message.metadata.id == id {
                return Ok(message);
            }
        }
    }

    /// Asks for the zone's SOA until the server answers, for up to
    /// `deadline`.
    pub async fn wait_ready(&mut self, zone: &Name, deadline: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            match self
                .ask(zone, RecordType::SOA, Duration::from_millis(200))
                .await
            {
                Ok(m) if !m.answers.is_empty() => return Ok(()),
                Ok(_) | Err(_) if tokio::time::Instant::now() < until => {}
                Ok(m) => bail!("{} answers no SOA for {zone}: {m:?}", self.server),
                Err(e) => return Err(e.context(format!("{} never answered", self.server))),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
