//! Registry clients kept between pulls.
//!
//! A new client reads the system's root certificates, and its first
//! request opens a new connection with a TLS handshake: a deployment's
//! first start by tag paid both for one manifest and one config request.
//! [`Clients`] keeps one client per registry, protocol, extra CA (by
//! content) and credentials (by hash): a rotated CA file or changed
//! credentials get a client of their own, and a kept one keeps its
//! pooled connections (reqwest's idle timeout closes them) and its
//! registry tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use sha2::{Digest, Sha256};

/// Clients kept at most; past it the table starts over.
const KEPT: usize = 64;

/// The kept clients; clones share them.
#[derive(Clone, Default)]
pub(super) struct Clients(Arc<Mutex<HashMap<String, Client>>>);

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |k| k.len());
        write!(f, "Clients({n} kept)")
    }
}

impl Clients {
    /// The client for `registry` over `plain` HTTP or HTTPS trusting
    /// `ca` too, authenticating with `auth`; made by `make` the first
    /// time.
    pub(super) fn get(
        &self,
        registry: &str,
        plain: bool,
        ca: &[u8],
        auth: &RegistryAuth,
        make: impl FnOnce() -> Client,
    ) -> Client {
        let key = key(registry, plain, ca, auth);
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = kept.get(&key) {
            return client.clone();
        }
        if kept.len() >= KEPT {
            kept.clear();
        }
        let client = make();
        kept.insert(key, client.clone());
        client
    }
}

/// What tells clients apart, hashed (no credential is kept in the key).
fn key(registry: &str, plain: bool, ca: &[u8], auth: &RegistryAuth) -> String {
    let mut h = Sha256::new();
    for part in [
        registry.as_bytes(),
        if plain { b"http" } else { b"https" },
        ca,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    match auth {
        RegistryAuth::Basic(user, password) => {
            h.update(b"basic");
            for part in [user.as_bytes(), password.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        RegistryAuth::Bearer(token) => {
            h.update(b"bearer");
            h.update(token.as_bytes());
        }
        RegistryAuth::Anonymous => h.update(b"anonymous"),
    }
    super::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_per_registry_protocol_ca_and_credentials() {
        // As Session::new does before making a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let clients = Clients::default();
        let made = std::cell::Cell::new(0);
        let get = |registry: &str, plain: bool, ca: &[u8], auth: &RegistryAuth| {
            clients.get(registry, plain, ca, auth, || {
                made.set(made.get() + 1);
                Client::default()
            })
        };
        let basic = |p: &str| RegistryAuth::Basic("u".into(), p.into());
        let _ = get("r:5000", false, b"ca", &basic("p"));
        let _ = get("r:5000", false, b"ca", &basic("p"));
        assert_eq!(
            made.get(),
            1,
            "the same registry, CA and credentials share one"
        );
        let _ = get("r:5000", false, b"ca", &basic("changed"));
        let _ = get("r:5000", false, b"rotated ca", &basic("p"));
        let _ = get("r:5000", true, b"ca", &basic("p"));
        let _ = get("other:5000", false, b"ca", &basic("p"));
        let _ = get("r:5000", false, b"ca", &RegistryAuth::Anonymous);
        assert_eq!(made.get(), 6, "each difference gets a client of its own");
    }
}
