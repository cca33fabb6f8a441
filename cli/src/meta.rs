//! `--meta KEY=VALUE` of `drover agent` and `drover dev`: operator
//! metadata the node registers with, for constraints on `${meta.KEY}`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use drover_scheduler::job::check_meta;

/// The `--meta` flags.
#[derive(Args, Debug, Default)]
pub struct MetaArgs {
    /// Operator metadata of the node, repeatable: `--meta rack=r1 --meta
    /// ssd=true`. Jobs constrain on it as `${meta.rack}`. Keys: letters,
    /// digits, '.', '_', '-', at most 128 bytes; values at most 256 bytes.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

impl MetaArgs {
    /// The entries, checked: each well formed, no key twice.
    pub fn entries(&self) -> Result<BTreeMap<String, String>> {
        parse(&self.meta)
    }
}

/// Parses `KEY=VALUE` entries.
fn parse(entries: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in entries {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| anyhow!("--meta {e:?}: expected KEY=VALUE"))?;
        check_meta(k, v).map_err(|problem| anyhow!("--meta {e:?}: {problem}"))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("--meta {k:?} given twice");
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entries_are_checked_and_unique() {
        let m = parse(&strings(&["rack=r1", "ssd=true", "note=a=b", "empty="])).unwrap();
        assert_eq!(m["rack"], "r1");
        assert_eq!(m["note"], "a=b");
        assert_eq!(m["empty"], "");
        for (bad, says) in [
            (vec!["rack"], "expected KEY=VALUE"),
            (vec!["=x"], "empty name"),
            (vec!["a b=x"], "characters"),
            (vec!["rack=r1", "rack=r2"], "given twice"),
        ] {
            let e = parse(&strings(&bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = format!("k={}", "v".repeat(257));
        assert!(parse(&[long])
            .unwrap_err()
            .to_string()
            .contains("at most 256"));
    }
}
