//! The checks of the fuzz targets, shared by the targets
//! (`fuzz_targets/*.rs`) and the stable test that replays the seeds, the
//! corpus and past crashes (`tests/tests/fuzz_corpus.rs` includes this
//! file and the two below).
//!
//! - [`jobfile`]: bytes -> TOML -> `pb::Job` -> `JobSpec`, the path of
//!   `drover job run` (the CLI parses, the scheduler validates whatever it
//!   is sent), and what the scheduler then does with a valid job.
//! - [`assignment`]: bytes -> `pb::SchedulerMessage` -> the agent's
//!   decoded assignments -> its plan and each task's runtime spec, the path
//!   of what a scheduler (or anything that gets to talk to the agent as
//!   one) sends a node.
//!
//! Beyond "no panic, no hang, no allocation over libFuzzer's bound", each
//! check holds the result to what the rest of Drover relies on (see the
//! modules).

pub mod assignment;
pub mod jobfile;
