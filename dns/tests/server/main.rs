//! The DNS server on loopback, asked by Debian's `dig`: every record kind
//! and flag, EDNS0 sizes, truncation and TCP, forwarding against a fake
//! upstream, malformed packets, and shutdown.
//!
//! One test binary, as hickory's own integration tests: the modules share
//! the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod forwarding;
mod harness;
mod malformed;
mod records;
mod sizes;
mod watch;
