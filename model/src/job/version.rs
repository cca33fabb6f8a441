//! Versions as node attributes carry them (`6.1.0-28-amd64`,
//! `5.15.0-91-generic`, `1.4.2`) and the requirements the `version`
//! constraint operator takes (`>= 6.1, < 7`).
//!
//! A version is the leading run of numeric components, split at '.', '-',
//! '+', '_' and '~': `6.1.0-28-amd64` is 6.1.0.28 and `6.12.3+deb13-amd64`
//! is 6.12.3; what follows the first non-numeric component is a build tag
//! and ignored. A requirement compares a version *at its own precision*:
//! `= 6.1` holds for every 6.1.x, `> 6.1` only from 6.2 on, `<= 6.1` for
//! 6.1.x and below (as Cargo reads `<=6.1`). So the Debian kernel
//! `6.1.0-28-amd64` satisfies `= 6.1`, `= 6.1.0` and `>= 6.1, < 7`, and not
//! `> 6.1.0`. `~> 6.1` is `>= 6.1` within 6.x.
//!
//! Parsing a node's value allocates nothing: placement does it per node.

use std::cmp::Ordering;
use std::fmt;

/// Most components a version keeps; more are ignored.
pub const MAX_VERSION_PARTS: usize = 8;
/// Most clauses in one requirement.
pub const MAX_VERSION_CLAUSES: usize = 8;

/// A parsed version: up to [`MAX_VERSION_PARTS`] numeric components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    parts: [u64; MAX_VERSION_PARTS],
    len: usize,
}

impl Version {
    /// The version in `s`, or `None` when it does not start with a number.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let mut v = Version {
            parts: [0; MAX_VERSION_PARTS],
            len: 0,
        };
        for part in s.split(['.', '-', '+', '_', '~']) {
            if v.len == MAX_VERSION_PARTS
                || part.is_empty()
                || !part.bytes().all(|b| b.is_ascii_digit())
            {
                break;
            }
            let Ok(n) = part.parse::<u64>() else { break };
            v.parts[v.len] = n;
            v.len += 1;
        }
        (v.len > 0).then_some(v)
    }

    /// Its components.
    pub fn parts(&self) -> &[u64] {
        &self.parts[..self.len]
    }

    /// Compares this version, cut or padded with zeros to `other`'s
    /// precision, with `other`.
    fn cmp_at(&self, other: &Version) -> Ordering {
        (0..other.len)
            .map(|i| self.parts[i].cmp(&other.parts[i]))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// How one clause compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `~>`: at least this, below the next release of the one before last
    /// component.
    Pessimistic,
}

/// A version requirement: every clause must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReq {
    clauses: Vec<(VersionOp, Version)>,
}

