//! Constraints and affinities: rules on the nodes a group's allocations go
//! to, at job, group or task level.
//!
//! A [`Constraint`] is parsed once, when the job is validated (or read back
//! from the store): its target, its operator, and its value compiled into
//! a [`Test`] (a regex built with a size limit, a version requirement, a
//! split set, a number). Placement then only calls [`Test::matches`] with a
//! node's property, which allocates nothing.
//!
//! Operators, following Nomad's: `=` and `!=` compare strings exactly;
//! `<`, `<=`, `>`, `>=` compare numbers when both sides parse as numbers,
//! else strings byte by byte; `regexp` (unanchored); `version` (see
//! [`super::version`]); `set_contains` (every comma-separated item of the
//! value is among the node's comma-separated values); `is_set`,
//! `is_not_set`; and two that count allocations rather than look at one
//! node: `distinct_hosts` (no two allocations on one node: of the job at job
//! level, of the group at group or task level) and `distinct_property`
//! (at most `value`, default 1, allocations per value of the property).
//! A node without the property fails every test except `!=` and
//! `is_not_set`.

use std::cmp::Ordering;
use std::fmt;

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::version::{Version, VersionReq};
use super::{Target, TargetError};

/// Most constraints, and most affinities, at one level (job, group, task).
pub const MAX_CONSTRAINTS: usize = 32;
/// Longest constraint or affinity value, in bytes.
pub const MAX_CONSTRAINT_VALUE: usize = 1024;
/// Size limit of a compiled `regexp`, in bytes (the `regex` crate's
/// `size_limit`): a pattern that compiles bigger is refused.
pub const MAX_REGEX_SIZE: usize = 256 * 1024;
/// Largest `distinct_property` value (allocations per property value).
pub const MAX_DISTINCT_PER_VALUE: u32 = 10_000;
/// Bound of an affinity's weight, either way.
pub const MAX_AFFINITY_WEIGHT: i32 = 100;

/// A constraint's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `=` (also `==`, and the default).
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `regexp`.
    Regexp,
    /// `version`.
    Version,
    /// `set_contains`.
    SetContains,
    /// `is_set`.
    IsSet,
    /// `is_not_set`.
    IsNotSet,
    /// `distinct_hosts`.
    DistinctHosts,
    /// `distinct_property`.
    DistinctProperty,
}

const OPERATORS: [(&str, Operator); 13] = [
    ("=", Operator::Eq),
    ("!=", Operator::Ne),
    ("<", Operator::Lt),
    ("<=", Operator::Le),
    (">", Operator::Gt),
    (">=", Operator::Ge),
    ("regexp", Operator::Regexp),
    ("version", Operator::Version),
    ("set_contains", Operator::SetContains),
    ("is_set", Operator::IsSet),
    ("is_not_set", Operator::IsNotSet),
    ("distinct_hosts", Operator::DistinctHosts),
    ("distinct_property", Operator::DistinctProperty),
];

impl Operator {
    /// The operator spelled `s`; empty is `=`.
    pub fn parse(s: &str) -> Option<Operator> {
        match s {
            "" | "==" => Some(Operator::Eq),
            s => OPERATORS.iter().find(|(n, _)| *n == s).map(|(_, o)| *o),
        }
    }

    /// Its spelling in job files.
    pub fn as_str(self) -> &'static str {
        OPERATORS
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("=", |(n, _)| n)
    }
}

