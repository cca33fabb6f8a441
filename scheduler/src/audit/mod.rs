//! The audit trail: every call that changes the cluster or runs a command
//! (and every such call refused), with who made it.
//!
//! The [`crate::access::AccessLayer`] records one [`AuditEntry`] per call
//! whose rule has an audit name, once the call has answered (or at once
//! when refused): the caller's identity, the method, the outcome. Handlers
//! add what the call acted on with [`note`] (the job's name, an exec's
//! command line). Each entry goes to the scheduler's log (tracing target
//! `drover::audit`) and to the store under `<prefix>audit/`, named by time
//! so that the oldest are pruned first: after each write, entries older
//! than [`AuditLimits::max_age`] and all but the newest
//! [`AuditLimits::max_entries`] are deleted. `drover audit` lists them
//! through [`AuditApi`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_store::{Kind, Store, StoreError};
use serde::{Deserialize, Serialize};

mod service;

pub use service::AuditApi;

/// How much of the trail the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// Entries older than this are deleted.
    pub max_age: Duration,
    /// At most this many entries are kept, the newest.
    pub max_entries: i64,
}

impl Default for AuditLimits {
    /// 30 days and 10,000 entries: a few MiB of the store at most.
    fn default() -> Self {
        AuditLimits {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_entries: 10_000,
        }
    }
}

/// One audited call, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEntry {
    /// When the call answered, in ms since the Unix epoch.
    pub time_unix_ms: i64,
    /// The certificate's common name, or `loopback`.
    pub caller: String,
    /// `viewer`, `operator`, `admin` or `agent`.
    pub role: String,
    /// `drover.v1.JobService/Stop`.
    pub method: String,
    /// `job stop`.
    pub action: String,
    /// What the call acted on (from [`note`]).
    #[serde(default)]
    pub target: String,
    /// More about it: an exec's command line (from [`note`]).
    #[serde(default)]
    pub detail: String,
    /// `ok`, or the gRPC code and message of the refusal or error.
    pub outcome: String,
    /// The caller's address.
    #[serde(default)]
    pub peer: String,
}

/// What a handler says about the call it serves, for the trail.
#[derive(Debug, Clone, Default)]
pub struct Note(Arc<Mutex<(String, String)>>);

impl Note {
    /// The target and detail noted so far.
    pub fn take(&self) -> (String, String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *g)
    }

    /// Notes an exec session: the allocation and task it runs in, its
    /// command line and the user it runs as.
    pub fn exec(&self, alloc: &str, task: &str, user: &str, command: &[String]) {
        let mut target = format!("alloc {alloc}");
        if !task.is_empty() {
            target.push_str(&format!(" task {task}"));
        }
        let mut detail = format!("command: {}", command_line(command));
        if !user.is_empty() {
            detail.push_str(&format!(" (as user {user})"));
        }
        self.set(target, detail);
    }

    fn set(&self, target: String, detail: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (target, detail);
    }
}

/// Notes what an audited call acts on (`job web`) and anything more
/// (`command: sh -c 'ls /'`); nothing for a call that is not audited.
pub fn note<T>(req: &tonic::Request<T>, target: impl Into<String>, detail: impl Into<String>) {
    if let Some(n) = req.extensions().get::<Note>() {
        n.set(target.into(), detail.into());
    }
}

/// A command line as a shell would read it back: words with anything but
/// `[A-Za-z0-9_./=:,+@%-]` single-quoted.
pub fn command_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_./=:,+@%-".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The trail in the store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    limits: AuditLimits,
}

/// Longest detail or outcome kept, in bytes (a command line can be long).
const MAX_TEXT: usize = 4096;

fn clip(s: String) -> String {
    crate::trail::clip(s, MAX_TEXT)
}

/// The record name of an entry: its time, 16 digits, so that names sort in
/// time order, and a random part so that two schedulers never collide.
fn record_name(time_unix_ms: i64) -> String {
    crate::trail::time_name(time_unix_ms, rand::random::<u64>())
}

impl AuditLog {
    /// The trail in `store`, bounded by `limits`.
    pub fn new(store: Store, limits: AuditLimits) -> AuditLog {
        AuditLog { store, limits }
    }

    /// Logs `entry`, writes it to the store and prunes the trail as of the
    /// entry's time.
    pub async fn record(&self, mut entry: AuditEntry) -> Result<(), StoreError> {
        entry.detail = clip(entry.detail);
        entry.outcome = clip(entry.outcome);
        tracing::info!(
            target: "drover::audit",
            caller = %entry.caller,
            role = %entry.role,
            method = %entry.method,
            action = %entry.action,
            target = %entry.target,
            detail = %entry.detail,
            outcome = %entry.outcome,
            peer = %entry.peer,
            "audit"
        );
        self.store
            .put(Kind::Audit, &record_name(entry.time_unix_ms), &entry)
            .await?;
        self.prune(entry.time_unix_ms).await?;
        Ok(())
    }

    /// Deletes the entries older than the age limit as of `now_unix_ms`,
    /// then the oldest past the count limit; returns how many went.
    pub async fn prune(&self, now_unix_ms: i64) -> Result<i64, StoreError> {
        let age = i64::try_from(self.limits.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_unix_ms.saturating_sub(age).max(0);
        let old = self
            .store
            .delete_before(Kind::Audit, &crate::trail::time_bound(cutoff))
            .await?;
        let over = self
            .store
            .keep_last(Kind::Audit, self.limits.max_entries)
            .await?;
        if old + over > 0 {
            tracing::debug!(deleted = old + over, "audit trail pruned");
        }
        Ok(old + over)
    }

    /// The entries at or after `since_unix_ms`, oldest first; the newest
    /// `limit` of them when `limit` is not 0.
    pub async fn list(
        &self,
        since_unix_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let from = crate::trail::time_bound(since_unix_ms);
        let listing = self
            .store
            .list_prefix::<AuditEntry>(Kind::Audit, "")
            .await?;
        let mut out: Vec<AuditEntry> = listing
            .items
            .into_iter()
            .filter(|v| v.name >= from)
            .map(|v| v.value)
            .collect();
        if limit > 0 && out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split_or_expand() {
        let words: Vec<String> = ["sh", "-c", "echo 'hi' $HOME", "a=b", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_line(&words),
            r#"sh -c 'echo '\''hi'\'' $HOME' a=b ''"#
        );
    }

    #[test]
    fn record_names_sort_in_time_order() {
        let (a, b) = (record_name(999), record_name(1000));
        assert!(a < b, "{a} {b}");
        assert!(record_name(5_000).starts_with(&format!("{:016}", 5_000)));
    }

    #[test]
    fn long_texts_are_clipped_on_a_char_boundary() {
        let s = clip("é".repeat(MAX_TEXT));
        assert!(s.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn notes_reach_the_trail_only_when_a_call_is_audited() {
        let mut req = tonic::Request::new(());
        note(&req, "job web", "");
        let n = Note::default();
        req.extensions_mut().insert(n.clone());
        note(&req, "job web", "version 2");
        assert_eq!(n.take(), ("job web".to_string(), "version 2".to_string()));
    }
}
