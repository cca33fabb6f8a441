//! The `/etc/resolv.conf` and `/etc/hosts` an allocation gets. Rendering is
//! pure; [`write_etc`] puts the result into a directory.
//!
//! A task's resolv.conf ([`task_resolv_conf`]) names the node's DNS on the
//! bridge, searches `service.<zone>` and sets `ndots:1`: `web` has no dot,
//! so the resolver tries `web.service.<zone>` first and is answered by the
//! first query; `example.org` has one, so it is tried as given first and
//! an external name costs exactly one query (Kubernetes' `ndots:5` makes
//! that up to six).

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use super::NetError;

/// The search domain of Drover services (the default zone).
pub const SERVICE_SEARCH_DOMAIN: &str = "service.drover.internal";

/// The resolver options of every task: one dot makes a name absolute
/// first (see the module docs).
pub const TASK_RESOLVER_OPTIONS: &[&str] = &["ndots:1"];

/// `resolv.conf` pointing at the node's DNS server (listening on the
/// bridge address) with `search` domains, e.g. [`SERVICE_SEARCH_DOMAIN`],
/// and `options` (each one word, e.g. `ndots:1`).
pub fn resolv_conf(
    nameserver: Ipv4Addr,
    search: &[&str],
    options: &[&str],
) -> Result<String, NetError> {
    let mut out = String::from("# Written by the Drover agent.\n");
    out.push_str(&format!("nameserver {nameserver}\n"));
    if !search.is_empty() {
        for domain in search {
            check_dns_name("search domain", domain)?;
        }
        out.push_str("search ");
        out.push_str(&search.join(" "));
        out.push('\n');
    }
    if !options.is_empty() {
        if let Some(bad) = options
            .iter()
            .find(|o| o.is_empty() || !o.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(NetError::invalid(
                "resolver option",
                *bad,
                "not one word of printable characters",
            ));
        }
        out.push_str("options ");
        out.push_str(&options.join(" "));
        out.push('\n');
    }
    Ok(out)
}

/// The resolv.conf of every task of a node whose DNS answers on `bridge`
/// for the service-discovery `zone` (`drover.internal`): `nameserver
/// <bridge>`, `search service.<zone>`, `options ndots:1`.
pub fn task_resolv_conf(bridge: Ipv4Addr, zone: &str) -> Result<String, NetError> {
    let search = format!("service.{}", zone.trim_end_matches('.'));
    resolv_conf(bridge, &[&search], TASK_RESOLVER_OPTIONS)
}

/// `hosts` for an allocation: loopback names, and `hostname` (plus
/// `aliases`) on the allocation's address `ip`.
pub fn hosts(hostname: &str, ip: Ipv4Addr, aliases: &[&str]) -> Result<String, NetError> {
    check_dns_name("hostname", hostname)?;
    for alias in aliases {
        check_dns_name("host alias", alias)?;
    }
    let mut names = vec![hostname];
    names.extend_from_slice(aliases);
    Ok(format!(
        "# Written by the Drover agent.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         {ip}\t{}\n",
        names.join(" ")
    ))
}

/// Writes `resolv.conf` and `hosts` into `etc_dir` (a container's `/etc`
/// seen from the host, or a directory the runtime bind-mounts from). Each
/// file is replaced by rename, so a reader never sees half of one.
pub fn write_etc(etc_dir: &Path, resolv: &str, hosts: &str) -> Result<(), NetError> {
    write_atomic(&etc_dir.join("resolv.conf"), resolv, false)?;
    write_atomic(&etc_dir.join("hosts"), hosts, false)
}

/// Replaces the file at `path` with `content` by rename, so a reader never
/// sees half of it (and one that has it bind-mounted keeps the old one);
/// with `create_dir` its directory is created first. Not fsync'd: these
/// files are rewritten whenever an allocation's network is set up.
pub fn write_atomic(path: &Path, content: &str, create_dir: bool) -> Result<(), NetError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(NetError::invalid(
            "file path",
            path.display().to_string(),
            "has no directory or file name",
        ));
    };
    if create_dir {
        fs::create_dir_all(dir)
            .map_err(|e| NetError::sys("create", dir.display().to_string(), e))?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".drover-tmp");
    let tmp = dir.join(tmp_name);
    fs::write(&tmp, content).map_err(|e| NetError::sys("write", tmp.display().to_string(), e))?;
    // The task reads them (as its own root, an unprivileged host uid):
    // 0644 whatever the agent's umask (0077).
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| NetError::sys("chmod 0644", tmp.display().to_string(), e))?;
    fs::rename(&tmp, path)
        .map_err(|e| NetError::sys("rename into place", path.display().to_string(), e))
}

fn check_dns_name(what: &'static str, name: &str) -> Result<(), NetError> {
    let labels_ok = name.trim_end_matches('.').split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if name.is_empty() || name.len() > 253 || !labels_ok {
        return Err(NetError::invalid(
            what,
            name,
            "not a DNS name (letters, digits, '-', '_', dot-separated)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_the_bridge() {
        let got = task_resolv_conf(Ipv4Addr::new(10, 89, 1, 1), "drover.internal").expect("render");
        assert_eq!(
            got,
            "# Written by the Drover agent.\nnameserver 10.89.1.1\nsearch service.drover.internal\n\
             options ndots:1\n"
        );
        let other = task_resolv_conf(Ipv4Addr::new(10, 89, 1, 1), "corp.example.").expect("render");
        assert!(other.contains("\nsearch service.corp.example\n"), "{other}");
        let bare = resolv_conf(Ipv4Addr::new(10, 89, 1, 1), &[], &[]).expect("render");
        assert!(
            !bare.contains("search") && !bare.contains("options"),
            "{bare}"
        );
        assert!(resolv_conf(Ipv4Addr::new(10, 89, 1, 1), &[], &["ndots:1 x"]).is_err());
        assert!(task_resolv_conf(Ipv4Addr::new(10, 89, 1, 1), "bad zone").is_err());
    }

    #[test]
    fn hosts_names_the_allocation() {
        let got = hosts(
            "web-0",
            Ipv4Addr::new(10, 89, 1, 7),
            &["web-0.web.service.drover.internal"],
        )
        .expect("render");
        assert_eq!(
            got,
            "# Written by the Drover agent.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.89.1.7\tweb-0 web-0.web.service.drover.internal\n"
        );
    }

    #[test]
    fn refuses_names_that_would_break_the_files() {
        let ip = Ipv4Addr::new(10, 89, 1, 7);
        for bad in ["", "a b", "a\nnameserver 1.2.3.4", "a..b", "ä"] {
            assert!(hosts(bad, ip, &[]).is_err(), "{bad:?}");
            assert!(resolv_conf(ip, &[bad], &[]).is_err(), "{bad:?}");
        }
        assert!(hosts("ok", ip, &["bad alias"]).is_err());
    }

    #[test]
    fn writes_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = Ipv4Addr::new(10, 89, 1, 7);
        let r = task_resolv_conf(Ipv4Addr::new(10, 89, 1, 1), "drover.internal").expect("render");
        let h = hosts("web-0", ip, &[]).expect("render");
        write_etc(dir.path(), &r, &h).expect("write");
        assert_eq!(
            fs::read_to_string(dir.path().join("resolv.conf")).expect("read"),
            r
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("hosts")).expect("read"),
            h
        );
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 2);
    }
}
