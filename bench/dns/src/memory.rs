//! Memory of the DNS index: heap bytes counted by this binary's global
//! allocator before and after loading endpoints into an
//! [`Index`](drover_dns::Index), the way the watch loop does (one store
//! event per endpoint, each dropped once applied).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use anyhow::{ensure, Result};
use drover_dns::{Event, Index};

/// The system allocator, counting the bytes currently allocated.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn add(bytes: usize) {
    LIVE.fetch_add(bytes as isize, Ordering::Relaxed);
}

fn sub(bytes: usize) {
    LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, i.e. from
        // `System`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

/// Heap bytes live now.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// One shape of index to measure.
pub struct Shape {
    /// Services.
    pub services: u32,
    /// Instances per service.
    pub instances: u32,
    /// Tags per instance.
    pub tags: u32,
}

/// What an index of one shape holds.
pub struct Measured {
    /// Endpoints loaded.
    pub endpoints: usize,
    /// Heap bytes the index holds.
    pub bytes: isize,
    /// Bytes of the SkyDNS keys and values it was loaded from.
    pub store_bytes: usize,
}

/// Loads an index of `shape` and counts the bytes it keeps.
pub fn measure(shape: &Shape) -> Result<Measured> {
    let tags: Vec<String> = (0..shape.tags).map(|t| format!("\"t{t}\"")).collect();
    let tags = tags.join(",");
    let before = live();
    let mut index = Index::new();
    let mut store_bytes = 0;
    for s in 0..shape.services {
        for i in 0..shape.instances {
            let n = s * shape.instances + i;
            let key = format!(
                "/skydns/internal/drover/service/svc{s:05}/{:08x}",
                n.wrapping_mul(0x9e37_79b9)
            );
            let host = std::net::Ipv4Addr::from(0x0a60_0000 + n);
            let value = format!(
                r#"{{"host":"{host}","port":8080,"priority":10,"weight":10,"ttl":5,"protocol":"tcp","tags":[{tags}]}}"#
            );
            store_bytes += key.len() + value.len();
            let event = Event::Put {
                key: key.into_bytes(),
                value: value.into_bytes(),
            };
            index.apply(&event)?;
        }
    }
    let bytes = live() - before;
    let endpoints = index.len();
    ensure!(
        endpoints == (shape.services * shape.instances) as usize,
        "{endpoints} endpoints indexed"
    );
    drop(index);
    Ok(Measured {
        endpoints,
        bytes,
        store_bytes,
    })
}
