//! The fuzz target on stable: the checks of `dns/fuzz` (its `src/lib.rs`,
//! included here) over the seed queries, the committed corpus
//! (`dns/fuzz/corpus/answer`) and the inputs that once broke the request
//! path (`dns/fuzz/regressions`).
//!
//! `write_seed_corpus` (ignored) writes the seeds into the corpus
//! directory; `dns/fuzz/run.sh` runs it before fuzzing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(name)
}

/// The files of `dir`, by name (none when it does not exist).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

fn replay(inputs: &[(String, Vec<u8>)]) {
    let handler = fuzz::handler();
    for (name, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| fuzz::check(&handler, bytes));
        assert!(outcome.is_ok(), "{name} broke the request path");
    }
}

#[test]
fn seeds_pass_the_checks() {
    let seeds = fuzz::seeds();
    assert!(seeds.len() > 50, "{} seeds", seeds.len());
    replay(&seeds);
}

#[test]
fn the_corpus_and_past_crashes_pass_the_checks() {
    let corpus = files(&dir("corpus/answer"));
    assert!(
        !corpus.is_empty(),
        "no corpus in {}",
        dir("corpus/answer").display()
    );
    replay(&corpus);
    replay(&files(&dir("regressions")));
}

/// The seeds really reach the zone's answers: a check that passed on
/// REFUSED or FORMERR alone would prove little.
#[test]
fn seeds_get_the_answers_they_ask_for() {
    use hickory_server::net::xfer::Protocol;
    use hickory_server::proto::op::{Message, ResponseCode};
    let handler = fuzz::handler();
    let seeds = fuzz::seeds();
    let answer = |name: &str, protocol| {
        let (_, bytes) = seeds.iter().find(|(n, _)| n == name).unwrap();
        let future = handler.answer_bytes(bytes, protocol);
        let response = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
            .unwrap();
        Message::from_vec(&response).unwrap()
    };
    let web = answer("a-web", Protocol::Udp);
    assert_eq!(web.answers.len(), 3);
    assert!(web.metadata.authoritative);
    let srv = answer("srv-web-tcp", Protocol::Udp);
    assert_eq!((srv.answers.len(), srv.additionals.len()), (2, 2));
    let big = answer("a-big", Protocol::Udp);
    assert!(big.metadata.truncation && big.answers.len() < 40);
    let big = answer("edns4096-srv-big", Protocol::Udp);
    assert!(big.metadata.truncation && !big.answers.is_empty());
    let big = answer("srv-big", Protocol::Tcp);
    assert_eq!(big.answers.len(), fuzz::BIG as usize);
    assert!(!big.metadata.truncation);
    let ptr = answer("ptr-v4", Protocol::Udp);
    assert_eq!(ptr.answers.len(), 2, "10.89.3.7 is web/a1 and dns/d5");
    let code = |name| answer(name, Protocol::Udp).metadata.response_code;
    assert_eq!(code("a-nxdomain"), ResponseCode::NXDomain);
    assert_eq!(code("a-outside"), ResponseCode::Refused);
    // BADVERS and BADSIG share the code 16 (RFC 6891, RFC 8945).
    assert_eq!(u16::from(code("edns-version-1")), 16);
    assert_eq!(code("two-questions"), ResponseCode::FormErr);
    assert_eq!(code("loop-self"), ResponseCode::FormErr);
}

/// Writes the seeds into `dns/fuzz/corpus/answer` (what `run.sh` does
/// before fuzzing).
#[test]
#[ignore = "writes into the source tree; run by dns/fuzz/run.sh"]
fn write_seed_corpus() {
    let dir = dir("corpus/answer");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in fuzz::seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
