//! Who may call what, once mutual TLS has said who is calling.
//!
//! `drover tls init` issues client certificates whose common name names a
//! role: `drover-cli` for people and automation (jobs, nodes, allocations),
//! `drover-agent` for node agents (the agent stream). A certificate of one
//! role cannot use the other's services: an agent's key, stolen from a node,
//! cannot submit jobs to every other node.

use tonic::{Request, Status};

/// The role a client certificate must carry to call a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// People and automation: `JobService`, `NodeService`, `AllocService`.
    Cli,
    /// Node agents: `AgentService`.
    Agent,
}

impl Role {
    /// The certificate common name of this role.
    pub fn common_name(self) -> &'static str {
        match self {
            Role::Cli => "drover-cli",
            Role::Agent => "drover-agent",
        }
    }
}

/// An interceptor admitting only clients whose certificate carries `role`.
/// With `tls` off (loopback only) every caller is admitted.
pub fn require(
    role: Role,
    tls: bool,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        if !tls {
            return Ok(req);
        }
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate presented"))?;
        let cn = certs
            .first()
            .and_then(|der| common_name(der.as_ref()))
            .ok_or_else(|| Status::unauthenticated("client certificate has no common name"))?;
        if cn == role.common_name() {
            Ok(req)
        } else {
            Err(Status::permission_denied(format!(
                "certificate {cn:?} may not call this service; it needs a {:?} certificate",
                role.common_name()
            )))
        }
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
