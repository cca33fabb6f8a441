//! The fuzz targets of `fuzz/` on stable: the checks of `fuzz/src`
//! (included here) over the seeds, the committed corpora
//! (`fuzz/corpus/jobfile`, `fuzz/corpus/assignment`) and the inputs that
//! once broke a check (`fuzz/regressions/*`).
//!
//! `write_seed_corpus` (ignored) writes the seeds into the corpus
//! directories; `fuzz/run.sh` runs it before fuzzing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod fuzz;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
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

fn replay(inputs: &[(String, Vec<u8>)], check: fn(&[u8])) {
    for (name, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| check(bytes));
        assert!(outcome.is_ok(), "{name} broke the check");
    }
}

#[test]
fn job_file_seeds_pass_the_checks() {
    let seeds = fuzz::jobfile::seeds();
    assert!(seeds.len() > 30, "{} seeds", seeds.len());
    replay(&seeds, fuzz::jobfile::check);
}

#[test]
fn job_file_corpus_and_past_crashes_pass_the_checks() {
    let corpus = files(&dir("corpus/jobfile"));
    assert!(
        !corpus.is_empty(),
        "no corpus in {}",
        dir("corpus/jobfile").display()
    );
    replay(&corpus, fuzz::jobfile::check);
    replay(&files(&dir("regressions/jobfile")), fuzz::jobfile::check);
}

#[test]
fn assignment_seeds_pass_the_checks() {
    let seeds = fuzz::assignment::seeds();
    assert!(seeds.len() > 20, "{} seeds", seeds.len());
    replay(&seeds, fuzz::assignment::check);
}

#[test]
fn assignment_corpus_and_past_crashes_pass_the_checks() {
    let corpus = files(&dir("corpus/assignment"));
    assert!(
        !corpus.is_empty(),
        "no corpus in {}",
        dir("corpus/assignment").display()
    );
    replay(&corpus, fuzz::assignment::check);
    replay(
        &files(&dir("regressions/assignment")),
        fuzz::assignment::check,
    );
}

/// The seeds reach what they are for: every example and the seeds that
/// use every field are valid jobs (a fuzzer that starts only from refused
/// jobs would prove little of the rest of the path), and the agent
/// decodes, refusing none, the assignments of every job the scheduler
/// accepts.
#[test]
fn valid_seed_jobs_are_accepted_and_their_assignments_decode_on_the_agent() {
    use drover_agent::assignment::decode_all;
    use drover_proto::v1 as pb;
    use drover_scheduler::job::JobSpec;
    let mut valid = Vec::new();
    for (name, bytes) in fuzz::jobfile::seeds() {
        let text = String::from_utf8(bytes).unwrap();
        let spec = drover_scheduler::jobfile::parse(&name, &text)
            .map_err(|e| e.to_string())
            .and_then(|job| JobSpec::try_from(&job).map_err(|e| e.to_string()));
        let must = name.starts_with("examples/")
            || ["every-field", "periodic-batch", "system", "long-names"]
                .iter()
                .any(|s| name.ends_with(&format!("/{s}.toml")));
        match spec {
            Ok(spec) => valid.push((name, spec)),
            Err(e) => assert!(!must, "{name} is not a valid job: {e}"),
        }
    }
    assert!(valid.len() >= 20, "{} valid seed jobs", valid.len());
    for (name, spec) in &valid {
        let Some(pb::scheduler_message::Msg::Assignments(list)) =
            fuzz::assignment::assignments_of(spec).msg
        else {
            unreachable!()
        };
        let (ok, refused) = decode_all(&list.allocations);
        assert!(refused.is_empty(), "{name}: the agent refused {refused:?}");
        assert_eq!(ok.len(), 2 * spec.groups.len(), "{name}");
    }
}

/// Writes the seeds into `fuzz/corpus/*` (what `fuzz/run.sh` does before
/// fuzzing).
#[test]
#[ignore = "writes into the source tree; run by fuzz/run.sh"]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("jobfile", fuzz::jobfile::seeds()),
        ("assignment", fuzz::assignment::seeds()),
    ] {
        let dir = dir(&format!("corpus/{target}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            let name = name.replace('/', "-");
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
