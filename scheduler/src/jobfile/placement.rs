//! The placement sections of a job file: `[[constraint]]` and
//! `[[affinity]]` at job level, `[[group.constraint]]`,
//! `[[group.affinity]]` and `[[group.task.constraint]]`.
//!
//! ```toml
//! [[group.constraint]]
//! attribute = "${attr.arch}"   # or ${meta.rack}, ${node.id}
//! operator = "="               # the default
//! value = "arm64"
//!
//! [[group.affinity]]
//! attribute = "${meta.rack}"
//! value = "r1"
//! weight = 50                  # -100..=100, not 0
//! ```
//!
//! Only the shape is checked here; what the fields mean is validated with
//! the rest of the job (`drover_model::job`), whoever sent it.

use drover_proto::v1 as pb;
use serde::Deserialize;

/// A value as TOML allows writing it: `"arm64"`, `2`, `true`, `6.1`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum FileValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl FileValue {
    fn text(self) -> String {
        match self {
            FileValue::Text(s) => s,
            FileValue::Integer(n) => n.to_string(),
            FileValue::Float(n) => n.to_string(),
            FileValue::Bool(b) => b.to_string(),
        }
    }
}

/// `[[constraint]]`, `[[group.constraint]]`, `[[group.task.constraint]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConstraint {
    #[serde(default)]
    attribute: String,
    #[serde(default)]
    operator: String,
    #[serde(default)]
    value: Option<FileValue>,
}

impl From<FileConstraint> for pb::Constraint {
    fn from(c: FileConstraint) -> pb::Constraint {
        pb::Constraint {
            attribute: c.attribute,
            operator: c.operator,
            value: c.value.map(FileValue::text).unwrap_or_default(),
        }
    }
}

/// `[[affinity]]`, `[[group.affinity]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAffinity {
    #[serde(default)]
    attribute: String,
    #[serde(default)]
    operator: String,
    #[serde(default)]
    value: Option<FileValue>,
    weight: i64,
}

impl From<FileAffinity> for pb::Affinity {
    fn from(a: FileAffinity) -> pb::Affinity {
        pb::Affinity {
            attribute: a.attribute,
            operator: a.operator,
            value: a.value.map(FileValue::text).unwrap_or_default(),
            weight: a.weight,
        }
    }
}

/// Converts a list of file sections to their wire form.
pub(super) fn wire<F, T: From<F>>(list: Vec<F>) -> Vec<T> {
    list.into_iter().map(T::from).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::parse;
    use crate::job::{JobSpec, Rule};

    const PLACED: &str = r#"
name = "web"

[[constraint]]
operator = "distinct_hosts"

[[affinity]]
attribute = "${meta.zone}"
value = "z1"
weight = -20

[[group]]
name = "web"
count = 3

[[group.constraint]]
attribute = "${attr.arch}"   # or ${meta.rack}, ${node.id}
operator = "="               # default "="
value = "arm64"

[[group.constraint]]
attribute = "${meta.rack}"
operator = "distinct_property"
value = 2

[[group.constraint]]
attribute = "${attr.kernel.version}"
operator = "version"
value = ">= 6.1, < 7"

[[group.affinity]]
attribute = "${meta.ssd}"
value = true
weight = 50

[[group.task]]
name = "app"
command = ["sleep", "60"]

[[group.task.constraint]]
attribute = "${meta.gpu}"
operator = "is_set"
"#;

    #[test]
    fn constraints_and_affinities_at_every_level() {
        let j = parse("web.toml", PLACED).unwrap();
        assert_eq!(j.constraints[0].operator, "distinct_hosts");
        assert_eq!(j.affinities[0].weight, -20);
        let g = &j.groups[0];
        assert_eq!(g.constraints.len(), 3);
        assert_eq!(g.constraints[0].value, "arm64");
        assert_eq!(g.constraints[1].value, "2", "integers become text");
        assert_eq!(g.affinities[0].value, "true", "booleans too");
        assert_eq!(g.tasks[0].constraints[0].operator, "is_set");
        let spec = JobSpec::try_from(&j).unwrap();
        assert!(matches!(spec.constraints[0].rule, Rule::DistinctHosts));
        assert!(matches!(
            spec.groups[0].constraints[1].rule,
            Rule::DistinctProperty { limit: 2, .. }
        ));
        assert_eq!(
            spec.groups[0].constraints[2].to_string(),
            "${attr.kernel.version} version >= 6.1, < 7"
        );
    }

    #[test]
    fn a_misspelt_field_is_refused_by_name_and_a_bad_rule_by_path() {
        let bad = PLACED.replace("operator = \"version\"", "op = \"version\"");
        let e = parse("web.toml", &bad).unwrap_err();
        assert!(e.message.contains("unknown field `op`"), "{}", e.message);
        let e = parse("web.toml", &PLACED.replace("weight = 50\n", "")).unwrap_err();
        assert!(
            e.message.contains("missing field `weight`"),
            "{}",
            e.message
        );
        let bad = PLACED.replace("value = \"arm64\"", "value = \"\"");
        let e = JobSpec::try_from(&parse("web.toml", &bad).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"group "web" constraint 0: operator "=" needs a value"#),
            "{e}"
        );
    }
}
