//! `drover audit`: who changed what in the cluster, and who ran which
//! command (see `drover_scheduler::audit`).

use anyhow::{bail, Result};
use drover_proto::v1 as pb;
use serde_json::{json, Value};

use crate::connect::{channel, status_error};
use crate::{output, ClientOpts, Output};

/// Milliseconds in a `--since` duration: `90s`, `15m`, `2h`, `7d`.
pub fn parse_since(s: &str) -> Result<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let scale: i64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--since {s:?}: give a duration like 90s, 15m, 2h or 7d"),
    };
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--since {s:?}: give a duration like 90s, 15m, 2h or 7d"))?;
    Ok(n.saturating_mul(scale))
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A time for people: RFC 3339 in UTC, to the second.
fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.round(jiff::Unit::Second).map_or(t, |r| r).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// `-` for an empty cell.
fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

fn entry_json(e: &pb::AuditEntry) -> Value {
    json!({
        "time_unix_ms": e.time_unix_ms,
        "caller": e.caller,
        "role": e.role,
        "method": e.method,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
        "outcome": e.outcome,
        "peer": e.peer,
    })
}

/// Prints the audit trail since `since` ago (all of it without).
pub async fn audit(opts: &ClientOpts, since: Option<&str>, limit: u32) -> Result<()> {
    let since_unix_ms = match since {
        Some(d) => now_ms().saturating_sub(parse_since(d)?),
        None => 0,
    };
    let mut client = pb::audit_service_client::AuditServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let resp = client
        .list(pb::ListAuditRequest {
            since_unix_ms,
            limit,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&resp.entries.iter().map(entry_json).collect::<Vec<_>>()),
        Output::Table => output::table(
            &[
                "TIME", "CALLER", "ROLE", "ACTION", "TARGET", "OUTCOME", "DETAIL",
            ],
            resp.entries
                .iter()
                .map(|e| {
                    vec![
                        when(e.time_unix_ms),
                        e.caller.clone(),
                        e.role.clone(),
                        e.action.clone(),
                        dash(&e.target),
                        e.outcome.clone(),
                        dash(&e.detail),
                    ]
                })
                .collect(),
        ),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_a_number_and_a_unit() {
        assert_eq!(parse_since("90s").unwrap(), 90_000);
        assert_eq!(parse_since("15m").unwrap(), 900_000);
        assert_eq!(parse_since("2h").unwrap(), 7_200_000);
        assert_eq!(parse_since("7d").unwrap(), 604_800_000);
        for bad in ["", "5", "h", "5w", "-5m", "1.5h"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
