//! The node's address book: which allocation holds which address of the
//! node subnet, kept in one JSON file: a snapshot of the book, followed by
//! the changes made since, one per line, each appended with a single
//! `write` before the change is acted on. After an agent start, and once
//! enough changes have piled up, the file is rewritten as a snapshot alone,
//! atomically (temporary file, rename over the old one). An agent that
//! dies at any point (panic, `kill -9`, OOM) thus leaves the book as it was
//! before or after the change in progress, and the next agent reads it
//! back. A last line cut short is ignored, which is safe both ways: an
//! address not yet returned by [`Ipam::allocate`] was never configured,
//! and a release cut short leaves the address held, to be released again.
//!
//! Appending rather than replacing the file on every change matters: ext4
//! starts writing back a file renamed over another (`auto_da_alloc`),
//! which cost 0.3-2 ms per allocation on a loaded node.
//!
//! The file is deliberately **not** fsync'd. What it must guarantee is that
//! an address is never handed out while it is live, i.e. configured on the
//! `eth0` of an allocation's network namespace. Network namespaces and
//! veths live in the kernel and do not survive a reboot, so after a power
//! loss or a crash of the machine no address is live, whatever the file
//! says: durability against power loss would buy nothing (and cost 1-10 ms
//! per allocation in `fsync`s). Against what can happen while the kernel
//! stays up (the agent dying), the page cache already holds every completed
//! `write` and `rename`.
//!
//! Without the fsyncs, after a power loss the file may hold an older state,
//! or be missing, empty or garbled (depending on the filesystem). Any
//! consistent state is harmless since nothing is live. [`Ipam::open`]
//! refuses an unreadable file with [`IpamError::Corrupt`]; the agent then
//! moves it aside and rebuilds the book from the namespaces that really
//! exist ([`Ipam::rebuild`], see `wiring`), so it neither refuses to start
//! nor forgets an address that is live.
//!
//! Reserved and never handed out: the network address, the broadcast
//! address and the first host address (the bridge's, see
//! [`Ipv4Net::first_host`]). A released address is handed out again only
//! after the rest of the subnet has been, so a late packet for a dead
//! allocation is unlikely to reach a new one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Ipv4Net;

/// What went wrong in the address book.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Reading or writing the state file failed.
    #[error("IPAM: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but does not make sense.
    #[error("IPAM state {}: {reason}", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state file belongs to another subnet.
    #[error("IPAM state {} is for subnet {found}, not {wanted}; stop this node's allocations and remove the file to change subnets", path.display())]
    SubnetMismatch {
        /// The state file.
        path: PathBuf,
        /// Subnet recorded in it.
        found: Ipv4Net,
        /// Subnet asked for.
        wanted: Ipv4Net,
    },
    /// The subnet has no room for allocations.
    #[error("IPAM: subnet {0} is too small (needs a prefix of /30 or shorter)")]
    SubnetTooSmall(Ipv4Net),
    /// Every address is taken.
    #[error("IPAM: no free address left in {subnet} for allocation {alloc_id}")]
    Exhausted {
        /// The node subnet.
        subnet: Ipv4Net,
        /// The allocation that asked.
        alloc_id: String,
    },
    /// The allocation id is unusable.
    #[error("IPAM: allocation id must not be empty")]
    EmptyId,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    version: u32,
    subnet: Ipv4Net,
    /// Offset of the address handed out last; the search for a free one
    /// starts after it.
    cursor: u64,
    allocs: BTreeMap<String, Ipv4Addr>,
}

const VERSION: u32 = 1;

/// One change, as appended to the file after the snapshot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Change {
    /// `id` got `ip`; the search for a free address goes on after it.
    Alloc { id: String, ip: Ipv4Addr },
    /// `id` gave its address back.
    Release { id: String },
}

/// A live address [`Ipam::rebuild`] could not put into the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotKept {
    /// The allocation that holds it.
    pub alloc_id: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Why it is left out.
    pub reason: String,
}

/// Changes appended before the file is rewritten as a snapshot: at least
/// this many, and at least twice the number of allocations.
const MIN_CHANGES_BEFORE_REWRITE: usize = 64;

/// The node's address book; see the module docs. Not shared between
/// processes; within one, wrap it in a mutex.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    state: State,
    used: BTreeSet<u64>,
    /// The file as last rewritten, open for appending changes; `None`
    /// before the first change and after a failed append (which may have
    /// left part of a line): the next change rewrites the file.
    file: Option<fs::File>,
    /// How many changes follow the snapshot in the file.
    changes: usize,
}

