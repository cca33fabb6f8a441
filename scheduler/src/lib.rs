//! Drover's scheduler, by responsibility, from the pure rules up to the
//! gRPC edge (each module depends only on those listed before it):
//!
//! - the model: [`job`] validates submissions, [`jobfile`] parses TOML job
//!   files, [`state`] holds the records kept in etcd;
//! - pure rules, no I/O: [`subnet`] cuts and assigns node task subnets,
//!   [`reconcile`] says what to place or stop for a job, [`placement`]
//!   where (a chain of feasibility filters, then scorers),
//!   [`reschedule`] when a failed allocation is replaced,
//!   [`transitions`] what a stop, a status report, a lost node, a finished
//!   batch job, a registration or a drain make of the records,
//!   [`discovery`] what a node may report and which SkyDNS records the
//!   state calls for, [`deploy`] how a changed group is rolled out (the
//!   pure step of a deployment);
//! - [`queue`]: placements that wait, pure too: what a plan leaves
//!   pending per group, and when capacity events call for planning the
//!   waiting jobs again;
//! - [`cluster`]: the state as stored, every write one guarded transaction
//!   retried on conflict;
//! - the process's memory: the registry of connected agents, the log and
//!   exec relays between CLI and agent streams, the peer view, and the
//!   [`registrar`] that writes the discovery records bound to each node's
//!   lease, and the timers of running deployments;
//! - [`core::Core`] composes them; [`periodic`] launches periodic jobs'
//!   children on it (pure rules, their store writes, the leader's timer);
//!   the gRPC services ([`service`], with [`auth`] and [`access`] deciding
//!   who may call what, [`audit`] recording who changed what, and [`gate`]
//!   whether this replica serves at all, [`load`] what one client may
//!   hold open) are the edge; [`leader`] runs a replica in the election,
//!   serving only while it leads; [`web`] serves the read-only status
//!   page; [`metrics`] counts placements and reads the cluster's gauges
//!   for Prometheus.

pub mod access;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod core;
mod counters;
pub mod deploy;
pub mod discovery;
pub mod events;
pub mod gate;
pub mod image_pins;
pub mod job;
pub mod job_status;
pub mod jobfile;
pub mod leader;
pub mod load;
pub mod metrics;
mod peers;
pub mod periodic;
pub mod placement;
pub mod queue;
pub mod reconcile;
pub mod registrar;
mod registry;
mod relay;
pub mod reschedule;
pub mod returning;
pub mod service;
pub mod state;
pub mod subnet;
mod sync;
#[cfg(test)]
mod testkit;
mod timers;
mod trail;
pub mod transitions;
pub mod web;

pub use crate::core::{Core, Discovery, Timing};
pub use crate::service::{serve, ServeError};
