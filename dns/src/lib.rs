//! Drover's DNS server for service discovery.
//!
//! Every allocation of a service is published in the store under the
//! SkyDNS etcd layout (the one CoreDNS's `etcd` plugin reads):
//! `/skydns/internal/drover/service/web/<alloc-id>` holds
//! `{"host":"10.89.3.7","port":8080,"priority":10,"weight":10,"ttl":5}`,
//! so that `web.service.drover.internal.` names every allocation of `web`
//! and `<alloc-id>.web.service.drover.internal.` one of them. Tasks reach
//! the server on their bridge address, which their `/etc/resolv.conf`
//! names, with `service.drover.internal` as the search domain.
//!
//! The crate will hold, each in its own module:
//!
//! - [`index`]: the in-memory index of those endpoints, fed with the
//!   store's put and delete events. Pure: no I/O, no clock. This is all the
//!   crate holds so far.
//! - the watch loop that loads the `/skydns/` prefix, then applies its
//!   events to the index; thin, as it only moves events from the store.
//! - the request handler: A, AAAA and SRV answers read from the index.
//! - the server: it takes already-bound UDP and TCP sockets and a shutdown
//!   token, so that tests bind port 0.

#![forbid(unsafe_code)]

pub mod index;

pub use index::{
    parse_endpoint, parse_key, Endpoint, Event, Index, IndexError, ServiceKey, SharedIndex,
    Transport, PREFIX,
};
