//! Which scheduler replica to dial: `--scheduler` lists them (comma
//! separated); only the leader accepts the agent's stream, and a follower's
//! refusal names it (`UNAVAILABLE`, metadata `drover-leader: HOST:PORT`).
//! The agent dials the named leader next; without a hint (no leader
//! elected yet, or the stream broke) it moves on to the next address in
//! turn. Pure: the session reports what happened and asks where to go.

use std::time::Duration;

use tonic::Status;

/// The metadata key a follower names the leader's address under.
pub const LEADER_METADATA: &str = "drover-leader";

/// Backoff after a failed session, doubled up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait while replicas answer but none leads yet (an
/// election): short, so the agent joins the new leader within a moment of
/// its election.
const ELECTION_BACKOFF: Duration = Duration::from_millis(500);

/// The replicas and where to dial next.
#[derive(Debug, Clone)]
pub struct Schedulers {
    addrs: Vec<String>,
    next: usize,
    /// The leader a follower named: dialled next, once.
    hint: Option<String>,
    /// The address that last failed to answer: a follower naming it is
    /// most likely naming a dead leader whose key has not lapsed yet.
    failed: Option<String>,
    /// Failures in a row since a replica last answered: while replicas
    /// answer (an election, a dead leader's key not lapsed yet) a failed
    /// address is tried again soon; once every address has failed twice
    /// in a row, the backoff grows to [`MAX_BACKOFF`].
    quiet: usize,
    https: bool,
    backoff: Duration,
}

/// How a session ended, as far as choosing the next scheduler goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A follower refused the stream, naming the leader or not.
    Follower(Option<String>),
    /// The stream was up (registered) and broke.
    AfterRegister,
    /// Anything else: unreachable, refused otherwise, broken at once.
    Failed,
}

impl Schedulers {
    /// The comma-separated URLs of `list` (at least one: an empty list is
    /// kept as given, for the connection to fail naming it).
    pub fn new(list: &str) -> Schedulers {
        let mut addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            addrs.push(list.to_string());
        }
        let https = addrs.iter().all(|a| a.starts_with("https://"));
        Schedulers {
            addrs,
            next: 0,
            hint: None,
            failed: None,
            quiet: 0,
            https,
            backoff: MIN_BACKOFF,
        }
    }

    /// The URL to dial now.
    pub fn pick(&mut self) -> String {
        if let Some(hint) = self.hint.take() {
            return hint;
        }
        let addr = self.addrs[self.next % self.addrs.len()].clone();
        self.next = (self.next + 1) % self.addrs.len();
        addr
    }

    /// Learns from how a session with `addr` ended; returns how long to
    /// wait before the next attempt.
    pub fn ended(&mut self, addr: &str, how: &Ended) -> Duration {
        if *how == Ended::Failed {
            self.quiet += 1;
        } else {
            self.quiet = 0;
        }
        match how {
            Ended::Follower(Some(leader)) => {
                let url = self.url(leader);
                // A follower naming a leader that just failed to answer
                // (its key outlives it until the lease lapses) is skipped
                // once, then believed again.
                if self.failed.take().as_deref() == Some(url.as_str()) || url == addr {
                    return self.wait(ELECTION_BACKOFF);
                }
                self.hint = Some(url);
                self.backoff = MIN_BACKOFF;
                Duration::ZERO
            }
            Ended::Follower(None) => self.wait(ELECTION_BACKOFF),
            Ended::AfterRegister => {
                self.failed = None;
                self.backoff = MIN_BACKOFF;
                MIN_BACKOFF
            }
            Ended::Failed => {
                self.failed = Some(addr.to_string());
                if self.quiet <= 2 * self.addrs.len() {
                    self.wait(ELECTION_BACKOFF)
                } else {
                    self.wait(MAX_BACKOFF)
                }
            }
        }
    }

    /// The current backoff (then doubled, up to `cap`).
    fn wait(&mut self, cap: Duration) -> Duration {
        let now = self.backoff.min(cap);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        now
    }

    fn url(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_string()
        } else if self.https {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        }
    }
}

