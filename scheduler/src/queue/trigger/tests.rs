//! The trigger's rules, driven with a made-up clock.

use super::*;

const PERIOD: Duration = Duration::from_secs(60);
const D: Duration = DEBOUNCE;

/// A trigger past its first full pass, with `jobs` waiting, and the time.
fn settled(jobs: &[&str]) -> (Trigger, Instant) {
    let t0 = Instant::now();
    let mut t = Trigger::new(t0, PERIOD, D);
    assert_eq!(
        t.poll(t0),
        Some(Pass::Full),
        "the first full pass is at start"
    );
    for j in jobs {
        t.waits(j, true);
    }
    t.done(t0);
    (t, t0)
}

/// Every pass `t` gives between `from` and `to`, polling every `step` as a
/// caller would and ending each pass at once.
fn passes(t: &mut Trigger, from: Instant, to: Instant, step: Duration) -> Vec<(Duration, Pass)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        if let Some(p) = t.poll(now) {
            out.push((now - from, p));
            t.done(now);
        }
        now += step;
    }
    out
}

#[test]
fn a_burst_of_events_gives_one_pass_of_the_waiting_jobs_one_debounce_later() {
    let (mut t, t0) = settled(&["a", "b"]);
    for i in 0..500u32 {
        let why = if i % 2 == 0 {
            Capacity::AllocEnded
        } else {
            Capacity::Stopped
        };
        t.capacity(t0 + Duration::from_micros(u64::from(i) * 100), why);
    }
    assert_eq!(t.poll(t0 + D / 2), None, "not before the debounce");
    assert_eq!(t.next_wake(), Some(t0 + D));
    let got = passes(&mut t, t0, t0 + 10 * D, Duration::from_millis(5));
    assert_eq!(
        got,
        [(D, Pass::Waiting(vec!["a".into(), "b".into()]))],
        "one pass for the burst, with every waiting job"
    );
}

#[test]
fn no_retry_without_an_event_until_the_periodic_pass() {
    let (mut t, t0) = settled(&["a"]);
    t.capacity(t0, Capacity::NodeReady);
    let first = t.poll(t0 + D);
    assert_eq!(first, Some(Pass::Waiting(vec!["a".into()])));
    // The job still does not fit: it stays waiting, and nothing happened.
    t.waits("a", true);
    t.done(t0 + D);
    assert_eq!(t.next_wake(), Some(t0 + PERIOD), "next is the backstop");
    let got = passes(
        &mut t,
        t0 + D,
        t0 + PERIOD - Duration::from_millis(1),
        D / 4,
    );
    assert!(got.is_empty(), "retried without an event: {got:?}");
    assert_eq!(
        t.poll(t0 + PERIOD),
        Some(Pass::Full),
        "the periodic backstop"
    );
}

#[test]
fn the_periodic_pass_comes_every_period_without_events() {
    let t0 = Instant::now();
    let mut t = Trigger::new(t0, PERIOD, D);
    let got = passes(&mut t, t0, t0 + 3 * PERIOD, Duration::from_secs(1));
    let at: Vec<Duration> = got.iter().map(|(at, _)| *at).collect();
    assert_eq!(at, [Duration::ZERO, PERIOD, 2 * PERIOD, 3 * PERIOD]);
    assert!(got.iter().all(|(_, p)| *p == Pass::Full));
}

#[test]
fn events_during_a_pass_give_one_more_pass_no_sooner_than_a_debounce_after_it() {
    let (mut t, t0) = settled(&["a"]);
    t.capacity(t0, Capacity::AllocEnded);
    assert!(matches!(t.poll(t0 + D), Some(Pass::Waiting(_))));
    // While it runs: a burst, and time passes; nothing else starts.
    for i in 0..50u32 {
        t.capacity(
            t0 + D + Duration::from_millis(u64::from(i)),
            Capacity::AllocEnded,
        );
    }
    assert_eq!(t.next_wake(), None, "nothing to wait for while busy");
    assert_eq!(t.poll(t0 + 5 * D), None, "one pass at a time");
    let end = t0 + 5 * D;
    t.done(end);
    assert_eq!(t.next_wake(), Some(end + D));
    let got = passes(&mut t, end, end + 20 * D, Duration::from_millis(5));
    assert_eq!(got, [(D, Pass::Waiting(vec!["a".into()]))]);
}

#[test]
fn events_with_nothing_waiting_run_no_pass_and_placed_jobs_leave_the_set() {
    let (mut t, t0) = settled(&["a", "b"]);
    t.waits("a", false);
    t.waits("b", false);
    t.capacity(t0, Capacity::DrainLifted);
    assert_eq!(t.poll(t0 + D), None);
    assert_eq!(t.next_wake(), Some(t0 + PERIOD), "the event is spent");
    t.waits("b", true);
    t.capacity(t0 + 2 * D, Capacity::NodeReady);
    assert_eq!(t.poll(t0 + 3 * D), Some(Pass::Waiting(vec!["b".into()])));
    assert_eq!(t.waiting().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn a_full_pass_serves_the_events_before_it_and_can_be_asked_for_sooner() {
    let (mut t, t0) = settled(&["a"]);
    t.capacity(t0, Capacity::NodeReady);
    t.full_soon(t0);
    assert_eq!(t.poll(t0 + D), Some(Pass::Full), "the full pass wins");
    t.done(t0 + D);
    let got = passes(&mut t, t0 + D, t0 + D + PERIOD, Duration::from_millis(10));
    assert_eq!(
        got,
        [(PERIOD, Pass::Full)],
        "the event was served by the full pass; the next is a period later"
    );
}
