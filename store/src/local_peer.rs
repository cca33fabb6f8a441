//! Which local user is calling over loopback.
//!
//! Without mutual TLS, Drover's gRPC servers (the scheduler of `drover
//! dev`, the embedded store) listen on loopback only. Loopback is not a
//! boundary between the users of one machine, though: any of them could
//! connect and submit a job (root on every node) or read every job's
//! environment from the store. So a loopback call is admitted only from
//! root, the user the server runs as and the one who started it with
//! `sudo` ([`admitted_uids`]), as Docker's socket admits only root and its
//! group.
//!
//! TCP carries no credentials; the kernel knows who owns the client's end
//! of a loopback connection, though. [`peer_uid`] asks it through
//! `sock_diag` (one netlink request naming the exact connection, as `ss`
//! does), and falls back to reading `/proc/net/tcp` where `sock_diag` is
//! missing. Both see the server's own network namespace, which is where a
//! loopback client is.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR` (linux/netlink.h).
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `struct nlmsghdr`'s size.
const HEADER: usize = 16;
/// Where `idiag_uid` sits in `struct inet_diag_msg`: family, state, timer,
/// retrans (4 bytes), the 48-byte socket id, expires, rqueue, wqueue.
const UID_OFFSET: usize = 4 + 48 + 12;

/// The uid owning the client end of the loopback TCP connection from
/// `client` to `server`; `None` when no such connection exists (it was
/// closed meanwhile).
///
/// # Errors
///
/// When neither `sock_diag` nor `/proc/net/tcp` can be read.
pub fn peer_uid(server: SocketAddr, client: SocketAddr) -> io::Result<Option<u32>> {
    let (server, client) = (unmapped(server), unmapped(client));
    match diag_uid(server, client) {
        Ok(uid) => Ok(uid),
        Err(error) => {
            tracing::debug!(%error, "sock_diag unavailable; reading /proc/net/tcp");
            proc_uid(server, client)
        }
    }
}

/// Asks about connections in one network namespace: the one a listening
/// socket was made in, which need not be the namespace of the threads
/// serving it (a listener made in a namespace and served from outside it,
/// as test harnesses do). `sock_diag` answers only about sockets of the
/// namespace its own socket was made in.
#[derive(Debug)]
pub struct PeerLookup {
    /// A `sock_diag` socket of the listener's namespace; `None`: make one
    /// per query in the calling thread's namespace.
    diag: Option<std::sync::Mutex<Socket>>,
}

impl PeerLookup {
    /// Lookups in the calling thread's namespace.
    pub fn current() -> PeerLookup {
        PeerLookup { diag: None }
    }

    /// Lookups in the namespace `listener` was made in (through
    /// `SIOCGSKNS`); in the calling thread's when that cannot be had.
    pub fn for_socket(listener: std::os::fd::BorrowedFd<'_>) -> PeerLookup {
        match diag_socket_in_namespace_of(listener) {
            Ok(socket) => PeerLookup {
                diag: Some(std::sync::Mutex::new(socket)),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot open sock_diag in the listener's network namespace; asking in this thread's");
                PeerLookup::current()
            }
        }
    }

    /// [`check`], in this lookup's namespace.
    ///
    /// # Errors
    ///
    /// The refusal, for a permission-denied status.
    pub fn check(
        &self,
        server: Option<SocketAddr>,
        client: Option<SocketAddr>,
        what: &str,
    ) -> Result<(), String> {
        check_with(server, client, what, |s, c| self.peer_uid(s, c))
    }

    /// [`peer_uid`], in this lookup's namespace.
    ///
    /// # Errors
    ///
    /// When `sock_diag` cannot be asked.
    pub fn peer_uid(&self, server: SocketAddr, client: SocketAddr) -> io::Result<Option<u32>> {
        let Some(diag) = &self.diag else {
            return peer_uid(server, client);
        };
        let (server, client) = (unmapped(server), unmapped(client));
        // One request, one reply: the lock keeps them paired.
        let socket = diag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        socket.send(&diag_request(server, client), 0)?;
        let (reply, _) = socket.recv_from_full()?;
        parse_reply(&reply)
    }
}

