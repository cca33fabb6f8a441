//! What a constraint, an affinity or a spread looks at on a node:
//! `${attr.<name>}` (reported by the agent: `arch`, `kernel.version`, ...),
//! `${meta.<name>}` (set by the operator: `drover agent --meta rack=r1`) or
//! `${node.id}`.
//!
//! Parsed once, at validation; placement resolves it against a node record
//! without parsing again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest attribute or metadata name accepted after the prefix.
pub const MAX_TARGET_NAME: usize = 128;

/// A node property named in a job file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `${attr.<name>}`: an attribute the agent reports.
    Attr(String),
    /// `${meta.<name>}`: operator metadata of the node.
    Meta(String),
    /// `${node.id}`: the node's id.
    NodeId,
}

/// Why a target does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a node property: {reason} (expected ${{attr.NAME}}, ${{meta.NAME}} or ${{node.id}})")]
pub struct TargetError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        let err = |reason| TargetError {
            input: s.to_owned(),
            reason,
        };
        let inner = s
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| err("not of the form ${...}"))?;
        if inner == "node.id" {
            return Ok(Target::NodeId);
        }
        let (kind, name) = if let Some(name) = inner.strip_prefix("attr.") {
            (Target::Attr as fn(String) -> Target, name)
        } else if let Some(name) = inner.strip_prefix("meta.") {
            (Target::Meta as fn(String) -> Target, name)
        } else {
            return Err(err("unknown prefix"));
        };
        check_property_name(name).map_err(err)?;
        Ok(kind(name.to_owned()))
    }
}

/// Checks an attribute or metadata name: 1 to [`MAX_TARGET_NAME`] bytes of
/// ASCII letters, digits, '.', '_' and '-'.
pub fn check_property_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_TARGET_NAME {
        return Err("name longer than 128 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("name has characters other than letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Longest operator metadata value, in bytes.
pub const MAX_META_VALUE: usize = 256;

/// Checks one entry of a node's operator metadata (`--meta KEY=VALUE`):
/// the key named as a `${meta.KEY}` target can name it, the value at most
/// [`MAX_META_VALUE`] bytes.
pub fn check_meta(key: &str, value: &str) -> Result<(), String> {
    check_property_name(key).map_err(|reason| format!("meta key {key:?}: {reason}"))?;
    if value.len() > MAX_META_VALUE {
        return Err(format!(
            "meta {key:?}: value is {} bytes, at most {MAX_META_VALUE} allowed",
            value.len()
        ));
    }
    Ok(())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Attr(n) => write!(f, "${{attr.{n}}}"),
            Target::Meta(n) => write!(f, "${{meta.{n}}}"),
            Target::NodeId => f.write_str("${node.id}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for s in [
            "${attr.arch}",
            "${meta.rack}",
            "${node.id}",
            "${attr.kernel.version}",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            "${meta.ssd}".parse::<Target>().unwrap(),
            Target::Meta("ssd".into())
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_the_reason() {
        for (s, reason) in [
            ("attr.arch", "not of the form"),
            ("${arch}", "unknown prefix"),
            ("${attr.}", "empty name"),
            ("${meta.a b}", "characters"),
            ("${node.name}", "unknown prefix"),
        ] {
            let e = s.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains(reason) && e.contains(s), "{s}: {e}");
        }
        let long = format!("${{meta.{}}}", "a".repeat(129));
        assert!(long.parse::<Target>().is_err());
    }

    #[test]
    fn meta_entries_are_checked_like_targets() {
        check_meta("rack", "r1").unwrap();
        check_meta("disk.kind-2_x", "").unwrap();
        assert!(check_meta("", "x").unwrap_err().contains("empty name"));
        assert!(check_meta("a b", "x").unwrap_err().contains("characters"));
        assert!(check_meta(&"k".repeat(129), "x").is_err());
        assert!(check_meta("k", &"v".repeat(257))
            .unwrap_err()
            .contains("at most 256"));
    }
}