impl Ipam {
    /// Opens the address book at `path` for `subnet`, creating it empty if
    /// it does not exist (the file is first written on the first change).
    /// Opening only reads the file, so a book in use may be inspected.
    pub fn open(path: impl Into<PathBuf>, subnet: Ipv4Net) -> Result<Self, IpamError> {
        let path = path.into();
        if subnet.first_host().is_none() {
            return Err(IpamError::SubnetTooSmall(subnet));
        }
        let ipam = match Self::load(&path)? {
            Some(ipam) => ipam,
            None => Self::empty(path, subnet),
        };
        if ipam.state.subnet != subnet {
            return Err(IpamError::SubnetMismatch {
                path: ipam.path,
                found: ipam.state.subnet,
                wanted: subnet,
            });
        }
        Ok(ipam)
    }

    /// Reads the address book at `path`, whatever its subnet; `None` when
    /// there is no file.
    pub fn load(path: impl Into<PathBuf>) -> Result<Option<Self>, IpamError> {
        let path = path.into();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IpamError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let corrupt = |reason: String| IpamError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let snapshot = State::deserialize(&mut de).map_err(|e| corrupt(e.to_string()))?;
        if snapshot.version != VERSION {
            return Err(corrupt(format!("unknown version {}", snapshot.version)));
        }
        if snapshot.subnet.first_host().is_none() {
            return Err(corrupt(format!("subnet {} is too small", snapshot.subnet)));
        }
        let mut ipam = Self::empty(path.clone(), snapshot.subnet);
        for (id, ip) in snapshot.allocs {
            ipam.apply(&Change::Alloc { id, ip }).map_err(corrupt)?;
        }
        ipam.state.cursor = snapshot.cursor;
        for change in de.into_iter::<Change>() {
            match change {
                Ok(change) => ipam.apply(&change).map_err(corrupt)?,
                // The last line, cut short by a dying agent: that change
                // never took effect (see the module docs).
                Err(e) if e.is_eof() => break,
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
        Ok(Some(ipam))
    }

    /// Starts the address book at `path` over, for `subnet`, from `live`:
    /// the allocations whose address is known to be in use (read from the
    /// namespaces that exist), and writes it out. For a book that is
    /// missing or unreadable ([`IpamError::Corrupt`]); whatever file is at
    /// `path` is replaced. An entry that cannot be kept (address not
    /// assignable in `subnet`, or already taken) is left out and returned
    /// with the reason, for the caller to report.
    pub fn rebuild(
        path: impl Into<PathBuf>,
        subnet: Ipv4Net,
        live: impl IntoIterator<Item = (String, Ipv4Addr)>,
    ) -> Result<(Self, Vec<NotKept>), IpamError> {
        if subnet.first_host().is_none() {
            return Err(IpamError::SubnetTooSmall(subnet));
        }
        let mut ipam = Self::empty(path.into(), subnet);
        let mut skipped = Vec::new();
        let mut highest = 1;
        for (id, ip) in live {
            match ipam.apply(&Change::Alloc { id: id.clone(), ip }) {
                // New addresses are searched for after the highest one in
                // use, as if they had been handed out in order.
                Ok(()) => highest = highest.max(ipam.state.cursor),
                Err(reason) => skipped.push(NotKept {
                    alloc_id: id,
                    ip,
                    reason,
                }),
            }
        }
        ipam.state.cursor = highest;
        ipam.rewrite()?;
        Ok((ipam, skipped))
    }

    fn empty(path: PathBuf, subnet: Ipv4Net) -> Self {
        Self {
            path,
            state: State {
                version: VERSION,
                subnet,
                cursor: 1,
                allocs: BTreeMap::new(),
            },
            used: BTreeSet::new(),
            file: None,
            changes: 0,
        }
    }

    /// Applies `change` to the book in memory if it is consistent with it;
    /// otherwise says why not.
    fn apply(&mut self, change: &Change) -> Result<(), String> {
        let subnet = self.state.subnet;
        match change {
            Change::Alloc { id, ip } => {
                let offset = subnet
                    .offset_of(*ip)
                    .filter(|o| !is_reserved(subnet, *o))
                    .ok_or_else(|| {
                        format!("allocation {id} holds {ip}, which is not assignable in {subnet}")
                    })?;
                if id.is_empty() {
                    return Err(format!("{ip} is held by an empty allocation id"));
                }
                if self.state.allocs.contains_key(id) {
                    return Err(format!("allocation {id} holds more than one address"));
                }
                if !self.used.insert(offset) {
                    return Err(format!("{ip} is held by more than one allocation"));
                }
                self.state.allocs.insert(id.clone(), *ip);
                self.state.cursor = offset;
            }
            Change::Release { id } => {
                let ip = self
                    .state
                    .allocs
                    .remove(id)
                    .ok_or_else(|| format!("release of {id}, which holds no address"))?;
                if let Some(o) = subnet.offset_of(ip) {
                    self.used.remove(&o);
                }
            }
        }
        Ok(())
    }

    /// The node subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.state.subnet
    }

    /// The bridge's (gateway's) address, reserved.
    pub fn gateway(&self) -> Ipv4Addr {
        // `open` refused subnets without a first host.
        self.state
            .subnet
            .first_host()
            .unwrap_or(self.state.subnet.network())
    }

    /// The address of `alloc_id`: the one it already holds, or a free one,
    /// recorded (see the module docs) before it is returned.
    pub fn allocate(&mut self, alloc_id: &str) -> Result<Ipv4Addr, IpamError> {
        if alloc_id.is_empty() {
            return Err(IpamError::EmptyId);
        }
        if let Some(ip) = self.state.allocs.get(alloc_id) {
            return Ok(*ip);
        }
        let subnet = self.state.subnet;
        let size = subnet.size();
        // Offsets 0 (network), 1 (gateway) and size-1 (broadcast) are
        // reserved; search the rest starting after the cursor.
        let first = 2;
        let count = size - 3;
        let start = self.state.cursor.clamp(first - 1, size - 2);
        let exhausted = || IpamError::Exhausted {
            subnet,
            alloc_id: alloc_id.into(),
        };
        let offset = (1..=count)
            .map(|step| first + (start + step - first) % count)
            .find(|o| !self.used.contains(o))
            .ok_or_else(exhausted)?;
        let ip = subnet.nth(offset).ok_or_else(exhausted)?;
        let old_cursor = self.state.cursor;
        let change = Change::Alloc {
            id: alloc_id.into(),
            ip,
        };
        self.apply(&change).map_err(|reason| IpamError::Corrupt {
            path: self.path.clone(),
            reason,
        })?;
        if let Err(e) = self.persist(&[change]) {
            self.state.allocs.remove(alloc_id);
            self.used.remove(&offset);
            self.state.cursor = old_cursor;
            return Err(e);
        }
        Ok(ip)
    }

    /// Frees the address of `alloc_id`; returns it, or `None` if it held
    /// none.
    pub fn release(&mut self, alloc_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.state.allocs.remove(alloc_id) else {
            return Ok(None);
        };
        let change = Change::Release {
            id: alloc_id.into(),
        };
        if let Err(e) = self.persist(&[change]) {
            self.state.allocs.insert(alloc_id.into(), ip);
            return Err(e);
        }
        if let Some(o) = self.state.subnet.offset_of(ip) {
            self.used.remove(&o);
        }
        Ok(Some(ip))
    }

    /// Frees the address of every allocation for which `keep` is false, in
    /// one write (for an agent that found which allocations survived a
    /// restart). Returns what was freed.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<Vec<(String, Ipv4Addr)>, IpamError> {
        let gone: Vec<(String, Ipv4Addr)> = self
            .state
            .allocs
            .iter()
            .filter(|(id, _)| !keep(id))
            .map(|(id, ip)| (id.clone(), *ip))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        for (id, _) in &gone {
            self.state.allocs.remove(id);
        }
        let changes: Vec<Change> = gone
            .iter()
            .map(|(id, _)| Change::Release { id: id.clone() })
            .collect();
        if let Err(e) = self.persist(&changes) {
            self.state.allocs.extend(gone.iter().cloned());
            return Err(e);
        }
        for (_, ip) in &gone {
            if let Some(o) = self.state.subnet.offset_of(*ip) {
                self.used.remove(&o);
            }
        }
        Ok(gone)
    }