/// The leader a refusal names, if it is a follower's refusal.
pub fn follower_refusal(status: &Status) -> Option<Option<String>> {
    if status.code() != tonic::Code::Unavailable || !status.message().starts_with("not the leader")
    {
        return None;
    }
    Some(
        status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dials_in_turn_and_follows_a_hint_once() {
        let mut s = Schedulers::new("http://a:1, http://b:2");
        assert_eq!(s.pick(), "http://a:1");
        let wait = s.ended("http://a:1", &Ended::Follower(Some("c:3".into())));
        assert_eq!(wait, Duration::ZERO);
        assert_eq!(s.pick(), "http://c:3");
        s.ended("http://c:3", &Ended::AfterRegister);
        assert_eq!(s.pick(), "http://b:2");
        assert_eq!(s.pick(), "http://a:1");
    }

    #[test]
    fn a_hint_at_the_address_that_failed_is_not_followed() {
        let mut s = Schedulers::new("https://a:1,https://b:2");
        assert_eq!(s.pick(), "https://a:1");
        let wait = s.ended("https://a:1", &Ended::Follower(Some("a:1".into())));
        assert!(wait > Duration::ZERO);
        assert_eq!(s.pick(), "https://b:2");
    }

    #[test]
    fn a_hint_at_a_leader_that_just_failed_is_skipped_once() {
        let mut s = Schedulers::new("http://a:1,http://b:2");
        assert_eq!(s.pick(), "http://a:1");
        s.ended("http://a:1", &Ended::Failed);
        assert_eq!(s.pick(), "http://b:2");
        let wait = s.ended("http://b:2", &Ended::Follower(Some("a:1".into())));
        assert!(wait > Duration::ZERO && wait <= ELECTION_BACKOFF);
        assert_eq!(s.pick(), "http://a:1");
        s.ended("http://a:1", &Ended::Failed);
        assert_eq!(s.pick(), "http://b:2");
    }

    #[test]
    fn an_election_is_waited_for_briefly_and_failures_back_off() {
        let mut s = Schedulers::new("http://a:1");
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(s.ended("http://a:1", &Ended::Follower(None)));
        }
        assert!(waits.iter().all(|w| *w <= ELECTION_BACKOFF), "{waits:?}");
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            last = s.ended("http://a:1", &Ended::Failed);
        }
        assert_eq!(last, MAX_BACKOFF, "nobody answers: the backoff grows");
        assert_eq!(s.ended("http://a:1", &Ended::AfterRegister), MIN_BACKOFF);
    }

    #[test]
    fn a_dead_leader_is_retried_soon_while_a_follower_answers() {
        let mut s = Schedulers::new("http://a:1,http://b:2");
        let mut waits = Vec::new();
        for _ in 0..10 {
            let addr = s.pick();
            let how = if addr.ends_with(":1") {
                Ended::Failed
            } else {
                Ended::Follower(Some("a:1".into()))
            };
            waits.push(s.ended(&addr, &how));
        }
        assert!(waits.iter().all(|w| *w <= ELECTION_BACKOFF), "{waits:?}");
    }

    #[test]
    fn only_a_followers_refusal_is_read() {
        let mut st = Status::unavailable("not the leader; the leader is at b:2");
        st.metadata_mut()
            .insert(LEADER_METADATA, "b:2".parse().unwrap());
        assert_eq!(follower_refusal(&st), Some(Some("b:2".into())));
        assert_eq!(
            follower_refusal(&Status::unavailable("not the leader; no leader")),
            Some(None)
        );
        assert_eq!(
            follower_refusal(&Status::unavailable("tcp connect error")),
            None
        );
        assert_eq!(follower_refusal(&Status::permission_denied("no")), None);
    }
}
