//! `[[spread]]` (job level) and `[[group.spread]]`, with their targets:
//!
//! ```toml
//! [[group.spread]]
//! attribute = "${meta.rack}"   # or ${attr.NAME}, ${node.id}
//! weight = 50                  # 1..=100, default 50
//! [[group.spread.target]]
//! value = "r1"
//! percent = 50
//! ```

use drover_proto::v1 as pb;
use serde::Deserialize;

use crate::job::DEFAULT_SPREAD_WEIGHT;

/// One `[[spread]]` or `[[group.spread]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpread {
    attribute: String,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default, rename = "target")]
    targets: Vec<FileSpreadTarget>,
}

/// `[[group.spread.target]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpreadTarget {
    value: String,
    percent: i64,
}

impl From<FileSpread> for pb::Spread {
    fn from(s: FileSpread) -> pb::Spread {
        pb::Spread {
            attribute: s.attribute,
            weight: s.weight.unwrap_or(i64::from(DEFAULT_SPREAD_WEIGHT)),
            targets: s
                .targets
                .into_iter()
                .map(|t| pb::SpreadTarget {
                    value: t.value,
                    percent: t.percent,
                })
                .collect(),
        }
    }
}

/// The wire form of a level's spreads.
pub(super) fn to_pb(spreads: Vec<FileSpread>) -> Vec<pb::Spread> {
    spreads.into_iter().map(pb::Spread::from).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::job::{Algorithm, JobSpec, Target};
    use crate::jobfile::parse;

    const RACKS: &str = r#"
name = "web"
algorithm = "spread"
[[spread]]
attribute = "${node.id}"
weight = 10
[[group]]
name = "front"
count = 4
[[group.task]]
name = "app"
command = ["true"]
[[group.spread]]
attribute = "${meta.rack}"
[[group.spread.target]]
value = "r1"
percent = 50
[[group.spread.target]]
value = "r2"
percent = 50
"#;

    #[test]
    fn spreads_and_algorithm_parse_with_defaults() {
        let j = parse("web.toml", RACKS).unwrap();
        assert_eq!(j.algorithm, "spread");
        assert_eq!(j.spreads[0].weight, 10);
        let g = &j.groups[0].spreads[0];
        assert_eq!(g.weight, 50, "the default weight");
        assert_eq!(g.targets.len(), 2);
        let spec = JobSpec::try_from(&j).unwrap();
        assert_eq!(spec.algorithm, Some(Algorithm::Spread));
        assert_eq!(
            spec.groups[0].spreads[0].attribute,
            Target::Meta("rack".into())
        );
    }

    #[test]
    fn spread_mistakes_are_named() {
        let e = parse(
            "web.toml",
            &RACKS.replace(
                "percent = 50\n[[group.spread.target]]",
                "pct = 50\n[[group.spread.target]]",
            ),
        )
        .unwrap_err();
        assert!(e.message.contains("unknown field `pct`"), "{}", e.message);
        let j = parse(
            "web.toml",
            &RACKS.replace(
                "value = \"r2\"\npercent = 50",
                "value = \"r2\"\npercent = 60",
            ),
        )
        .unwrap();
        let e = JobSpec::try_from(&j).unwrap_err().to_string();
        assert!(
            e.contains("group \"front\" spread #1: target percentages sum to 110, more than 100"),
            "{e}"
        );
        let j = parse("web.toml", &RACKS.replace("\"spread\"", "\"fastest\"")).unwrap();
        let e = JobSpec::try_from(&j).unwrap_err().to_string();
        assert!(e.contains("algorithm \"fastest\""), "{e}");
    }
}
