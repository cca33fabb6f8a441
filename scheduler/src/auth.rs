//! Who may call what, once mutual TLS has said who is calling.
//!
//! Client certificates are of people (and automation: `drover-cli` of
//! `drover tls init`, or `drover tls issue` with a role, see
//! [`crate::access`]) or of node agents (`drover-agent`, the agent
//! stream). A certificate of one kind cannot use the other's services: an
//! agent's key, stolen from a node, cannot submit jobs to every other node.
//!
//! An agent certificate may also be bound to one node (`drover tls agent
//! --node ID`: a DNS name `<ID>.node.drover` among its subject alternative
//! names, see [`bound_node`]). The scheduler then accepts it only from an
//! agent registering as that node, so a key stolen from one node cannot
//! register as another and receive its work (its jobs' environment
//! included). `drover scheduler --require-node-certs` refuses the shared
//! agent certificate of `drover tls init` altogether.

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

/// An interceptor admitting only clients whose certificate is of `role`'s
/// kind: a person's certificate of any role (see [`crate::access`], which
/// checks each method against the role) for [`Role::Cli`], an agent's for
/// [`Role::Agent`]. With `tls` off (loopback only) every caller is admitted.
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
        let der = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate presented"))?;
        let caller = crate::access::identify(der.as_ref())?;
        match (role, caller.kind) {
            (Role::Cli, crate::access::Kind::Person(_))
            | (Role::Agent, crate::access::Kind::Agent) => Ok(req),
            _ => Err(Status::permission_denied(format!(
                "certificate {:?} may not call this service; it needs a {:?} certificate",
                caller.name,
                role.common_name()
            ))),
        }
    }
}

/// Suffix of the DNS name that binds an agent certificate to one node:
/// `<node-id>.node.drover`.
pub const NODE_NAME_SUFFIX: &str = ".node.drover";

/// The node a DER certificate is bound to (see the module docs); `None`
/// for a certificate that names no node, or that cannot be parsed.
pub fn bound_node(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => dns
            .strip_suffix(NODE_NAME_SUFFIX)
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        _ => None,
    })
}

/// [`bound_node`] of the first certificate in a PEM file.
pub fn bound_node_pem(pem: &[u8]) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    bound_node(&pem.contents)
}

/// Whether an agent presenting `bound` (the node its certificate names,
/// `None` for a shared certificate) may register as `node_id`.
pub fn check_agent_identity(
    bound: Option<&str>,
    node_id: &str,
    require_node_certs: bool,
) -> Result<(), Status> {
    match bound {
        Some(node) if node == node_id => Ok(()),
        Some(node) => Err(Status::permission_denied(format!(
            "this agent's certificate is for node {node:?}, but it registers as {node_id:?}; \
             use the certificate issued for this node (drover tls agent --node {node_id})"
        ))),
        None if require_node_certs => Err(Status::permission_denied(format!(
            "node {node_id:?} presents a shared agent certificate, and this scheduler \
             requires one per node (--require-node-certs): issue it with \
             drover tls agent --node {node_id}"
        ))),
        None => Ok(()),
    }
}
