//! Placements that wait, as the CLI shows them: the `Pending` section of
//! `drover job status`, and the message `drover job run` fails with when
//! instances are queued.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

/// The `Pending` section of a job: per group, how many instances wait,
/// since when and why. Prints nothing when nothing waits.
pub fn pending_table(pending: &[pb::PendingPlacement], now_ms: i64) {
    if pending.is_empty() {
        return;
    }
    outln!("Pending (placed as soon as capacity appears)");
    crate::columns::table(
        &["GROUP", "COUNT", "SINCE", "REASON"],
        pending
            .iter()
            .map(|p| {
                vec![
                    p.group.clone(),
                    p.count.to_string(),
                    crate::columns::age(now_ms, p.since_unix_ms),
                    p.reason.clone(),
                ]
            })
            .collect(),
    );
    outln!();
}

/// JSON for the pending placements of a job.
pub fn pending_json(pending: &[pb::PendingPlacement]) -> Value {
    pending
        .iter()
        .map(|p| {
            json!({
                "group": p.group,
                "count": p.count,
                "reason": p.reason,
                "since_unix_ms": p.since_unix_ms,
            })
        })
        .collect()
}

/// How many instances wait in all of `pending`.
pub fn total(pending: &[pb::PendingPlacement]) -> u32 {
    pending.iter().fold(0u32, |n, p| n.saturating_add(p.count))
}

/// Why `drover job run` fails when instances of job `name` wait: what
/// waits, why, and that the scheduler will place them by itself.
pub fn queued_message(name: &str, pending: &[pb::PendingPlacement]) -> String {
    let n = total(pending);
    let mut msg = format!(
        "job {name:?} is queued: {n} instance{} could not be placed",
        if n == 1 { "" } else { "s" }
    );
    for p in pending {
        msg.push_str(&format!(
            "\n  group {:?}: {} pending: {}",
            p.group, p.count, p.reason
        ));
    }
    msg.push_str(&format!(
        "\nThe job is accepted: the scheduler places them as soon as capacity appears \
         (a node joins or is undrained, an allocation ends). \
         See `drover job status {name}`, or run with --wait SECONDS to wait for them."
    ));
    msg
}

/// The time now in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queued_message_names_each_group_its_count_and_reason() {
        let pending = [
            pb::PendingPlacement {
                group: "web".into(),
                count: 3,
                reason: "no node can take 4000 millicores".into(),
                since_unix_ms: 1,
            },
            pb::PendingPlacement {
                group: "db".into(),
                count: 1,
                reason: "1 draining".into(),
                since_unix_ms: 1,
            },
        ];
        let m = queued_message("shop", &pending);
        assert!(
            m.starts_with("job \"shop\" is queued: 4 instances could not be placed"),
            "{m}"
        );
        assert!(m.contains("group \"web\": 3 pending: no node can take 4000 millicores"));
        assert!(m.contains("group \"db\": 1 pending: 1 draining"));
        assert!(m.contains("as soon as capacity appears"));
        assert_eq!(pending_json(&pending)[1]["count"], 1);
    }
}
