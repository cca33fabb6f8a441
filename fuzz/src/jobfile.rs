//! The job file path: bytes -> UTF-8 -> TOML ([`jobfile::parse`], as the
//! CLI does) -> the scheduler's size check and validation
//! ([`JobSpec::try_from`], as `JobService.Submit` does) -> for a valid
//! job, what the scheduler does next with it: the wire form sent back to
//! clients and agents, the JSON record in the store, the store record's
//! size check, and a periodic job's next fire times.
//!
//! Checked beyond "no panic":
//! - a parse error names the file;
//! - a refused job lists at least one problem;
//! - a valid job converted to the wire validates again, to the same spec
//!   (what `job get`, `job revert` and the agents receive);
//! - a valid job's JSON (the store's record) reads back to the same spec;
//! - a valid periodic job's schedule parses again and is evaluated
//!   without error from the epoch and from a time near the end of what
//!   `jiff` represents.

use drover_proto::v1 as pb;
use drover_scheduler::cluster::limits;
use drover_scheduler::job::JobSpec;
use drover_scheduler::jobfile;

/// The name the checks give the input in error messages.
pub const PATH: &str = "fuzz.toml";

/// Runs `data` through the job file path, panicking on a broken promise.
pub fn check(data: &[u8]) {
    // `drover job run` reads the file as UTF-8 and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let job = match jobfile::parse(PATH, text) {
        Ok(job) => job,
        Err(e) => {
            assert!(
                e.to_string().starts_with(&format!("{PATH}: ")),
                "a parse error names the file: {e}"
            );
            return;
        }
    };
    // What the scheduler does first with a submitted job.
    if limits::check_wire_size(&job.name, prost::Message::encoded_len(&job)).is_err() {
        return;
    }
    match JobSpec::try_from(&job) {
        Ok(spec) => accepted(&spec),
        Err(e) => assert!(!e.problems.is_empty(), "a refused job names a problem"),
    }
}

/// What the scheduler relies on of a job it accepted.
fn accepted(spec: &JobSpec) {
    let wire = pb::Job::from(spec);
    match JobSpec::try_from(&wire) {
        Ok(again) => assert_eq!(&again, spec, "the wire form validates to the same job"),
        Err(e) => panic!("the wire form of a valid job is refused: {e}"),
    }
    let json = serde_json::to_vec(spec).unwrap_or_else(|e| panic!("a valid job is JSON: {e}"));
    let back: JobSpec = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("a valid job's JSON reads back: {e}"));
    assert_eq!(&back, spec, "the store's record reads back to the same job");
    let _ = limits::check_record_size(&format!("/drover/jobs/{}", spec.name), spec);
    if let Some(periodic) = &spec.periodic {
        let schedule = periodic
            .schedule()
            .unwrap_or_else(|e| panic!("a valid job's schedule parses again: {e}"));
        for at in [0, 1_700_000_000, 253_402_200_000] {
            let _ = schedule.next_after(at);
            let _ = schedule.latest_at_or_before(at);
        }
    }
}

/// The seed job files: the examples and `fuzz/seeds/jobfile` (job files
/// taken from the tests, and a few that use every field), by name.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["examples", "fuzz/seeds/jobfile"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_some_and(|x| x == "toml") {
                if let (Some(name), Ok(bytes)) = (path.file_name(), std::fs::read(&path)) {
                    out.push((format!("{dir}/{}", name.to_string_lossy()), bytes));
                }
            }
        }
    }
    out.sort();
    out
}