/// What is wrong with a constraint or an affinity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The attribute is not a node property.
    #[error("attribute {0}")]
    Target(#[from] TargetError),
    /// The operator is none of the known ones.
    #[error(
        "operator {op:?} is not one of {known}",
        op = .0,
        known = OPERATORS.map(|(n, _)| n).join(", ")
    )]
    Operator(String),
    /// The operator needs an attribute and has none.
    #[error("operator {0:?} needs an attribute (${{attr.NAME}}, ${{meta.NAME}} or ${{node.id}})")]
    NoAttribute(&'static str),
    /// `distinct_hosts` takes no attribute.
    #[error("operator \"distinct_hosts\" takes no attribute, got {0:?}")]
    StrayAttribute(String),
    /// The operator needs a value and has none.
    #[error("operator {0:?} needs a value")]
    NoValue(&'static str),
    /// The operator takes no value and has one.
    #[error("operator {op:?} takes no value, got {value:?}")]
    StrayValue {
        /// The operator.
        op: &'static str,
        /// The value given.
        value: String,
    },
    /// The value is longer than [`MAX_CONSTRAINT_VALUE`].
    #[error("value is {0} bytes, at most {MAX_CONSTRAINT_VALUE} allowed")]
    LongValue(usize),
    /// The value does not fit the operator.
    #[error("value {value:?}: {reason}")]
    Value {
        /// The value given.
        value: String,
        /// Why it does not fit.
        reason: String,
    },
    /// Only allowed in constraints.
    #[error("operator {0:?} is for constraints, not affinities")]
    NotAnAffinity(&'static str),
    /// An affinity's weight is out of range or 0.
    #[error("weight must be -100..=100 and not 0, got {0}")]
    Weight(i64),
}

/// A number parsed from a constraint value or a node property.
fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A test of one node property, compiled from an operator and a value.
#[derive(Debug, Clone)]
pub enum Test {
    /// `=`: exactly this string.
    Equal(String),
    /// `!=`: anything else, or unset.
    NotEqual(String),
    /// `<`, `<=`, `>`, `>=`: the node's value compared with this one
    /// (numbers when both are), holds for these orderings.
    Order {
        /// The value as given.
        value: String,
        /// The value as a number, when it is one.
        number: Option<f64>,
        /// Orderings of node value against `value` that satisfy it.
        holds: [Option<Ordering>; 2],
    },
    /// `regexp`.
    Regexp(regex::Regex),
    /// `version`.
    Version(VersionReq),
    /// `set_contains`: every item must be among the node's.
    SetContains(Vec<String>),
    /// `is_set`.
    IsSet,
    /// `is_not_set`.
    IsNotSet,
}

impl Test {
    /// Compiles `op` with `value`; `op` must test one node (not
    /// `distinct_*`).
    fn new(op: Operator, value: &str) -> Result<Test, ConstraintError> {
        let needs_value = !matches!(op, Operator::IsSet | Operator::IsNotSet);
        if needs_value && value.is_empty() {
            return Err(ConstraintError::NoValue(op.as_str()));
        }
        if !needs_value && !value.is_empty() {
            return Err(ConstraintError::StrayValue {
                op: op.as_str(),
                value: value.to_owned(),
            });
        }
        let bad = |reason: String| ConstraintError::Value {
            value: value.to_owned(),
            reason,
        };
        let order = |holds| Test::Order {
            value: value.to_owned(),
            number: number(value),
            holds,
        };
        use Ordering::{Equal, Greater, Less};
        Ok(match op {
            Operator::Eq => Test::Equal(value.to_owned()),
            Operator::Ne => Test::NotEqual(value.to_owned()),
            Operator::Lt => order([Some(Less), None]),
            Operator::Le => order([Some(Less), Some(Equal)]),
            Operator::Gt => order([Some(Greater), None]),
            Operator::Ge => order([Some(Greater), Some(Equal)]),
            Operator::Regexp => Test::Regexp(
                regex::RegexBuilder::new(value)
                    .size_limit(MAX_REGEX_SIZE)
                    .dfa_size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| bad(format!("not a regular expression: {e}")))?,
            ),
            Operator::Version => Test::Version(VersionReq::parse(value).map_err(bad)?),
            Operator::SetContains => {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if items.is_empty() {
                    return Err(bad("names no item (a comma-separated list)".into()));
                }
                Test::SetContains(items)
            }
            Operator::IsSet => Test::IsSet,
            Operator::IsNotSet => Test::IsNotSet,
            Operator::DistinctHosts | Operator::DistinctProperty => {
                return Err(ConstraintError::NotAnAffinity(op.as_str()))
            }
        })
    }

    /// Whether a node whose property is `value` (`None`: unset) passes.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else {
            return matches!(self, Test::NotEqual(_) | Test::IsNotSet);
        };
        match self {
            Test::Equal(want) => v == want,
            Test::NotEqual(want) => v != want,
            Test::Order {
                value,
                number: want,
                holds,
            } => {
                let o = match (number(v), want) {
                    (Some(have), Some(want)) => have.partial_cmp(want),
                    _ => Some(v.cmp(value.as_str())),
                };
                o.is_some() && holds.contains(&o)
            }
            Test::Regexp(re) => re.is_match(v),
            Test::Version(req) => Version::parse(v).is_some_and(|have| req.matches(&have)),
            Test::SetContains(items) => items
                .iter()
                .all(|item| v.split(',').any(|have| have.trim() == item)),
            Test::IsSet => true,
            Test::IsNotSet => false,
        }
    }
}

