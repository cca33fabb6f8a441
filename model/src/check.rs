//! The state of one health check of one allocation: what the agent
//! reports on its stream, the scheduler stores in the allocation record,
//! and `drover alloc status` shows.

use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::wire::{CheckKind, CheckStatus, UnknownValue};

/// Longest `output` kept, in bytes: enough for an HTTP status line or the
/// first lines of a script's output, small enough to report every
/// interval.
pub const MAX_CHECK_OUTPUT: usize = 512;

/// One check of one service of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// The service's name.
    pub service: String,
    /// The check's position in the service's list (from 0).
    pub index: u32,
    /// How it probes.
    pub kind: CheckKind,
    /// Its verdict.
    pub status: CheckStatus,
    /// What the last run printed or why it failed, at most
    /// [`MAX_CHECK_OUTPUT`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// When the last run ended, ms since the Unix epoch; 0 before the
    /// first.
    #[serde(default)]
    pub last_unix_ms: i64,
}

impl CheckState {
    /// Whether every check of `service` in `checks` passes (true when the
    /// service has none).
    pub fn all_passing(checks: &[CheckState], service: &str) -> bool {
        checks
            .iter()
            .filter(|c| c.service == service)
            .all(|c| c.status == CheckStatus::Passing)
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_output(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl From<&CheckState> for pb::CheckState {
    fn from(c: &CheckState) -> pb::CheckState {
        pb::CheckState {
            service: c.service.clone(),
            index: c.index,
            r#type: c.kind.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            output: c.output.clone(),
            last_unix_ms: c.last_unix_ms,
        }
    }
}

impl TryFrom<&pb::CheckState> for CheckState {
    type Error = UnknownValue;

    fn try_from(c: &pb::CheckState) -> Result<Self, UnknownValue> {
        Ok(CheckState {
            service: c.service.clone(),
            index: c.index,
            kind: CheckKind::parse("check type", &c.r#type)?,
            status: CheckStatus::parse("check status", &c.status)?,
            output: truncate_output(&c.output, MAX_CHECK_OUTPUT),
            last_unix_ms: c.last_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_output("héllo", 2), "h");
        assert_eq!(truncate_output("héllo", 3), "hé");
        assert_eq!(truncate_output("abc", 10), "abc");
    }

    #[test]
    fn a_service_without_checks_passes_and_one_pending_check_does_not() {
        let c = |service: &str, status| CheckState {
            service: service.into(),
            index: 0,
            kind: CheckKind::Tcp,
            status,
            output: String::new(),
            last_unix_ms: 0,
        };
        let checks = vec![
            c("web", CheckStatus::Passing),
            c("api", CheckStatus::Pending),
        ];
        assert!(CheckState::all_passing(&checks, "web"));
        assert!(!CheckState::all_passing(&checks, "api"));
        assert!(CheckState::all_passing(&checks, "other"));
    }

    #[test]
    fn an_unknown_status_on_the_wire_is_named() {
        let wire = pb::CheckState {
            service: "web".into(),
            r#type: "tcp".into(),
            status: "fine".into(),
            ..Default::default()
        };
        let e = CheckState::try_from(&wire).expect_err("unknown status");
        assert!(e.to_string().contains("\"fine\""), "{e}");
    }
}