impl VersionReq {
    /// Parses `>= 6.1, < 7`: comma-separated clauses, each an operator
    /// (`=`, `!=`, `<`, `<=`, `>`, `>=`, `~>`; none means `=`) and a version.
    pub fn parse(s: &str) -> Result<VersionReq, String> {
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let clause = clause.trim();
            if clause.is_empty() {
                return Err(format!("{s:?} has an empty clause"));
            }
            let (op, rest) = [
                ("~>", VersionOp::Pessimistic),
                (">=", VersionOp::Ge),
                ("<=", VersionOp::Le),
                ("!=", VersionOp::Ne),
                ("==", VersionOp::Eq),
                ("=", VersionOp::Eq),
                (">", VersionOp::Gt),
                ("<", VersionOp::Lt),
            ]
            .iter()
            .find_map(|(p, op)| clause.strip_prefix(p).map(|r| (*op, r)))
            .unwrap_or((VersionOp::Eq, clause));
            let rest = rest.trim();
            let well_formed = !rest.is_empty()
                && rest
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            let version = Version::parse(rest)
                .filter(|v| well_formed && v.len == rest.split('.').count())
                .ok_or_else(|| {
                    format!("{clause:?} is not an operator and a version such as \">= 6.1\"")
                })?;
            clauses.push((op, version));
        }
        if clauses.len() > MAX_VERSION_CLAUSES {
            return Err(format!(
                "{s:?} has {} clauses, at most {MAX_VERSION_CLAUSES} allowed",
                clauses.len()
            ));
        }
        Ok(VersionReq { clauses })
    }

    /// Whether `v` satisfies every clause.
    pub fn matches(&self, v: &Version) -> bool {
        self.clauses.iter().all(|(op, r)| {
            let o = v.cmp_at(r);
            match op {
                VersionOp::Eq => o.is_eq(),
                VersionOp::Ne => o.is_ne(),
                VersionOp::Lt => o.is_lt(),
                VersionOp::Le => o.is_le(),
                VersionOp::Gt => o.is_gt(),
                VersionOp::Ge => o.is_ge(),
                VersionOp::Pessimistic => {
                    let prefix = Version {
                        len: r.len.saturating_sub(1),
                        ..*r
                    };
                    o.is_ge() && v.cmp_at(&prefix).is_eq()
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn holds(req: &str, v: &str) -> bool {
        VersionReq::parse(req)
            .unwrap()
            .matches(&Version::parse(v).unwrap())
    }

    #[test]
    fn kernel_versions_parse_to_their_numbers() {
        assert_eq!(
            Version::parse("6.1.0-28-amd64").unwrap().parts(),
            [6, 1, 0, 28]
        );
        assert_eq!(
            Version::parse("6.12.3+deb13-amd64").unwrap().parts(),
            [6, 12, 3]
        );
        assert_eq!(Version::parse("v1.4").unwrap().parts(), [1, 4]);
        assert_eq!(Version::parse("1.2.3-rc1").unwrap().parts(), [1, 2, 3]);
        assert!(Version::parse("amd64").is_none());
        assert!(Version::parse("").is_none());
    }

    #[test]
    fn requirements_compare_at_their_own_precision() {
        let k = "6.1.0-28-amd64";
        assert!(holds(">= 6.1, < 7", k));
        assert!(holds(">= 6.1", k));
        assert!(holds("= 6.1", k));
        assert!(holds("6.1.0", k));
        assert!(holds("<= 6.1", k));
        assert!(!holds("> 6.1", k));
        assert!(!holds("> 6.1.0", k));
        assert!(holds("> 6.0", k));
        assert!(holds("!= 6.2", k));
        assert!(!holds("!= 6", k));
        assert!(!holds(">= 6.2", k));
        assert!(!holds("< 6.1", k));
        assert!(holds("< 6.1.0.29", k));
        // Numeric, not lexical: 6.10 is after 6.9.
        assert!(holds("> 6.9", "6.10.2"));
        assert!(!holds("< 6.9", "6.10.2"));
        assert!(holds(">= 5.15, < 6", "5.15.0-91-generic"));
        assert!(!holds(">= 5.15, < 6", "6.1.0"));
    }

    #[test]
    fn pessimistic_stays_within_the_release() {
        assert!(holds("~> 6.1", "6.8.0"));
        assert!(!holds("~> 6.1", "7.0"));
        assert!(!holds("~> 6.1", "6.0.9"));
        assert!(holds("~> 6.1.2", "6.1.9"));
        assert!(!holds("~> 6.1.2", "6.2.0"));
    }

    #[test]
    fn malformed_requirements_are_refused() {
        for bad in [
            "",
            ">=",
            ">= six",
            ">= 6.1,",
            "=> 6",
            ">= 6..1",
            ">= 6.1-rc1",
        ] {
            assert!(VersionReq::parse(bad).is_err(), "{bad:?} accepted");
        }
        let many = [">= 1"; MAX_VERSION_CLAUSES + 1].join(",");
        assert!(VersionReq::parse(&many).is_err());
    }
}