/// A `sock_diag` socket made in the network namespace of `socket`.
fn diag_socket_in_namespace_of(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<Socket> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// `SIOCGSKNS` (linux/sockios.h): a socket's network namespace.
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and only reads the socket; on
    // success it returns a new file descriptor we own.
    let ns = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ns` was just returned to us by the kernel and nothing else
    // owns it.
    let ns = unsafe { OwnedFd::from_raw_fd(ns) };
    // A thread of its own enters the namespace, so no other work of this
    // process ever runs there; the socket keeps the namespace it was made in.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
                socket.bind_auto()?;
                socket.connect(&NetlinkAddr::new(0, 0))?;
                Ok(socket)
            })
            .join()
            .map_err(|_| io::Error::other("the sock_diag thread panicked"))?
    })
}

/// The users a loopback call is admitted from: root, the user this
/// process runs as, and the one who started it with `sudo` (`SUDO_UID`:
/// who could run anything as root anyway, e.g. the person at the laptop
/// who ran `sudo drover dev` and opens the status page in a browser).
pub fn admitted_uids() -> Vec<u32> {
    let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
    if let Some(sudo) = std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()) {
        uids.push(sudo);
    }
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Whether a call from `client` to `server` (the addresses of its
/// connection, when it came over TCP) may go on: any call that did not
/// come over loopback (those are for mutual TLS to judge), and loopback
/// calls of [`admitted_uids`]. The refusal says who called and what to do.
///
/// # Errors
///
/// The refusal, for a permission-denied status.
pub fn check(
    server: Option<SocketAddr>,
    client: Option<SocketAddr>,
    what: &str,
) -> Result<(), String> {
    check_with(server, client, what, peer_uid)
}

fn check_with(
    server: Option<SocketAddr>,
    client: Option<SocketAddr>,
    what: &str,
    peer_uid: impl FnOnce(SocketAddr, SocketAddr) -> io::Result<Option<u32>>,
) -> Result<(), String> {
    let (Some(server), Some(client)) = (server, client) else {
        return Ok(());
    };
    if !unmapped(client).ip().is_loopback() {
        return Ok(());
    }
    let admitted = admitted_uids();
    match peer_uid(server, client) {
        Ok(Some(uid)) if admitted.contains(&uid) => Ok(()),
        Ok(Some(uid)) => Err(format!(
            "{what} on loopback without TLS admits only root, its own user and the one \
             who started it with sudo (uids {}); the caller is uid {uid}: run the command \
             as root (sudo), or set up mutual TLS (drover tls init) and give each person \
             a certificate",
            admitted
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(None) => Err(format!(
            "{what} cannot tell which local user opened connection {client}; refused"
        )),
        Err(error) => Err(format!(
            "{what} cannot tell which local user is calling ({error}); refused"
        )),
    }
}

/// An IPv4 address that arrived as IPv4-mapped IPv6, as IPv4.
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// The 16 address bytes of `ip` as `inet_diag_sockid` holds them (network
/// order, IPv4 in the first four).
fn id_bytes(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The `SOCK_DIAG_BY_FAMILY` request for the socket bound to `client` and
/// connected to `server`.
fn diag_request(server: SocketAddr, client: SocketAddr) -> Vec<u8> {
    let family: u8 = if client.is_ipv4() { 2 } else { 10 }; // AF_INET, AF_INET6
    let mut req = Vec::with_capacity(HEADER + 56);
    req.extend_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(&[family, 6, 0, 0]); // IPPROTO_TCP, no extensions
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&client.port().to_be_bytes());
    req.extend_from_slice(&server.port().to_be_bytes());
    req.extend_from_slice(&id_bytes(client.ip()));
    req.extend_from_slice(&id_bytes(server.ip()));
    req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    req
}

fn diag_uid(server: SocketAddr, client: SocketAddr) -> io::Result<Option<u32>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    socket.send(&diag_request(server, client), 0)?;
    let (reply, _) = socket.recv_from_full()?;
    parse_reply(&reply)
}

/// The uid in a `sock_diag` reply; `None` for "no such socket".
fn parse_reply(reply: &[u8]) -> io::Result<Option<u32>> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag reply");
    let kind = reply
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(short)?;
    if kind == NLMSG_ERROR {
        let code = reply
            .get(HEADER..HEADER + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .ok_or_else(short)?;
        if -code == nix::errno::Errno::ENOENT as i32 {
            return Ok(None);
        }
        return Err(io::Error::from_raw_os_error(-code));
    }
    reply
        .get(HEADER + UID_OFFSET..HEADER + UID_OFFSET + 4)
        .and_then(|b| b.try_into().ok())
        .map(|b| Some(u32::from_ne_bytes(b)))
        .ok_or_else(short)
}

/// An address as `/proc/net/tcp{,6}` prints it: each 32-bit word of the
/// network-order address as a native-order hex number, then the port.
fn proc_form(a: SocketAddr) -> String {
    let bytes = id_bytes(a.ip());
    let words = if a.is_ipv4() { 1 } else { 4 };
    let mut out = String::new();
    for w in bytes.chunks_exact(4).take(words) {
        let word = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        out.push_str(&format!("{word:08X}"));
    }
    out.push_str(&format!(":{:04X}", a.port()));
    out
}

fn proc_uid(server: SocketAddr, client: SocketAddr) -> io::Result<Option<u32>> {
    let file = if client.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let table = std::fs::read_to_string(file)?;
    Ok(uid_in_table(&table, server, client))
}

/// The uid column of the line whose local end is `client` and remote end
/// `server`.
fn uid_in_table(table: &str, server: SocketAddr, client: SocketAddr) -> Option<u32> {
    let (local, remote) = (proc_form(client), proc_form(server));
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (l, r, uid) = (cols.get(1)?, cols.get(2)?, cols.get(7)?);
        (l.eq_ignore_ascii_case(&local) && r.eq_ignore_ascii_case(&remote))
            .then(|| uid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A connection this process made: its owner is this process's user,
    /// by both ways of asking.
    #[test]
    fn the_owner_of_a_loopback_connection_is_found_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let stream = TcpStream::connect(server).unwrap();
        let client = stream.local_addr().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(diag_uid(server, client).unwrap(), Some(me));
        assert_eq!(proc_uid(server, client).unwrap(), Some(me));
        assert_eq!(peer_uid(server, client).unwrap(), Some(me));
        // The server's own end is not the client's.
        let (_accepted, seen) = listener.accept().unwrap();
        assert_eq!(seen, client);
        drop(stream);
        let gone = SocketAddr::new(client.ip(), client.port().wrapping_add(1).max(1));
        assert_eq!(diag_uid(server, gone).unwrap(), None);
        assert_eq!(proc_uid(server, gone).unwrap(), None);
    }

    #[test]
    fn proc_lines_are_matched_by_both_ends() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1 1\n\
            1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(uid_in_table(table, server, client), Some(1000));
            assert_eq!(uid_in_table(table, client, server), Some(0));
        }
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(uid_in_table(table, server, other), None);
    }

    #[test]
    fn calls_not_over_loopback_are_left_to_tls() {
        let server: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let client: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        assert!(check(Some(server), Some(client), "x").is_ok());
        assert!(check(None, None, "x").is_ok());
        // A loopback connection that does not exist cannot be vouched for.
        let server: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let refused = check(Some(server), Some(client), "the scheduler").unwrap_err();
        assert!(
            refused.contains("cannot tell which local user"),
            "{refused}"
        );
    }
}
