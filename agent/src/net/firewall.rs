//! Isolation of tasks from the node's own services: an nftables table of
//! the agent's, spoken over raw `NETLINK_NETFILTER` (no `nft` process, no
//! libnftnl).
//!
//! Why nftables, and why in the `input` hook: a task reaches the node
//! through its default route, the bridge. Every packet it sends to an
//! address of the node itself (the bridge address, the host's other
//! addresses, IPv6 link-local ones on the bridge) is delivered locally and
//! goes through the node's `input` hook with the bridge as input interface;
//! traffic to other tasks is bridged and traffic to other nodes' subnets is
//! forwarded, and neither passes there. One chain on that hook can thus
//! let a task reach exactly the node's DNS (port 53, UDP and TCP, on the
//! bridge address) and replies to connections the node opened (health
//! checks), and drop everything else. Alternatives were weighed and
//! refused: routes inside the task's namespace (`prohibit` routes to the
//! node's addresses) cannot tell port 53 from the gRPC ports and miss
//! addresses added later; policy routing cannot match ports at all; binding
//! every node service to loopback only is not in the agent's hands (a
//! scheduler or any host daemon on `0.0.0.0` would stay reachable).
//!
//! Tasks on other nodes reach this node routed over its host interface, not
//! from the bridge; its bridge address lies inside the cluster CIDR, so
//! without more they could open connections to the agent or scheduler
//! here. The input chain therefore also drops new connections whose
//! source is in the cluster CIDR (this node's subnet until the CIDR is
//! known), except those that come in on `lo`: the node itself talking to
//! its own bridge address (`dig @<bridge address>` on the host) has that
//! address as its source, and only the node's own processes can send on
//! `lo`, never a task.
//!
//! Traffic a task sends through the node to somewhere else (forwarded) is
//! limited too, once the cluster CIDR is known: only to the cluster's task
//! subnets (other nodes' tasks, host-gw), and replies to connections made
//! to the task. Otherwise a task could reach a scheduler or agent on
//! another machine, or any service the node itself can reach.
//!
//! The table (`inet`, so IPv6 link-local access to the node is closed as
//! well) is named per agent, [`table_name`], and replaced as a whole in one
//! netlink batch, which the kernel applies atomically: a restarted agent
//! never leaves a window without the rules, and never doubles them.
//! `drover agent --cleanup` deletes it ([`remove`]).
//!
//! The ruleset, as `nft list table inet drover-<node>` shows it:
//!
//! ```text
//! chain input {
//!     type filter hook input priority filter; policy accept;
//!     iifname "drover0" ct state established,related accept
//!     iifname "drover0" meta nfproto ipv4 ip daddr 10.89.0.1 meta l4proto udp th dport 53 accept
//!     iifname "drover0" meta nfproto ipv4 ip daddr 10.89.0.1 meta l4proto tcp th dport 53 accept
//!     iifname "drover0" drop
//!     # the node's own processes, to its own addresses
//!     iifname "lo" accept
//!     # tasks of other nodes, routed here: no new connection to the node
//!     meta nfproto ipv4 ip saddr 10.89.0.0/16 ct state established,related accept
//!     meta nfproto ipv4 ip saddr 10.89.0.0/16 drop
//! }
//! chain forward {   # with the cluster CIDR, e.g. 10.89.0.0/16
//!     type filter hook forward priority filter; policy accept;
//!     iifname "drover0" ct state established,related accept
//!     iifname "drover0" meta nfproto ipv4 ip daddr 10.89.3.0/24 accept
//!     iifname "drover0" meta nfproto ipv4 ip daddr 10.89.0.0/16 accept
//!     iifname "drover0" drop
//! }
//! ```

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{Ipv4Net, NetError};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;

// Attribute numbers from linux/netfilter/nf_tables.h.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
/// `ct state established,related`: conntrack state bits, host order.
const CT_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
const IFNAMSIZ: usize = 16;
/// `lo`, as the kernel compares interface names: padded to IFNAMSIZ.
const LOOPBACK_IFNAME: [u8; IFNAMSIZ] = *b"lo\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// The chain holding the rules for traffic to the node itself.
pub const CHAIN: &str = "input";
/// The chain holding the rules for traffic through the node.
pub const FORWARD_CHAIN: &str = "forward";
/// The port of the node's DNS, the one node port tasks may reach.
pub const DNS_PORT: u16 = 53;

