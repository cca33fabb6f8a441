//! Drover's shared domain model: the types the scheduler and the agent
//! must agree on, so that each exists once.
//!
//! - [`ipnet`]: [`Ipv4Net`], an IPv4 network in CIDR form (cluster CIDR,
//!   node subnets, peer routes).
//! - [`clock`]: [`now_ms`], the wall clock as records carry it.
//! - [`wire`]: the closed sets of names on the wire and in the store (job
//!   kind, allocation status, desired state, task status, network mode,
//!   rootfs and volume kinds, service protocol, check type and check
//!   status), each with its string form.
//! - [`job`]: the validated job, group, task and service specs (a
//!   group's services and their health checks: `job/service.rs`) and
//!   their validation from a submitted `pb::Job`, by level in
//!   `job/validate/` (re-exported as `drover_scheduler::job`).
//! - [`check`]: [`CheckState`], one health check's latest result as the
//!   agent reports it and the allocation record keeps it.
//! - [`event`]: [`EventType`], the types of allocation events.
//! - [`image_ref`]: image references (`nginx:1.25`) parsed and
//!   normalised as Docker does.
//! - [`skydns`]: service-discovery keys and values in the SkyDNS layout.
//!
//! Nothing here does I/O; protobuf types appear only in conversions.

#![forbid(unsafe_code)]

pub mod check;
pub mod clock;
pub mod event;
pub mod image_ref;
pub mod ipnet;
pub mod job;
pub mod skydns;
pub mod wire;

pub use check::CheckState;
pub use clock::now_ms;
pub use event::EventType;
pub use ipnet::{InvalidNet, Ipv4Net};
pub use wire::{
    AllocStatus, CheckKind, CheckStatus, DesiredState, JobKind, NetworkMode, Protocol, RootfsKind,
    TaskStatus, UnknownValue, VolumeKind,
};