/// What a constraint asks for.
#[derive(Debug, Clone)]
pub enum Rule {
    /// The node's property passes the test.
    Node {
        /// The property.
        target: Target,
        /// The test.
        test: Test,
    },
    /// No two allocations of the job (job level) or of the group (group or
    /// task level) on one node.
    DistinctHosts,
    /// At most `limit` allocations (of the job or the group, as above) per
    /// value of the property.
    DistinctProperty {
        /// The property.
        target: Target,
        /// Allocations allowed per value.
        limit: u32,
    },
}

/// A constraint's fields as written: what is stored and sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintFields {
    /// A node property, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attribute: String,
    /// The operator as spelled; empty is `=`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator: String,
    /// The value, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// A validated constraint: its fields as written and its compiled rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ConstraintFields", into = "ConstraintFields")]
pub struct Constraint {
    fields: ConstraintFields,
    /// What it asks for.
    pub rule: Rule,
}

impl Constraint {
    /// Parses and compiles a constraint.
    pub fn new(fields: ConstraintFields) -> Result<Constraint, ConstraintError> {
        let op = Operator::parse(&fields.operator)
            .ok_or_else(|| ConstraintError::Operator(fields.operator.clone()))?;
        if fields.value.len() > MAX_CONSTRAINT_VALUE {
            return Err(ConstraintError::LongValue(fields.value.len()));
        }
        let target = || -> Result<Target, ConstraintError> {
            if fields.attribute.is_empty() {
                return Err(ConstraintError::NoAttribute(op.as_str()));
            }
            Ok(fields.attribute.parse::<Target>()?)
        };
        let rule = match op {
            Operator::DistinctHosts => {
                if !fields.attribute.is_empty() {
                    return Err(ConstraintError::StrayAttribute(fields.attribute));
                }
                if !matches!(fields.value.as_str(), "" | "true") {
                    return Err(ConstraintError::Value {
                        value: fields.value,
                        reason: "distinct_hosts takes no value (or \"true\")".into(),
                    });
                }
                Rule::DistinctHosts
            }
            Operator::DistinctProperty => {
                let limit = match fields.value.as_str() {
                    "" => 1,
                    v => v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_DISTINCT_PER_VALUE).contains(n))
                        .ok_or_else(|| ConstraintError::Value {
                            value: v.to_owned(),
                            reason: format!(
                                "distinct_property takes how many allocations may share a value, 1..={MAX_DISTINCT_PER_VALUE}"
                            ),
                        })?,
                };
                Rule::DistinctProperty {
                    target: target()?,
                    limit,
                }
            }
            op => Rule::Node {
                target: target()?,
                test: Test::new(op, &fields.value)?,
            },
        };
        Ok(Constraint { fields, rule })
    }

    /// Its fields as written.
    pub fn fields(&self) -> &ConstraintFields {
        &self.fields
    }
}

impl TryFrom<ConstraintFields> for Constraint {
    type Error = ConstraintError;

    fn try_from(f: ConstraintFields) -> Result<Constraint, ConstraintError> {
        Constraint::new(f)
    }
}

impl From<Constraint> for ConstraintFields {
    fn from(c: Constraint) -> ConstraintFields {
        c.fields
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Constraint) -> bool {
        self.fields == other.fields
    }
}

