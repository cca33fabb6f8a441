//! The request path on bytes: one DNS message in, the bytes the server
//! would send back out, without a socket.
//!
//! [`Handler::answer_bytes`] takes the message the way hickory's server
//! loop does before it calls the handler (a header that does not read is
//! dropped; a body that does not parse gets FORMERR; a response is
//! dropped), then runs [`Handler`]'s own `RequestHandler::handle_request`,
//! the function the server calls for every request, with a response
//! handle that encodes as hickory's does (UDP: the EDNS payload size or
//! 512 bytes at most; TCP: 64 KiB) and keeps the bytes. So the fuzz target
//! (`dns/fuzz`) and the corpus test exercise the parser, the answer, the
//! size fitting and the encoder that answer real clients; only the socket
//! loops are left out.
//!
//! Forwarded names are awaited like any others; a handler without a
//! forwarder answers them at once (SERVFAIL, or REFUSED in zone-only
//! mode), so with no forwarder the future never waits on anything.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use tracing::warn;

use crate::handler::{no_queries, Handler};

/// The client address requests on bytes appear to come from (the handler
/// only logs it).
const SOURCE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

/// The largest UDP message without EDNS (RFC 1035 4.2.1).
const PLAIN_UDP: u16 = 512;

impl Handler {
    /// Answers the DNS message `raw` as if it came over `protocol` (UDP or
    /// TCP, without TCP's length prefix): the bytes of the response, or
    /// `None` when the server would send nothing (fewer than 12 bytes, or
    /// a response rather than a query).
    pub async fn answer_bytes(&self, raw: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
        let header = Header::read(&mut BinDecoder::new(raw)).ok()?;
        let sink = Captured::new(protocol);
        match Request::from_bytes(raw.to_vec(), SOURCE, protocol) {
            Ok(request) => {
                if request.metadata.message_type == MessageType::Response {
                    return None;
                }
                self.handle_request::<_, TokioTime>(&request, sink.clone())
                    .await;
            }
            Err(_) => {
                let queries = no_queries()?;
                let response = MessageResponseBuilder::new(&queries, None)
                    .error_msg(&header.metadata, ResponseCode::FormErr);
                sink.clone().send_response(response).await.ok()?;
            }
        }
        sink.take()
    }
}

/// A response handle that keeps the encoded response.
#[derive(Clone)]
struct Captured {
    protocol: Protocol,
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Captured {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            bytes: Arc::default(),
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Captured {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode(response, self.protocol)?;
        *self.bytes.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}

/// Encodes `response` as hickory's own response handle does: at most the
/// client's UDP size over UDP, and a bare SERVFAIL header when the
/// message cannot be encoded.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    protocol: Protocol,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let max_size = match protocol {
        Protocol::Udp => response.edns().map_or(PLAIN_UDP, |e| e.max_payload()),
        _ => u16::MAX,
    };
    let mut bytes = Vec::with_capacity(usize::from(PLAIN_UDP));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let error = match response.destructive_emit(&mut encoder) {
        Ok(info) => return Ok((info, bytes)),
        Err(error) => error,
    };
    warn!(id, %error, "encoding the response failed: SERVFAIL");
    bytes.clear();
    let mut encoder = BinEncoder::new(&mut bytes);
    let mut metadata = Metadata::new(
        id,
        MessageType::Response,
        hickory_server::proto::op::OpCode::Query,
    );
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    header.emit(&mut encoder)?;
    Ok((ResponseInfo::from(header), bytes))
}