    /// The address `alloc_id` holds, if any.
    pub fn get(&self, alloc_id: &str) -> Option<Ipv4Addr> {
        self.state.allocs.get(alloc_id).copied()
    }

    /// Every allocation and its address, ordered by id.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.state.allocs.iter().map(|(id, ip)| (id.as_str(), *ip))
    }

    /// How many addresses are handed out.
    pub fn len(&self) -> usize {
        self.state.allocs.len()
    }

    /// Whether no address is handed out.
    pub fn is_empty(&self) -> bool {
        self.state.allocs.is_empty()
    }

    /// Records `changes`, already made in memory: appended to the file in
    /// one `write`, or, when no file is open or enough changes follow its
    /// snapshot, by rewriting it.
    fn persist(&mut self, changes: &[Change]) -> Result<(), IpamError> {
        let limit = MIN_CHANGES_BEFORE_REWRITE.max(2 * self.state.allocs.len());
        let Some(file) = self.file.as_mut().filter(|_| self.changes < limit) else {
            return self.rewrite();
        };
        let mut line = Vec::with_capacity(64 * changes.len());
        for change in changes {
            serde_json::to_writer(&mut line, change).map_err(|e| IpamError::Corrupt {
                path: self.path.clone(),
                reason: format!("cannot encode a change: {e}"),
            })?;
            line.push(b'\n');
        }
        if let Err(source) = file.write_all(&line) {
            // Part of the line may be in the file now.
            self.file = None;
            return Err(IpamError::Io {
                op: "append to",
                path: self.path.clone(),
                source,
            });
        }
        self.changes += changes.len();
        Ok(())
    }

    /// Replaces the file with a snapshot of the book (temporary file,
    /// rename) and keeps it open to append the next changes to.
    fn rewrite(&mut self) -> Result<(), IpamError> {
        self.file = None;
        let mut bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| IpamError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot encode state: {e}"),
        })?;
        bytes.push(b'\n');
        self.file = Some(write_atomic(&self.path, &bytes)?);
        self.changes = 0;
        Ok(())
    }
}