/// As explanations name it: `${attr.arch} = arm64`, `distinct_hosts`,
/// `distinct_property ${meta.rack}`.
impl fmt::Display for ConstraintFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.operator.is_empty() {
            "="
        } else {
            &self.operator
        };
        match op {
            "distinct_hosts" => f.write_str(op),
            "distinct_property" if self.value.is_empty() => {
                write!(f, "{op} {}", self.attribute)
            }
            "distinct_property" => write!(f, "{op} {} ({} per value)", self.attribute, self.value),
            _ if self.value.is_empty() => write!(f, "{} {op}", self.attribute),
            _ => write!(f, "{} {op} {}", self.attribute, self.value),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fields.fmt(f)
    }
}

/// An affinity's fields as written: a constraint's and a weight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityFields {
    /// The attribute, operator and value, as a constraint's.
    #[serde(flatten)]
    pub on: ConstraintFields,
    /// -100..=100, not 0.
    pub weight: i64,
}

/// A validated affinity: nodes whose property passes `test` score
/// `weight`/100 more.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "AffinityFields", into = "AffinityFields")]
pub struct Affinity {
    fields: AffinityFields,
    /// The property.
    pub target: Target,
    /// The test a matching node passes.
    pub test: Test,
    /// -100..=100, not 0.
    pub weight: i32,
}

impl Affinity {
    /// Parses and compiles an affinity.
    pub fn new(fields: AffinityFields) -> Result<Affinity, ConstraintError> {
        let weight = i32::try_from(fields.weight)
            .ok()
            .filter(|w| *w != 0 && w.abs() <= MAX_AFFINITY_WEIGHT)
            .ok_or(ConstraintError::Weight(fields.weight))?;
        let c = Constraint::new(fields.on.clone())?;
        let Rule::Node { target, test } = c.rule else {
            let op = Operator::parse(&fields.on.operator).unwrap_or(Operator::DistinctHosts);
            return Err(ConstraintError::NotAnAffinity(op.as_str()));
        };
        Ok(Affinity {
            fields,
            target,
            test,
            weight,
        })
    }

    /// Its fields as written.
    pub fn fields(&self) -> &AffinityFields {
        &self.fields
    }
}

impl TryFrom<AffinityFields> for Affinity {
    type Error = ConstraintError;

    fn try_from(f: AffinityFields) -> Result<Affinity, ConstraintError> {
        Affinity::new(f)
    }
}

impl From<Affinity> for AffinityFields {
    fn from(a: Affinity) -> AffinityFields {
        a.fields
    }
}

impl PartialEq for Affinity {
    fn eq(&self, other: &Affinity) -> bool {
        self.fields == other.fields
    }
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (weight {})", self.fields.on, self.weight)
    }
}

impl From<&pb::Constraint> for ConstraintFields {
    fn from(c: &pb::Constraint) -> ConstraintFields {
        ConstraintFields {
            attribute: c.attribute.clone(),
            operator: c.operator.clone(),
            value: c.value.clone(),
        }
    }
}

impl From<&Constraint> for pb::Constraint {
    fn from(c: &Constraint) -> pb::Constraint {
        pb::Constraint {
            attribute: c.fields.attribute.clone(),
            operator: c.fields.operator.clone(),
            value: c.fields.value.clone(),
        }
    }
}

impl From<&pb::Affinity> for AffinityFields {
    fn from(a: &pb::Affinity) -> AffinityFields {
        AffinityFields {
            on: ConstraintFields {
                attribute: a.attribute.clone(),
                operator: a.operator.clone(),
                value: a.value.clone(),
            },
            weight: a.weight,
        }
    }
}

impl From<&Affinity> for pb::Affinity {
    fn from(a: &Affinity) -> pb::Affinity {
        pb::Affinity {
            attribute: a.fields.on.attribute.clone(),
            operator: a.fields.on.operator.clone(),
            value: a.fields.on.value.clone(),
            weight: a.fields.weight,
        }
    }
}

#[cfg(test)]
#[path = "constraint_tests.rs"]
mod tests;
