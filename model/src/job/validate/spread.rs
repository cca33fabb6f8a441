//! Spreads, at job and group level: the property, the weight and the
//! target shares.

use std::collections::BTreeSet;

use drover_proto::v1 as pb;

use super::Problems;
use crate::job::{
    SpreadSpec, SpreadTarget, Target, MAX_SPREADS, MAX_SPREAD_TARGETS, MAX_SPREAD_VALUE,
    MAX_SPREAD_WEIGHT,
};

/// Checks the spreads of one level; `parent` is its path (empty for the
/// job, `group "web"` for a group). A spread whose property does not parse
/// is reported and left out.
pub(super) fn spreads(p: &mut Problems, parent: &str, list: &[pb::Spread]) -> Vec<SpreadSpec> {
    let sep = if parent.is_empty() { "" } else { " " };
    if list.len() > MAX_SPREADS {
        p.push(
            parent,
            format!("{} spreads, at most {MAX_SPREADS} allowed", list.len()),
        );
    }
    let mut seen = BTreeSet::new();
    list.iter()
        .enumerate()
        .take(MAX_SPREADS)
        .filter_map(|(i, s)| {
            let path = format!("{parent}{sep}spread #{}", i + 1);
            spread(p, &path, s, &mut seen)
        })
        .collect()
}

