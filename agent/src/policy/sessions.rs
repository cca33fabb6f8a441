//! How many user sessions the node serves at once: `drover logs` streams
//! and `drover exec` sessions, whatever scheduler asks. Each open log
//! stream holds a file reader and a task; each exec session a helper
//! process and the command it runs; so a node bounds both, and refuses
//! one more with a message that names the setting.
//!
//! ```toml
//! [sessions]
//! max_log_streams = 128
//! max_exec_sessions = 64
//! ```

use serde::Deserialize;

/// Default bound on concurrent log streams per node: above the hundred
/// followers of one task that the load tests open.
pub const DEFAULT_MAX_LOG_STREAMS: usize = 128;
/// Default bound on concurrent exec sessions per node (each is a process).
pub const DEFAULT_MAX_EXEC_SESSIONS: usize = 64;

/// The node's bounds on concurrent log streams and exec sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionPolicy {
    /// `drover logs` streams (followed or not) served at once.
    pub max_log_streams: usize,
    /// `drover exec` sessions run at once (exec health checks are the
    /// node's own and not counted).
    pub max_exec_sessions: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            max_log_streams: DEFAULT_MAX_LOG_STREAMS,
            max_exec_sessions: DEFAULT_MAX_EXEC_SESSIONS,
        }
    }
}

impl SessionPolicy {
    /// Checks that every bound lets at least one session through.
    pub fn check(&self) -> Result<(), String> {
        for (name, n) in [
            ("max_log_streams", self.max_log_streams),
            ("max_exec_sessions", self.max_exec_sessions),
        ] {
            if n == 0 {
                return Err(format!("sessions.{name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Why one more log stream is refused.
    pub fn log_refusal(&self) -> String {
        refusal(self.max_log_streams, "log streams", "max_log_streams")
    }

    /// Why one more exec session is refused.
    pub fn exec_refusal(&self) -> String {
        refusal(self.max_exec_sessions, "exec sessions", "max_exec_sessions")
    }
}

fn refusal(limit: usize, what: &str, setting: &str) -> String {
    format!(
        "this node already serves {limit} {what}, its limit: end one, or raise \
         [sessions] {setting} in the node policy (drover agent --policy FILE)"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_check() {
        let p: SessionPolicy = toml::from_str("").unwrap();
        assert_eq!(p, SessionPolicy::default());
        let p: SessionPolicy = toml::from_str("max_log_streams = 3").unwrap();
        assert_eq!(p.max_log_streams, 3);
        assert_eq!(p.max_exec_sessions, DEFAULT_MAX_EXEC_SESSIONS);
        assert!(p.log_refusal().contains("3 log streams"));
        assert!(p.log_refusal().contains("[sessions] max_log_streams"));
        let zero = SessionPolicy {
            max_exec_sessions: 0,
            ..SessionPolicy::default()
        };
        assert!(zero.check().unwrap_err().contains("max_exec_sessions"));
        assert!(toml::from_str::<SessionPolicy>("max_logs = 1").is_err());
    }
}
