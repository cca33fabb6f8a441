//! The job model, which lives in `drover_model::job` (shared with the CLI
//! and tests through this path): validated job, group and task specs, their
//! limits, the validation of a submitted `pb::Job`, and the conversion back
//! to the wire.

pub use drover_model::job::*;