fn spread(
    p: &mut Problems,
    path: &str,
    s: &pb::Spread,
    seen: &mut BTreeSet<Target>,
) -> Option<SpreadSpec> {
    p.range(path, "weight", s.weight, 1, MAX_SPREAD_WEIGHT);
    let attribute = match s.attribute.parse::<Target>() {
        Ok(t) => Some(t),
        Err(e) => {
            p.push(path, format!("attribute {e}"));
            None
        }
    };
    if let Some(t) = &attribute {
        if !seen.insert(t.clone()) {
            p.push(path, format!("a second spread over {t}; merge them"));
        }
    }
    if s.targets.len() > MAX_SPREAD_TARGETS {
        p.push(
            path,
            format!(
                "{} targets, at most {MAX_SPREAD_TARGETS} allowed",
                s.targets.len()
            ),
        );
    }
    let mut values = BTreeSet::new();
    let mut sum: i64 = 0;
    let targets = s
        .targets
        .iter()
        .take(MAX_SPREAD_TARGETS)
        .enumerate()
        .map(|(i, t)| {
            let tpath = if t.value.is_empty() {
                format!("{path} target #{}", i + 1)
            } else {
                format!("{path} target {:?}", t.value)
            };
            if t.value.is_empty() {
                p.push(&tpath, "value must not be empty");
            } else if t.value.len() > MAX_SPREAD_VALUE {
                p.push(
                    &tpath,
                    format!(
                        "value is {} bytes, at most {MAX_SPREAD_VALUE} allowed",
                        t.value.len()
                    ),
                );
            } else if !values.insert(t.value.as_str()) {
                p.push(&tpath, "duplicate target value");
            }
            p.range(&tpath, "percent", t.percent, 0, 100);
            sum = sum.saturating_add(t.percent.clamp(0, 100));
            SpreadTarget {
                value: t.value.clone(),
                percent: u32::try_from(t.percent.clamp(0, 100)).unwrap_or(0),
            }
        })
        .collect();
    if sum > 100 {
        p.push(
            path,
            format!("target percentages sum to {sum}, more than 100"),
        );
    }
    Some(SpreadSpec {
        attribute: attribute?,
        weight: u32::try_from(s.weight.clamp(0, MAX_SPREAD_WEIGHT)).unwrap_or(0),
        targets,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use drover_proto::v1 as pb;

    use crate::job::{Algorithm, JobSpec, SpreadTarget, Target};

    fn job(job_spreads: Vec<pb::Spread>, group_spreads: Vec<pb::Spread>) -> pb::Job {
        pb::Job {
            name: "web".into(),
            kind: "service".into(),
            groups: vec![pb::Group {
                name: "front".into(),
                count: 4,
                tasks: vec![pb::Task {
                    name: "app".into(),
                    command: vec!["true".into()],
                    resources: Some(pb::Resources {
                        cpu_millis: 100,
                        memory_mb: 32,
                    }),
                    ..Default::default()
                }],
                spreads: group_spreads,
                ..Default::default()
            }],
            spreads: job_spreads,
            ..Default::default()
        }
    }

    fn spread(attribute: &str, weight: i64, targets: &[(&str, i64)]) -> pb::Spread {
        pb::Spread {
            attribute: attribute.into(),
            weight,
            targets: targets
                .iter()
                .map(|(v, p)| pb::SpreadTarget {
                    value: (*v).into(),
                    percent: *p,
                })
                .collect(),
        }
    }

    #[test]
    fn spreads_at_both_levels_validate_and_go_back_to_the_wire() {
        let mut j = job(
            vec![spread("${node.id}", 10, &[])],
            vec![spread("${meta.rack}", 50, &[("r1", 70), ("r2", 30)])],
        );
        j.algorithm = "spread".into();
        let spec = JobSpec::try_from(&j).unwrap();
        assert_eq!(spec.algorithm, Some(Algorithm::Spread));
        assert_eq!(spec.spreads[0].attribute, Target::NodeId);
        let g = &spec.groups[0].spreads[0];
        assert_eq!(g.attribute, Target::Meta("rack".into()));
        assert_eq!(
            g.targets[0],
            SpreadTarget {
                value: "r1".into(),
                percent: 70
            }
        );
        assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);
        // As stored: the algorithm by name, and a job stored before
        // spreads existed still reads.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["algorithm"], "spread");
        assert_eq!(json["groups"][0]["spreads"][0]["attribute"], "${meta.rack}");
        assert_eq!(serde_json::from_value::<JobSpec>(json).unwrap(), spec);
        let mut old = spec.clone();
        old.algorithm = None;
        old.spreads.clear();
        old.groups[0].spreads.clear();
        let json = serde_json::to_string(&old).unwrap();
        assert!(
            !json.contains("spread") && !json.contains("algorithm"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), old);
        // No algorithm is the scheduler's default, kept as none.
        j.algorithm.clear();
        assert_eq!(JobSpec::try_from(&j).unwrap().algorithm, None);
    }

    #[test]
    fn every_spread_problem_is_named_with_its_path() {
        let mut j = job(
            vec![spread("rack", 50, &[])],
            vec![
                spread("${meta.rack}", 0, &[("r1", 80), ("r2", 30), ("r1", 0)]),
                spread("${attr.arch}", 101, &[("", 10), ("arm64", -1)]),
                spread("${meta.rack}", 50, &[]),
            ],
        );
        j.algorithm = "fast".into();
        let problems = JobSpec::try_from(&j).unwrap_err().problems;
        let want = [
            "spread #1: attribute \"rack\" is not a node property",
            "group \"front\" spread #1: weight must be > 0, got 0",
            "group \"front\" spread #1 target \"r1\": duplicate target value",
            "group \"front\" spread #1: target percentages sum to 110, more than 100",
            "group \"front\" spread #2: weight must be <= 100, got 101",
            "group \"front\" spread #2 target #1: value must not be empty",
            "group \"front\" spread #2 target \"arm64\": percent must be >= 0, got -1",
            "group \"front\" spread #3: a second spread over ${meta.rack}; merge them",
            "algorithm \"fast\" is not one of \"binpack\", \"spread\"",
        ];
        for w in want {
            assert!(
                problems.iter().any(|p| p.starts_with(w)),
                "missing {w:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), want.len(), "{problems:#?}");
    }

    #[test]
    fn too_many_spreads_and_targets_are_refused_without_reading_them_all() {
        let targets: Vec<(String, i64)> = (0..10_000).map(|i| (format!("v{i}"), 0)).collect();
        let targets: Vec<(&str, i64)> = targets.iter().map(|(v, p)| (v.as_str(), *p)).collect();
        let many = vec![spread("${meta.rack}", 50, &targets)];
        let problems = JobSpec::try_from(&job(vec![], many)).unwrap_err().problems;
        assert_eq!(
            problems,
            ["group \"front\" spread #1: 10000 targets, at most 128 allowed"]
        );
        let spreads = (0..9)
            .map(|i| spread(&format!("${{meta.m{i}}}"), 50, &[]))
            .collect();
        let problems = JobSpec::try_from(&job(spreads, vec![]))
            .unwrap_err()
            .problems;
        assert_eq!(problems, ["9 spreads, at most 8 allowed"]);
    }
}
