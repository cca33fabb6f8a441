//! A group's `reschedule` policy: bounds, delay <= max_delay, and a limit
//! that can be reached within its interval.

use drover_proto::v1 as pb;

use super::{clamp_u64, Problems};
use crate::job::{
    JobKind, ReschedulePolicy, MAX_RESCHEDULE_ATTEMPTS, MAX_RESCHEDULE_DELAY_MS,
    MAX_RESCHEDULE_INTERVAL_MS, MIN_RESCHEDULE_DELAY_MS,
};

/// Checks the `reschedule` of group `gpath` of a job of `kind`; an unset
/// policy or field takes the kind's default.
pub(super) fn reschedule(
    p: &mut Problems,
    gpath: &str,
    kind: JobKind,
    r: Option<&pb::ReschedulePolicy>,
) -> Option<ReschedulePolicy> {
    let default = ReschedulePolicy::default_for(kind);
    let (r, d) = match (r, default) {
        (None, d) => return d,
        (Some(_), None) => {
            p.push(
                gpath,
                "reschedule: system jobs are not rescheduled (each instance belongs to its node); remove it",
            );
            return None;
        }
        (Some(r), Some(d)) => (r, d),
    };
    let ms = |v: Option<i64>, d: u64| v.unwrap_or(i64::try_from(d).unwrap_or(i64::MAX));
    let attempts = r.attempts.unwrap_or(i64::from(d.attempts));
    let interval = ms(r.interval_ms, d.interval_ms);
    let delay = ms(r.delay_ms, d.delay_ms);
    let max_delay = ms(r.max_delay_ms, d.max_delay_ms);
    // Naming a number of attempts means a limit, unless unlimited says so.
    let unlimited = r.unlimited.unwrap_or(r.attempts.is_none() && d.unlimited);
    let before = p.list.len();
    p.range(
        gpath,
        "reschedule.attempts",
        attempts,
        0,
        MAX_RESCHEDULE_ATTEMPTS,
    );
    p.range(
        gpath,
        "reschedule.interval_ms",
        interval,
        0,
        MAX_RESCHEDULE_INTERVAL_MS,
    );
    let (lo, hi) = (MIN_RESCHEDULE_DELAY_MS, MAX_RESCHEDULE_DELAY_MS);
    p.range(gpath, "reschedule.delay_ms", delay, lo, hi);
    p.range(gpath, "reschedule.max_delay_ms", max_delay, lo, hi);
    if delay > max_delay {
        p.push(
            gpath,
            format!(
                "reschedule.delay_ms ({delay}) must be <= reschedule.max_delay_ms ({max_delay})"
            ),
        );
    }
    if unlimited && r.attempts.is_some_and(|a| a > 0) {
        p.push(
            gpath,
            format!("reschedule.attempts = {attempts} has no effect with unlimited = true; set one of them"),
        );
    }
    let policy = ReschedulePolicy {
        // Ignored when unlimited, and then 0: the wire form names it, and
        // a batch job's default of 1 with `unlimited = true` would be
        // refused when that form is validated again (found by fuzzing).
        attempts: if unlimited {
            0
        } else {
            u32::try_from(attempts).unwrap_or(0)
        },
        interval_ms: clamp_u64(interval),
        delay_ms: clamp_u64(delay),
        max_delay_ms: clamp_u64(max_delay),
        unlimited,
    };
    if p.list.len() == before && !unlimited && policy.attempts > 0 {
        reachable(p, gpath, &policy);
    }
    Some(policy)
}

