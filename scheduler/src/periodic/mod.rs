//! Periodic batch jobs: a parent job with a `periodic` schedule places
//! nothing itself; at each tick of its cron expression the scheduler
//! launches a child, a one-off batch job named `<job>/periodic-<unix
//! seconds>` with the parent's groups.
//!
//! - [`tick`]: the pure rules (which tick is due, overlap, missed ticks,
//!   which finished children to remove), tested on a fake clock;
//! - [`launch`]: the store side: a child and the parent's launch record
//!   (`periodic/<job>`: the last tick handled) written in one guarded
//!   transaction, so a tick launches at most once, across restarts too;
//!   a restarted scheduler launches only the latest missed tick;
//! - `timer`: the launcher, started with the gRPC server, a timer that
//!   sleeps until the next tick of any periodic job (never polling) and
//!   wakes early only when a periodic job is submitted, changed or
//!   stopped. Should two schedulers run it, the guarded writes still
//!   launch each tick once.
//!
//! Naming: a child's name is the only job name that is not a DNS label;
//! clients may name it (`drover job status web/periodic-1700000000`) but
//! never submit one. In the store it is the key
//! `/drover/jobs/web/periodic-1700000000`, its allocations are named
//! `web/periodic-1700000000.main[0]` (their ids are unchanged), and their
//! host name replaces the `/` with `-`. Services are named by the group,
//! not the job: a child's instances register under the service names the
//! parent declares, like any job's.
//!
//! Stopping the parent stops the launching; children already launched run
//! to completion (`drover job stop <child>` stops one). The newest
//! [`tick::KEEP_CHILDREN`] finished children are kept, older ones removed
//! with their allocation records after each launch; at most
//! [`tick::MAX_RUNNING_CHILDREN`] run at once (further ticks are skipped),
//! so a periodic job cannot fill the store.

pub mod launch;
pub mod tick;
mod timer;

pub use launch::{children_of, launching, ForceError, Pass};
pub use tick::{LaunchRecord, KEEP_CHILDREN, MAX_RUNNING_CHILDREN};