/// The agent's table name for the node `node_id`: `drover-<node_id>`.
pub fn table_name(node_id: &str) -> String {
    format!("drover-{node_id}")
}

/// Replaces the table `table` with the isolation rules for tasks behind
/// `bridge`, whose address (the node's DNS) is `bridge_ip`, and, given the
/// cluster CIDR `cluster`, the forwarding limits (to the cluster and to the
/// node's own `subnet`, which bridged traffic may meet in the forward hook
/// where `br_netfilter` is loaded); see the module docs. Atomic: one batch.
pub fn apply(
    table: &str,
    bridge: &str,
    bridge_ip: Ipv4Addr,
    subnet: Ipv4Net,
    cluster: Option<Ipv4Net>,
) -> Result<(), NetError> {
    check(table, bridge)?;
    let mut batch = Batch::new();
    // Create-then-delete-then-create: replaces whatever is there in one
    // transaction, whether the table existed or not.
    for kind in [NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE] {
        let mut m = batch.msg(kind, NLM_F_CREATE, NFPROTO_INET);
        m.str(NFTA_TABLE_NAME, table);
        batch.push(m);
    }
    let mut chains = vec![(CHAIN, NF_INET_LOCAL_IN)];
    if cluster.is_some() {
        chains.push((FORWARD_CHAIN, NF_INET_FORWARD));
    }
    for (name, hook) in &chains {
        let mut chain = batch.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE, NFPROTO_INET);
        chain.str(NFTA_CHAIN_TABLE, table);
        chain.str(NFTA_CHAIN_NAME, name);
        chain.nest(NFTA_CHAIN_HOOK, |m| {
            m.u32be(NFTA_HOOK_HOOKNUM, *hook);
            m.u32be(NFTA_HOOK_PRIORITY, 0);
        });
        chain.u32be(NFTA_CHAIN_POLICY, NF_ACCEPT);
        chain.str(NFTA_CHAIN_TYPE, "filter");
        batch.push(chain);
    }

    let mut ifname = [0u8; IFNAMSIZ];
    ifname[..bridge.len()].copy_from_slice(bridge.as_bytes());
    let rules = Rules {
        ifname,
        bridge_ip,
        // Tasks of other nodes arrive routed (host-gw), not from the
        // bridge: the node's own addresses (its bridge IP is inside the
        // cluster CIDR) must not take new connections from them either.
        // Without a cluster CIDR yet, at least this node's subnet is kept
        // out.
        tasks: cluster.unwrap_or(subnet),
    };
    let mut list = vec![
        (CHAIN, RuleKind::Replies),
        (CHAIN, RuleKind::Dns(libc::IPPROTO_UDP as u8)),
        (CHAIN, RuleKind::Dns(libc::IPPROTO_TCP as u8)),
        (CHAIN, RuleKind::DropRest),
        (CHAIN, RuleKind::FromNode),
        (CHAIN, RuleKind::TaskReplies),
        (CHAIN, RuleKind::DropTasks),
    ];
    if let Some(net) = cluster {
        list.extend([
            (FORWARD_CHAIN, RuleKind::Replies),
            (FORWARD_CHAIN, RuleKind::ToNet(subnet)),
            (FORWARD_CHAIN, RuleKind::ToNet(net)),
            (FORWARD_CHAIN, RuleKind::DropRest),
        ]);
    }
    for (chain, kind) in list {
        let mut m = batch.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, NFPROTO_INET);
        m.str(NFTA_RULE_TABLE, table);
        m.str(NFTA_RULE_CHAIN, chain);
        m.nest(NFTA_RULE_EXPRESSIONS, |e| rules.write(kind, e));
        batch.push(m);
    }
    batch
        .send()
        .map_err(|e| NetError::sys("nftables: replace table", format!("inet {table}"), e))
}