fn is_reserved(subnet: Ipv4Net, offset: u64) -> bool {
    offset <= 1 || offset + 1 >= subnet.size()
}

/// Replaces `path` with `bytes` atomically (temporary file, rename), without
/// fsync (see the module docs). Returns the file, open for writing at its
/// end.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<fs::File, IpamError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| IpamError::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::private_fs::PRIVATE_FILE_MODE)
            .open(&tmp)
            .and_then(|f| crate::private_fs::make_private(&f).map(|()| f))
            .map_err(io("create", &tmp))?
    };
    file.write_all(bytes).map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Ipv4Net {
        s.parse().expect("valid subnet")
    }

    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("ipam.json");
        (dir, path)
    }

    #[test]
    fn never_hands_out_reserved_or_live_addresses() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/29"); // .0 net, .1 gw, .7 bcast: .2-.6 free
        let mut ipam = Ipam::open(&path, net).expect("open");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 89, 1, 1));
        let mut seen = BTreeSet::new();
        for i in 0..5 {
            let ip = ipam.allocate(&format!("a{i}")).expect("allocate");
            assert!(seen.insert(ip), "{ip} handed out twice");
            let last = ip.octets()[3];
            assert!((2..=6).contains(&last), "{ip} is reserved");
        }
        assert!(matches!(
            ipam.allocate("a5"),
            Err(IpamError::Exhausted { .. })
        ));
        assert_eq!(ipam.len(), 5);
    }

    #[test]
    fn same_alloc_gets_same_address() {
        let (_dir, path) = tmp();
        let mut ipam = Ipam::open(&path, subnet("10.89.1.0/24")).expect("open");
        let a = ipam.allocate("alloc-a").expect("allocate");
        let b = ipam.allocate("alloc-b").expect("allocate");
        assert_ne!(a, b);
        assert_eq!(ipam.allocate("alloc-a").expect("again"), a);
        assert_eq!(ipam.get("alloc-b"), Some(b));
    }

    #[test]
    fn survives_restart() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let (a, b) = {
            let mut ipam = Ipam::open(&path, net).expect("open");
            let a = ipam.allocate("alloc-a").expect("allocate");
            let b = ipam.allocate("alloc-b").expect("allocate");
            (a, b)
        };
        let mut ipam = Ipam::open(&path, net).expect("reopen");
        assert_eq!(ipam.get("alloc-a"), Some(a));
        assert_eq!(ipam.allocate("alloc-b").expect("re-allocate"), b);
        let c = ipam.allocate("alloc-c").expect("allocate");
        assert!(c != a && c != b);
        assert!(!path.with_file_name("ipam.json.tmp").exists());
    }

    #[test]
    fn release_frees_and_reuse_is_delayed() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let mut ipam = Ipam::open(&path, net).expect("open");
        let a = ipam.allocate("alloc-a").expect("allocate");
        assert_eq!(ipam.release("alloc-a").expect("release"), Some(a));
        assert_eq!(ipam.release("alloc-a").expect("release twice"), None);
        let b = ipam.allocate("alloc-b").expect("allocate");
        assert_ne!(a, b, "a just-freed address is not handed out first");
        drop(ipam);
        let ipam = Ipam::open(&path, net).expect("reopen");
        assert_eq!(ipam.get("alloc-a"), None);
        assert_eq!(ipam.len(), 1);
    }

    #[test]
    fn wraps_around_to_freed_addresses() {
        let (_dir, path) = tmp();
        let mut ipam = Ipam::open(&path, subnet("10.89.1.0/29")).expect("open");
        for i in 0..5 {
            ipam.allocate(&format!("a{i}")).expect("allocate");
        }
        let freed = ipam.release("a2").expect("release").expect("held");
        assert_eq!(ipam.allocate("b").expect("allocate"), freed);
    }

    #[test]
    fn retain_frees_the_rest() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let mut ipam = Ipam::open(&path, net).expect("open");
        for id in ["keep-1", "drop-1", "keep-2", "drop-2"] {
            ipam.allocate(id).expect("allocate");
        }
        let gone = ipam.retain(|id| id.starts_with("keep")).expect("retain");
        assert_eq!(gone.len(), 2);
        let ipam = Ipam::open(&path, net).expect("reopen");
        let ids: Vec<&str> = ipam.allocations().map(|(id, _)| id).collect();
        assert_eq!(ids, ["keep-1", "keep-2"]);
    }

    #[test]
    fn refuses_other_subnet_and_bad_state() {
        let (_dir, path) = tmp();
        let mut ipam = Ipam::open(&path, subnet("10.89.1.0/24")).expect("open");
        ipam.allocate("a").expect("allocate");
        drop(ipam);
        assert!(matches!(
            Ipam::open(&path, subnet("10.89.2.0/24")),
            Err(IpamError::SubnetMismatch { .. })
        ));
        fs::write(
            &path,
            br#"{"version":1,"subnet":"10.89.1.0/24","cursor":1,"allocs":{"a":"10.89.1.1"}}"#,
        )
        .expect("write");
        assert!(matches!(
            Ipam::open(&path, subnet("10.89.1.0/24")),
            Err(IpamError::Corrupt { .. })
        ));
        fs::write(&path, br#"{"version":1,"subnet":"10.89.1.0/24","cursor":1,"allocs":{"a":"10.89.1.5","b":"10.89.1.5"}}"#)
            .expect("write");
        assert!(matches!(
            Ipam::open(&path, subnet("10.89.1.0/24")),
            Err(IpamError::Corrupt { .. })
        ));
        fs::write(&path, b"not json").expect("write");
        assert!(matches!(
            Ipam::open(&path, subnet("10.89.1.0/24")),
            Err(IpamError::Corrupt { .. })
        ));
        assert!(matches!(
            Ipam::open(&path, subnet("10.89.1.0/31")),
            Err(IpamError::SubnetTooSmall(_))
        ));
    }

    #[test]
    fn empty_id_is_refused() {
        let (_dir, path) = tmp();
        let mut ipam = Ipam::open(&path, subnet("10.89.1.0/24")).expect("open");
        assert!(matches!(ipam.allocate(""), Err(IpamError::EmptyId)));
        assert!(!path.exists(), "nothing written before the first change");
    }

    #[test]
    fn torn_empty_or_zeroed_files_are_corrupt() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let mut ipam = Ipam::open(&path, net).expect("open");
        ipam.allocate("a").expect("allocate");
        drop(ipam);
        let whole = fs::read(&path).expect("read");
        // What a power loss can leave of a file that was not fsync'd.
        for torn in [&b""[..], &whole[..whole.len() / 2], &[0u8; 64][..]] {
            fs::write(&path, torn).expect("write");
            assert!(
                matches!(Ipam::open(&path, net), Err(IpamError::Corrupt { .. })),
                "{torn:?}"
            );
        }
    }

    /// Lines in the file: the snapshot's plus one per appended change.
    fn lines(path: &Path) -> usize {
        fs::read_to_string(path).expect("read").lines().count()
    }

    #[test]
    fn changes_are_appended_and_read_back() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let mut ipam = Ipam::open(&path, net).expect("open");
        let a = ipam.allocate("a").expect("allocate");
        let snapshot = lines(&path);
        let b = ipam.allocate("b").expect("allocate");
        ipam.release("a").expect("release");
        ipam.allocate("c").expect("allocate");
        assert_eq!(lines(&path), snapshot + 3, "one line per change");
        let next = ipam.allocate("probe").expect("allocate");
        ipam.release("probe").expect("release");
        drop(ipam);
        let mut reopened = Ipam::open(&path, net).expect("reopen");
        let ids: Vec<(&str, Ipv4Addr)> = reopened.allocations().collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(reopened.get("b"), Some(b));
        assert_eq!(reopened.get("a"), None);
        // The cursor came back too: the next address is the one after the
        // last handed out, not the freed one.
        let d = reopened.allocate("d").expect("allocate");
        assert_ne!(d, a);
        assert_ne!(d, next);
        let bytes = fs::read(&path).expect("read");
        assert!(
            serde_json::from_slice::<State>(&bytes).is_ok(),
            "the first change after opening rewrites the file as a snapshot"
        );
    }

    #[test]
    fn a_last_line_cut_short_is_ignored_and_dropped() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let mut ipam = Ipam::open(&path, net).expect("open");
        let a = ipam.allocate("a").expect("allocate");
        ipam.allocate("b").expect("allocate");
        drop(ipam);
        // An agent killed in the middle of appending the release of "b".
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(br#"{"release":{"id":"#).expect("append");
        drop(f);
        let mut ipam = Ipam::open(&path, net).expect("reopen despite the torn line");
        assert_eq!(ipam.get("a"), Some(a));
        assert!(
            ipam.get("b").is_some(),
            "a release cut short did not happen"
        );
        ipam.allocate("c").expect("allocate");
        drop(ipam);
        let ipam = Ipam::open(&path, net).expect("reopen after rewrite");
        assert_eq!(ipam.len(), 3);

        // Garbage before the end is no torn last line: refused.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"xx\n{\"release\":{\"id\":\"a\"}}\n")
            .expect("append");
        drop(f);
        assert!(matches!(
            Ipam::open(&path, net),
            Err(IpamError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_file_is_rewritten_before_it_grows_large() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        let mut ipam = Ipam::open(&path, net).expect("open");
        ipam.allocate("keep").expect("allocate");
        for i in 0..500 {
            let id = format!("cycle-{i}");
            ipam.allocate(&id).expect("allocate");
            ipam.release(&id).expect("release");
        }
        assert!(
            lines(&path) <= 20 + MIN_CHANGES_BEFORE_REWRITE,
            "{} lines",
            lines(&path)
        );
        drop(ipam);
        let ipam = Ipam::open(&path, net).expect("reopen");
        let ids: Vec<&str> = ipam.allocations().map(|(id, _)| id).collect();
        assert_eq!(ids, ["keep"]);
        assert!(!path.with_file_name("ipam.json.tmp").exists());
    }

    #[test]
    fn rebuild_keeps_the_live_addresses_and_skips_the_impossible() {
        let (_dir, path) = tmp();
        let net = subnet("10.89.1.0/24");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, b"\0\0\0").expect("write");
        let ip = |d| Ipv4Addr::new(10, 89, 1, d);
        let live = vec![
            ("a".to_string(), ip(7)),
            ("b".to_string(), ip(3)),
            ("dup".to_string(), ip(7)),
            ("gateway".to_string(), ip(1)),
            ("elsewhere".to_string(), Ipv4Addr::new(10, 89, 2, 9)),
        ];
        let (mut ipam, skipped) = Ipam::rebuild(&path, net, live).expect("rebuild");
        let skipped: Vec<&str> = skipped.iter().map(|n| n.alloc_id.as_str()).collect();
        assert_eq!(skipped, ["dup", "gateway", "elsewhere"]);
        assert_eq!(ipam.get("a"), Some(ip(7)));
        assert_eq!(ipam.get("b"), Some(ip(3)));
        assert_eq!(ipam.allocate("c").expect("allocate"), ip(8));
        drop(ipam);
        let ipam = Ipam::open(&path, net).expect("the rebuilt book is written");
        assert_eq!(ipam.len(), 3);
    }
}
