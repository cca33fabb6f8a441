//! The request handler: hickory-server's [`RequestHandler`] over the pure
//! [`answer`](crate::answer::answer) and the [`Forwarder`].
//!
//! hickory's server does the framing and drops what does not parse (it
//! answers FORMERR when the header was readable); this handler checks the
//! rest of the request (opcode, one question, EDNS version), answers from
//! a read of the shared index (the lock is held only while the answer's
//! records are built, never across an await), forwards the rest, fits the
//! result into the client's UDP size and sends it. Every reply goes out
//! with EDNS when the request had it: the payload size is the client's
//! (at least 512), capped by the zone's `max_udp_payload`.

use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::serialize::binary::BinDecoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tracing::{debug, warn};

use crate::answer::{answer, Outcome, Question, Reply};
use crate::config::Zone;
use crate::fit::fit;
use crate::forward::{Forwarder, QueryFlags};
use crate::index::SharedIndex;

/// The EDNS version this server speaks (RFC 6891).
const EDNS_VERSION: u8 = 0;

/// Answers DNS requests from the index and the upstreams.
#[derive(Debug, Clone)]
pub struct Handler {
    zone: Arc<Zone>,
    index: SharedIndex,
    forwarder: Option<Arc<Forwarder>>,
}

/// A response before encoding.
struct Response {
    metadata: Metadata,
    reply: Reply,
}

impl Handler {
    /// Answers for `zone` from `index`; names outside the zone go to
    /// `forwarder` (when the zone forwards; else they are refused).
    pub fn new(zone: Zone, index: SharedIndex, forwarder: Option<Forwarder>) -> Self {
        Self {
            zone: Arc::new(zone),
            index,
            forwarder: forwarder.map(Arc::new),
        }
    }

    /// The zone answered.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The forwarder, if any.
    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.forwarder.as_deref()
    }

    /// Replaces the forwarder (the server drops its own addresses from the
    /// upstreams).
    pub fn set_forwarder(&mut self, forwarder: Option<Forwarder>) {
        self.forwarder = forwarder.map(Arc::new);
    }

    fn forwards(&self) -> bool {
        self.zone.forwarding && self.forwarder.is_some()
    }

    /// The response to `request`, before fitting.
    async fn respond(&self, request: &Request) -> Response {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = self.forwards();
        let error = |mut metadata: Metadata, rcode| {
            metadata.response_code = rcode;
            Response {
                metadata,
                reply: Reply::default(),
            }
        };
        if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            return error(metadata, ResponseCode::BADVERS);
        }
        if request.metadata.op_code != OpCode::Query {
            return error(metadata, ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return error(metadata, ResponseCode::FormErr);
        };
        if name_has_pointer(request.queries.as_bytes()) {
            return error(metadata, ResponseCode::FormErr);
        }
        let original = query.original();
        let question = Question {
            name: original.name(),
            qtype: original.query_type(),
            qclass: original.query_class(),
        };
        let outcome = self
            .index
            .read(|index| answer(&self.zone, index, &question, &mut rand::rng()));
        match outcome {
            Outcome::Answer(reply) => {
                metadata.authoritative = true;
                metadata.response_code = reply.rcode;
                Response { metadata, reply }
            }
            Outcome::Refused => error(metadata, ResponseCode::Refused),
            Outcome::Forward => self.forward(request, original, metadata).await,
        }
    }

    async fn forward(&self, request: &Request, query: &Query, metadata: Metadata) -> Response {
        let servfail = |mut metadata: Metadata| {
            metadata.response_code = ResponseCode::ServFail;
            Response {
                metadata,
                reply: Reply::default(),
            }
        };
        let Some(forwarder) = self.forwarder.as_deref() else {
            return servfail(metadata);
        };
        let flags = QueryFlags {
            recursion_desired: request.metadata.recursion_desired,
            checking_disabled: request.metadata.checking_disabled,
        };
        match forwarder.forward(query, flags).await {
            Ok(message) => from_upstream(metadata, message),
            Err(error) => {
                warn!(name = %query.name(), qtype = %query.query_type(), %error, "forwarding failed: SERVFAIL");
                servfail(metadata)
            }
        }
    }
}

/// An upstream's reply as ours: its code and sections, our header (RA set,
/// AA and AD clear: we neither own nor validated it).
fn from_upstream(mut metadata: Metadata, message: Message) -> Response {
    metadata.response_code = message.metadata.response_code;
    Response {
        metadata,
        reply: Reply {
            rcode: message.metadata.response_code,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        },
    }
}

/// The EDNS record of the response: the client's payload size (at least
/// 512) under our cap.
fn response_edns(request: &Request, max_udp_payload: u16) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_version(EDNS_VERSION);
    edns.set_max_payload(asked.max_payload().max(512).min(max_udp_payload));
    Some(edns)
}

/// Whether the first question's name, as the client wrote it, holds a
/// compression pointer (or an obsolete extended label type). Nothing precedes the first question that a pointer
/// could rightly point to (RFC 1035 4.1.4), so it points into the header,
/// at itself or ahead, and a response echoing those bytes would point
/// into the response's own header: a name no client can read (found by
/// the fuzz target). Such a request gets FORMERR without its question.
fn name_has_pointer(question: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&len) = question.get(at) {
        match len {
            0 => return false,
            1..=0x3f => at += 1 + usize::from(len),
            _ => return true,
        }
    }
    false
}

/// An empty question section.
pub(crate) fn no_queries() -> Option<Queries> {
    Queries::read(&mut BinDecoder::new(&[]), 0).ok()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let edns = response_edns(request, self.zone.max_udp_payload);
        // A question that cannot be echoed is left out of the FORMERR.
        let bare;
        let queries = match name_has_pointer(request.queries.as_bytes())
            .then(no_queries)
            .flatten()
        {
            Some(none) => {
                bare = none;
                &bare
            }
            None => &request.queries,
        };
        let Response {
            mut metadata,
            mut reply,
        } = self.respond(request).await;
        if request.protocol().is_datagram() {
            let limit = edns.as_ref().map_or(512, Edns::max_payload);
            metadata.truncation = fit(&mut reply, &metadata, queries, limit, edns.is_some());
        }
        crate::metrics::answered(request, metadata.response_code, started);
        debug!(
            src = %request.src(),
            protocol = %request.protocol(),
            id = metadata.id,
            rcode = %metadata.response_code,
            answers = reply.answers.len(),
            truncated = metadata.truncation,
            "answered"
        );
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(src = %request.src(), %error, "sending the response failed");
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::name_has_pointer;

    #[test]
    fn pointers_in_the_question_name_are_found() {
        // web.x. A IN
        assert!(!name_has_pointer(b"\x03web\x01x\x00\x00\x01\x00\x01"));
        // The fuzz target's find: 7.3.<pointer to the header's flags>.
        assert!(name_has_pointer(b"\x017\x013\x02\x071\xc0\x02\x0c\x38"));
        assert!(name_has_pointer(b"\xc0\x0c\x00\x01\x00\x01"));
        assert!(name_has_pointer(b"\x41abc\x00"));
        // A label running past the end is the parser's problem, not ours.
        assert!(!name_has_pointer(b"\x09ab"));
        assert!(!name_has_pointer(b""));
    }
}