/// A limit of `attempts` within `interval_ms` must be reachable: if the
/// delays alone outlast the interval, the limit would never apply and the
/// instance would be replaced forever (nomad #12147).
fn reachable(p: &mut Problems, gpath: &str, policy: &ReschedulePolicy) {
    if policy.interval_ms == 0 {
        p.push(
            gpath,
            format!(
                "reschedule.interval_ms must be > 0 to limit replacements to attempts = {} (or set unlimited = true)",
                policy.attempts
            ),
        );
        return;
    }
    let total = policy.delays_total();
    if total > policy.interval_ms {
        p.push(
            gpath,
            format!(
                "reschedule: attempts = {} cannot all happen within interval_ms = {}: their delays alone take {total} ms \
                 (delay_ms {} doubling up to max_delay_ms {}); raise interval_ms or lower attempts",
                policy.attempts, policy.interval_ms, policy.delay_ms, policy.max_delay_ms
            ),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::job::{JobKind, JobSpec, ReschedulePolicy};
    use drover_proto::v1 as pb;

    fn job(kind: &str, reschedule: Option<pb::ReschedulePolicy>) -> pb::Job {
        pb::Job {
            name: "j".into(),
            kind: kind.into(),
            groups: vec![pb::Group {
                name: "web".into(),
                count: if kind == "system" { 0 } else { 1 },
                tasks: vec![pb::Task {
                    name: "app".into(),
                    command: vec!["/bin/false".into()],
                    resources: Some(pb::Resources {
                        cpu_millis: 100,
                        memory_mb: 32,
                    }),
                    ..Default::default()
                }],
                reschedule,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn problems(j: &pb::Job) -> Vec<String> {
        JobSpec::try_from(j).unwrap_err().problems
    }

    #[test]
    fn an_unset_policy_takes_the_kinds_default_and_round_trips() {
        for kind in [JobKind::Service, JobKind::Batch, JobKind::System] {
            let spec = JobSpec::try_from(&job(kind.as_str(), None)).unwrap();
            assert_eq!(
                spec.groups[0].reschedule,
                ReschedulePolicy::default_for(kind)
            );
            assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);
        }
    }

    /// A batch job (default: 1 attempt) made unlimited validates again
    /// from its wire form, as `job status` and agents get it.
    #[test]
    fn unlimited_on_a_batch_job_round_trips_through_the_wire() {
        let unlimited = pb::ReschedulePolicy {
            unlimited: Some(true),
            ..Default::default()
        };
        let spec = JobSpec::try_from(&job("batch", Some(unlimited))).unwrap();
        let p = spec.groups[0].reschedule.unwrap();
        assert!(p.unlimited && p.enabled());
        assert_eq!(p.attempts, 0, "ignored, so not the batch default");
        assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);
    }

    #[test]
    fn unset_fields_take_defaults_and_attempts_mean_a_limit() {
        let spec = JobSpec::try_from(&job(
            "service",
            Some(pb::ReschedulePolicy {
                attempts: Some(4),
                interval_ms: Some(60_000),
                delay_ms: Some(300),
                max_delay_ms: Some(1_200),
                ..Default::default()
            }),
        ))
        .unwrap();
        let p = spec.groups[0].reschedule.unwrap();
        assert_eq!((p.attempts, p.unlimited, p.delay_ms), (4, false, 300));
        let spec = JobSpec::try_from(&job(
            "service",
            Some(pb::ReschedulePolicy {
                delay_ms: Some(1_000),
                ..Default::default()
            }),
        ))
        .unwrap();
        let p = spec.groups[0].reschedule.unwrap();
        assert!(p.unlimited, "still the service default");
        assert_eq!(p.max_delay_ms, 3_600_000);
    }

    #[test]
    fn bad_policies_are_refused_with_their_path() {
        let bad = |r: pb::ReschedulePolicy| problems(&job("service", Some(r)));
        let p = bad(pb::ReschedulePolicy {
            delay_ms: Some(5_000),
            max_delay_ms: Some(1_000),
            ..Default::default()
        });
        assert_eq!(
            p,
            ["group \"web\": reschedule.delay_ms (5000) must be <= reschedule.max_delay_ms (1000)"]
        );
        let p = bad(pb::ReschedulePolicy {
            delay_ms: Some(10),
            attempts: Some(-1),
            ..Default::default()
        });
        assert!(
            p[0].contains("reschedule.attempts must be >= 0, got -1"),
            "{p:?}"
        );
        assert!(
            p[1].contains("reschedule.delay_ms must be >= 100, got 10"),
            "{p:?}"
        );
        let p = bad(pb::ReschedulePolicy {
            attempts: Some(3),
            unlimited: Some(true),
            ..Default::default()
        });
        assert!(p[0].contains("no effect with unlimited = true"), "{p:?}");
        let p = bad(pb::ReschedulePolicy {
            attempts: Some(3),
            ..Default::default()
        });
        assert!(p[0].contains("interval_ms must be > 0"), "{p:?}");
        // 300 + 600 + 1200 + 1200 ms of delays cannot fit in 2 s.
        let p = bad(pb::ReschedulePolicy {
            attempts: Some(4),
            interval_ms: Some(2_000),
            delay_ms: Some(300),
            max_delay_ms: Some(1_200),
            ..Default::default()
        });
        assert!(p[0].contains("take 3300 ms"), "{p:?}");
        let p = problems(&job("system", Some(pb::ReschedulePolicy::default())));
        assert!(p[0].contains("system jobs are not rescheduled"), "{p:?}");
    }
}