/// The isolation rules of [`apply`], by kind.
#[derive(Debug, Clone, Copy)]
enum RuleKind {
    /// Replies to connections tasks made, from the bridge: accepted.
    Replies,
    /// DNS to the bridge address over this L4 protocol: accepted.
    Dns(u8),
    /// Anything else from the bridge: dropped.
    DropRest,
    /// From the bridge to this network: accepted (forward chain).
    ToNet(Ipv4Net),
    /// From the node itself (on `lo`): accepted.
    FromNode,
    /// Replies to connections tasks (of any node) made: accepted.
    TaskReplies,
    /// Anything else from tasks of any node: dropped.
    DropTasks,
}

/// What the rules match on.
struct Rules {
    ifname: [u8; IFNAMSIZ],
    bridge_ip: Ipv4Addr,
    tasks: Ipv4Net,
}

impl Rules {
    /// Writes the expressions of rule `kind`.
    fn write(&self, kind: RuleKind, e: &mut Msg) {
        match kind {
            RuleKind::Replies => {
                self.match_bridge(e);
                established(e);
            }
            RuleKind::Dns(l4) => {
                self.match_bridge(e);
                ipv4_field(e, 16, &self.bridge_ip.octets(), None);
                meta(e, NFT_META_L4PROTO);
                cmp(e, NFT_CMP_EQ, &[l4]);
                payload(e, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                cmp(e, NFT_CMP_EQ, &DNS_PORT.to_be_bytes());
                verdict(e, NF_ACCEPT);
            }
            RuleKind::DropRest => {
                self.match_bridge(e);
                verdict(e, NF_DROP);
            }
            RuleKind::ToNet(net) => {
                self.match_bridge(e);
                in_net(e, 16, net);
                verdict(e, NF_ACCEPT);
            }
            RuleKind::FromNode => {
                meta(e, NFT_META_IIFNAME);
                cmp(e, NFT_CMP_EQ, &LOOPBACK_IFNAME);
                verdict(e, NF_ACCEPT);
            }
            RuleKind::TaskReplies => {
                in_net(e, 12, self.tasks);
                established(e);
            }
            RuleKind::DropTasks => {
                in_net(e, 12, self.tasks);
                verdict(e, NF_DROP);
            }
        }
    }

    fn match_bridge(&self, e: &mut Msg) {
        meta(e, NFT_META_IIFNAME);
        cmp(e, NFT_CMP_EQ, &self.ifname);
    }
}

/// Matches connection tracking state established or related, and accepts.
fn established(e: &mut Msg) {
    ct_state(e);
    bitwise_and(e, &CT_ESTABLISHED_RELATED.to_ne_bytes());
    cmp(e, NFT_CMP_NEQ, &[0; 4]);
    verdict(e, NF_ACCEPT);
}

/// Matches an IPv4 packet whose address at `offset` in the network header
/// (12: source, 16: destination), masked by `mask`, is `value`.
fn ipv4_field(e: &mut Msg, offset: u32, value: &[u8; 4], mask: Option<[u8; 4]>) {
    meta(e, NFT_META_NFPROTO);
    cmp(e, NFT_CMP_EQ, &[NFPROTO_IPV4]);
    payload(e, NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
    if let Some(mask) = mask {
        bitwise_and(e, &mask);
    }
    cmp(e, NFT_CMP_EQ, value);
}

/// Matches an IPv4 packet whose address at `offset` lies in `net`.
fn in_net(e: &mut Msg, offset: u32, net: Ipv4Net) {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.prefix()))
        .unwrap_or(0);
    ipv4_field(e, offset, &net.network().octets(), Some(mask.to_be_bytes()));
}

/// Deletes the table `table` with its rules. Returns false when there was
/// none.
pub fn remove(table: &str) -> Result<bool, NetError> {
    check(table, "lo")?;
    let mut batch = Batch::new();
    let mut m = batch.msg(NFT_MSG_DELTABLE, 0, NFPROTO_INET);
    m.str(NFTA_TABLE_NAME, table);
    batch.push(m);
    match batch.send() {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(NetError::sys(
            "nftables: delete table",
            format!("inet {table}"),
            e,
        )),
    }
}

