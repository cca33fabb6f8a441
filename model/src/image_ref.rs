//! Image references as a job names them (`nginx:1.25`,
//! `registry.internal:5000/team/web@sha256:...`), parsed and normalised the
//! way Docker does (the distribution project's reference grammar):
//!
//! - a first component with a `.` or `:`, or `localhost`, is a registry
//!   (`host[:port]`, or `[v6addr][:port]`); otherwise the registry is
//!   `docker.io`, and a one-component Docker Hub name gets `library/`;
//!   `index.docker.io` is spelled `docker.io`;
//! - the repository is lowercase path components
//!   (`[a-z0-9]+([._]|__|-+)[a-z0-9]+...`), 255 characters at most with
//!   the registry;
//! - `:tag` (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`), `@sha256:<64 hex>`,
//!   both, or neither (then `:latest`).
//!
//! The normalised string ([`ImageRef`]'s `Display`) is what the scheduler
//! stores and the agent pulls, so both sides read the same name.

use std::fmt;

/// The registry of names without one.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path inside the registry (`library/nginx`).
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>` when pinned.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {reference:?} is not valid: {reason}")]
pub struct InvalidImageRef {
    /// The reference as given.
    pub reference: String,
    /// What is wrong.
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalises `s` (see the module doc).
    pub fn parse(s: &str) -> Result<ImageRef, InvalidImageRef> {
        let bad = |reason: String| InvalidImageRef {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace or control characters".into()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d).map_err(bad)?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':'
        // before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(bad)?;
        }
        let (registry, repository) = split_registry(name).map_err(bad)?;
        check_repository(&repository).map_err(bad)?;
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad("the name is longer than 255 characters".into()));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image pinned to `digest` (the tag is dropped: the digest
    /// is what runs).
    pub fn pinned(&self, digest: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        }
    }

    /// Whether the registry is on loopback (`localhost`, `127.0.0.0/8`,
    /// `[::1]`), where Docker allows plain HTTP.
    pub fn registry_is_loopback(&self) -> bool {
        let host = registry_host(&self.registry);
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether `prefix` (an `allowed_images` entry: a registry, or a
    /// registry and repository path, optionally ending in `/`) covers this
    /// image: whole path components only (`reg/team` covers `reg/team/web`,
    /// not `reg/teamx`).
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        let name = self.name();
        let p = prefix.trim_end_matches('/');
        if p.is_empty() {
            return false;
        }
        name == p || name.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The host of `host[:port]` or `[v6][:port]`, without brackets.
pub fn registry_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Checks a `sha256:<64 lowercase hex>` digest.
pub fn parse_digest(d: &str) -> Result<String, String> {
    let hex = d
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {d:?} is not sha256:<hex> (only sha256 is supported)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {d:?} must be sha256: and 64 lowercase hex digits"
        ));
    }
    Ok(d.to_owned())
}

fn check_tag(t: &str) -> Result<(), String> {
    let mut bytes = t.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok
        || t.len() > 128
        || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "tag {t:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// Splits `name` into (registry, repository), adding Docker Hub's
/// registry and `library/` where Docker does.
fn split_registry(name: &str) -> Result<(String, String), String> {
    let (registry, repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            check_registry(first)?;
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB.to_owned()
    } else {
        registry
    };
    let repo = if registry == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    Ok((registry, repo))
}

fn check_registry(r: &str) -> Result<(), String> {
    let bad =
        || format!("registry {r:?} must be host[:port] (DNS name, IPv4 or [IPv6], port 1-65535)");
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(h) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if h.is_empty() || !h.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("the repository name is empty".into());
    }
    for comp in repo.split('/') {
        if comp.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "repository component {comp:?} must be lowercase (Docker refuses uppercase)"
            ));
        }
        if !component_ok(comp.as_bytes()) {
            return Err(format!(
                "repository component {comp:?} must be [a-z0-9] separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn component_ok(c: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < c.len() && alnum(c[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < c.len() {
        match c[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if c.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while c.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(norm("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(
            norm("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/a/b:v1"), "localhost:5000/a/b:v1");
        assert_eq!(
            norm("registry.internal:5000/team/web:1.4"),
            "registry.internal:5000/team/web:1.4"
        );
        assert_eq!(
            norm(&format!("127.0.0.1:5000/web@{D}")),
            format!("127.0.0.1:5000/web@{D}")
        );
        assert_eq!(
            norm(&format!("web:1@{D}")),
            format!("docker.io/library/web:1@{D}")
        );
        assert_eq!(
            norm("[::1]:5000/x_y__z.w-q--r"),
            "[::1]:5000/x_y__z.w-q--r:latest"
        );
        let r = ImageRef::parse("127.0.0.1:5000/team/web:1").unwrap();
        assert!(r.registry_is_loopback());
        assert!(ImageRef::parse("[::1]:5/a").unwrap().registry_is_loopback());
        assert!(!ImageRef::parse("nginx").unwrap().registry_is_loopback());
        assert_eq!(
            r.pinned(D).to_string(),
            format!("127.0.0.1:5000/team/web@{D}")
        );
    }

    #[test]
    fn refuses_bad_references() {
        for (s, why) in [
            ("", "empty"),
            ("Nginx", "lowercase"),
            ("nginx:", "tag"),
            ("nginx:-x", "tag"),
            ("nginx@sha256:abc", "64"),
            ("nginx@md5:abc", "sha256"),
            ("a b", "whitespace"),
            ("reg.io:99999/x", "port"),
            ("reg.io/", "empty"),
            ("reg.io/a//b", "component"),
            ("reg.io/a-", "component"),
            ("-bad.io/a", "registry"),
        ] {
            let e = ImageRef::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn prefixes_match_whole_components() {
        let r = ImageRef::parse("registry.internal:5000/team/web:1").unwrap();
        assert!(r.matches_prefix("registry.internal:5000/team/"));
        assert!(r.matches_prefix("registry.internal:5000/team"));
        assert!(r.matches_prefix("registry.internal:5000"));
        assert!(r.matches_prefix("registry.internal:5000/team/web"));
        assert!(!r.matches_prefix("registry.internal:5000/te"));
        assert!(!r.matches_prefix("registry.internal:500"));
        assert!(!r.matches_prefix("/"));
    }
}
