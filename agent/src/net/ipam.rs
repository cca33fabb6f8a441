//! The node's address book: which allocation holds which address of the
//! node subnet, kept in one JSON file that is replaced atomically on every
//! change (write a temporary file, fsync it, rename it over the old one,
//! fsync the directory), so a crash leaves either the old or the new state.
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

/// The node's address book; see the module docs. Not shared between
/// processes; within one, wrap it in a mutex.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    state: State,
    used: BTreeSet<u64>,
}

impl Ipam {
    /// Opens the address book at `path` for `subnet`, creating it empty if
    /// it does not exist (the file is first written on the first change).
    pub fn open(path: impl Into<PathBuf>, subnet: Ipv4Net) -> Result<Self, IpamError> {
        let path = path.into();
        if subnet.first_host().is_none() {
            return Err(IpamError::SubnetTooSmall(subnet));
        }
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|e| IpamError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if state.version != VERSION {
                    return Err(IpamError::Corrupt {
                        path,
                        reason: format!("unknown version {}", state.version),
                    });
                }
                if state.subnet != subnet {
                    return Err(IpamError::SubnetMismatch {
                        path,
                        found: state.subnet,
                        wanted: subnet,
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                version: VERSION,
                subnet,
                cursor: 1,
                allocs: BTreeMap::new(),
            },
            Err(source) => {
                return Err(IpamError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let mut used = BTreeSet::new();
        for (id, ip) in &state.allocs {
            let offset = match subnet.offset_of(*ip) {
                Some(o) if !is_reserved(subnet, o) => o,
                _ => {
                    return Err(IpamError::Corrupt {
                        path,
                        reason: format!(
                            "allocation {id} holds {ip}, which is not assignable in {subnet}"
                        ),
                    })
                }
            };
            if !used.insert(offset) {
                return Err(IpamError::Corrupt {
                    path,
                    reason: format!("{ip} is held by more than one allocation"),
                });
            }
        }
        Ok(Self { path, state, used })
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
    /// recorded durably before it is returned.
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
        let offset = (1..=count)
            .map(|step| first + (start + step - first) % count)
            .find(|o| !self.used.contains(o))
            .ok_or_else(|| IpamError::Exhausted {
                subnet,
                alloc_id: alloc_id.into(),
            })?;
        let ip = subnet.nth(offset).ok_or_else(|| IpamError::Exhausted {
            subnet,
            alloc_id: alloc_id.into(),
        })?;
        let old_cursor = self.state.cursor;
        self.state.cursor = offset;
        self.state.allocs.insert(alloc_id.into(), ip);
        if let Err(e) = self.save() {
            self.state.allocs.remove(alloc_id);
            self.state.cursor = old_cursor;
            return Err(e);
        }
        self.used.insert(offset);
        Ok(ip)
    }

    /// Frees the address of `alloc_id`; returns it, or `None` if it held
    /// none.
    pub fn release(&mut self, alloc_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.state.allocs.remove(alloc_id) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
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
        if let Err(e) = self.save() {
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

    fn save(&self) -> Result<(), IpamError> {
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| IpamError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot encode state: {e}"),
        })?;
        write_atomic(&self.path, &bytes)
    }
}

fn is_reserved(subnet: Ipv4Net, offset: u64) -> bool {
    offset <= 1 || offset + 1 >= subnet.size()
}

/// Replaces `path` with `bytes` durably: temporary file, fsync, rename,
/// fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IpamError> {
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
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
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
}