/// Whether the table `table` exists (for checks and tests).
pub fn exists(table: &str) -> Result<bool, NetError> {
    check(table, "lo")?;
    let mut m = Msg::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        NFPROTO_INET,
        0,
    );
    m.str(NFTA_TABLE_NAME, table);
    let io = |e| NetError::sys("nftables: get table", format!("inet {table}"), e);
    let sock = NetlinkSocket::open().map_err(io)?;
    sock.send(&m.finish()).map_err(io)?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = sock.recv(&mut buf).map_err(io)?;
    if n < 16 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "short netlink reply",
        )));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == NLMSG_ERROR && n >= 20 {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return match -code {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            e => Err(io(std::io::Error::from_raw_os_error(e))),
        };
    }
    Ok(true)
}

fn check(table: &str, bridge: &str) -> Result<(), NetError> {
    if table.is_empty() || table.len() > 200 || table.contains('\0') {
        return Err(NetError::invalid(
            "nftables table name",
            table,
            "must be 1 to 200 bytes without NUL",
        ));
    }
    if bridge.is_empty() || bridge.len() >= IFNAMSIZ {
        return Err(NetError::invalid(
            "interface name",
            bridge,
            "must be 1 to 15 bytes",
        ));
    }
    Ok(())
}

fn expr(e: &mut Msg, name: &str, data: impl FnOnce(&mut Msg)) {
    e.nest(NFTA_LIST_ELEM, |e| {
        e.str(NFTA_EXPR_NAME, name);
        e.nest(NFTA_EXPR_DATA, data);
    });
}

/// `meta load <key> => reg 1`
fn meta(e: &mut Msg, key: u32) {
    expr(e, "meta", |d| {
        d.u32be(1, NFT_REG_1); // NFTA_META_DREG
        d.u32be(2, key); // NFTA_META_KEY
    });
}

/// `cmp <op> reg 1 <data>`
fn cmp(e: &mut Msg, op: u32, data: &[u8]) {
    expr(e, "cmp", |d| {
        d.u32be(1, NFT_REG_1); // NFTA_CMP_SREG
        d.u32be(2, op); // NFTA_CMP_OP
        d.nest(3, |v| v.attr(NFTA_DATA_VALUE, data)); // NFTA_CMP_DATA
    });
}

/// `payload load <len>b @ <base> + <offset> => reg 1`
fn payload(e: &mut Msg, base: u32, offset: u32, len: u32) {
    expr(e, "payload", |d| {
        d.u32be(1, NFT_REG_1); // NFTA_PAYLOAD_DREG
        d.u32be(2, base); // NFTA_PAYLOAD_BASE
        d.u32be(3, offset); // NFTA_PAYLOAD_OFFSET
        d.u32be(4, len); // NFTA_PAYLOAD_LEN
    });
}

/// `ct load state => reg 1`
fn ct_state(e: &mut Msg) {
    expr(e, "ct", |d| {
        d.u32be(1, NFT_REG_1); // NFTA_CT_DREG
        d.u32be(2, NFT_CT_STATE); // NFTA_CT_KEY
    });
}

/// `bitwise reg 1 = (reg 1 & mask) ^ 0`
fn bitwise_and(e: &mut Msg, mask: &[u8]) {
    let len = u32::try_from(mask.len()).unwrap_or(0);
    let zeros = vec![0u8; mask.len()];
    expr(e, "bitwise", |d| {
        d.u32be(1, NFT_REG_1); // NFTA_BITWISE_SREG
        d.u32be(2, NFT_REG_1); // NFTA_BITWISE_DREG
        d.u32be(3, len); // NFTA_BITWISE_LEN
        d.nest(4, |v| v.attr(NFTA_DATA_VALUE, mask)); // NFTA_BITWISE_MASK
        d.nest(5, |v| v.attr(NFTA_DATA_VALUE, &zeros)); // NFTA_BITWISE_XOR
    });
}

