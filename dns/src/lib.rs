//! Drover's DNS server for service discovery.

#![forbid(unsafe_code)]

pub mod answer;
pub mod config;
pub mod index;
pub mod resolv;

pub use index::{
    parse_endpoint, parse_key, Endpoint, Event, Index, IndexError, ServiceKey, SharedIndex,
    Transport, PREFIX,
};
