//! Rescheduling on the wire: for a failed allocation its job still wants,
//! when it will be replaced or why it will not (its lineage is in its own
//! record's wire form).

use drover_proto::v1 as pb;

use super::{outlook, Outlook, EXHAUSTED};
use crate::job::JobSpec;
use crate::state::AllocRecord;

/// Adds to `out`, the wire form of `a`, what becomes of it if it is a
/// failed allocation `job` still wants.
pub fn annotate(job: &JobSpec, a: &AllocRecord, out: &mut pb::Allocation) {
    match outlook(job, a) {
        Some(Outlook::Replace(l)) => out.reschedule_unix_ms = l.eligible_unix_ms,
        Some(Outlook::Exhausted) => out.not_rescheduled = EXHAUSTED.into(),
        Some(Outlook::Never(why)) => out.not_rescheduled = why.into(),
        None => {}
    }
}

/// The wire form of `a`, annotated when its job is known.
pub fn to_pb(job: Option<&JobSpec>, a: &AllocRecord) -> pb::Allocation {
    let mut out = pb::Allocation::from(a);
    if let Some(job) = job {
        annotate(job, a, &mut out);
    }
    out
}