/// `immediate reg 0 <accept|drop>`
fn verdict(e: &mut Msg, code: u32) {
    expr(e, "immediate", |d| {
        d.u32be(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
        d.nest(2, |v| {
            // NFTA_IMMEDIATE_DATA
            v.nest(NFTA_DATA_VERDICT, |c| c.u32be(NFTA_VERDICT_CODE, code));
        });
    });
}

/// One netlink message under construction: `nlmsghdr`, `nfgenmsg`, then
/// attributes, each padded to 4 bytes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
        buf.push(family); // nfgen_family
        buf.push(0); // version: NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self { buf }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn u32be(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        inner(self);
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// An nftables transaction: messages between a batch begin and end, each
/// asking for an acknowledgement.
struct Batch {
    seq: u32,
    body: Vec<u8>,
    acks: Vec<u32>,
}

impl Batch {
    fn new() -> Self {
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        let mut b = Self {
            seq,
            body: Vec::new(),
            acks: Vec::new(),
        };
        let begin = b.raw(NFNL_MSG_BATCH_BEGIN, 0);
        b.body.extend(begin.finish());
        b
    }

    fn raw(&mut self, kind: u16, flags: u16) -> Msg {
        self.seq = self.seq.wrapping_add(1);
        Msg::new(
            kind,
            NLM_F_REQUEST | flags,
            self.seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
    }

    fn msg(&mut self, op: u16, flags: u16, family: u8) -> Msg {
        self.seq = self.seq.wrapping_add(1);
        self.acks.push(self.seq);
        Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | op,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
            family,
            0,
        )
    }

    fn push(&mut self, m: Msg) {
        self.body.extend(m.finish());
    }

    /// Sends the batch and waits for every acknowledgement; the first
    /// error the kernel reports is returned.
    fn send(mut self) -> io::Result<()> {
        let end = self.raw(NFNL_MSG_BATCH_END, 0);
        self.body.extend(end.finish());
        let sock = NetlinkSocket::open()?;
        sock.send(&self.body)?;
        let mut pending = self.acks.len();
        let mut buf = vec![0u8; 64 * 1024];
        while pending > 0 {
            let n = sock.recv(&mut buf)?;
            let mut off = 0;
            while off + 16 <= n {
                let word = |at: usize| {
                    let mut w = [0u8; 4];
                    w.copy_from_slice(&buf[at..at + 4]);
                    w
                };
                let len = u32::from_ne_bytes(word(off)) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                if len < 16 || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink reply",
                    ));
                }
                if kind == NLMSG_ERROR && len >= 20 {
                    let code = i32::from_ne_bytes(word(off + 16));
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    pending = pending.saturating_sub(1);
                }
                off += (len + 3) & !3;
            }
        }
        Ok(())
    }
}

/// A `NETLINK_NETFILTER` socket with a receive timeout, so a missing
/// acknowledgement fails instead of hanging the agent.
struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socket(2) just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl whose size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid timeval whose size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    fn send(&self, data: &[u8]) -> io::Result<()> {
        // SAFETY: `data` is valid for its length for the duration of the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if usize::try_from(n).ok() != Some(data.len()) {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            ));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid and writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return usize::try_from(n).map_err(|_| io::Error::other("negative length"));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_set() {
        let mut m = Msg::new(1, 0, 7, NFPROTO_INET, 0);
        m.str(NFTA_TABLE_NAME, "ab");
        m.nest(NFTA_CHAIN_HOOK, |n| n.u32be(NFTA_HOOK_HOOKNUM, 1));
        let buf = m.finish();
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            buf.len()
        );
        // header 16 + nfgenmsg 4, then "ab\0" (len 7, padded to 8).
        assert_eq!(u16::from_ne_bytes([buf[20], buf[21]]), 7);
        assert_eq!(&buf[24..27], b"ab\0");
        // The nest: 4 bytes of its own + one u32 attribute of 8.
        assert_eq!(u16::from_ne_bytes([buf[28], buf[29]]), 12);
        assert_eq!(
            u16::from_ne_bytes([buf[30], buf[31]]),
            NFTA_CHAIN_HOOK | NLA_F_NESTED
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check("", "drover0").is_err());
        assert!(check("t", "a-very-long-ifname").is_err());
        assert!(check("drover-node-1", "drover0").is_ok());
        assert_eq!(table_name("n1"), "drover-n1");
    }
}
