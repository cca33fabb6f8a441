//! Images pulled from OCI distribution registries (docker-registry,
//! Docker Hub, ...) into the same digest-keyed layer cache as local
//! layouts ([`super::ImageCache`]).
//!
//! The HTTP side (manifests, blobs, basic and bearer authentication,
//! ranged requests) is the `oci-client` crate's; what is here is what it
//! does not do the way the node needs: the platform picked from an index
//! by the node's architecture, every document and blob hashed by us before
//! use (a tag's manifest digest is our own hash of its bytes), layers
//! downloaded into a temporary directory, verified, unpacked and renamed
//! into the cache (nothing half-written is ever under `layers/`), pulls of
//! one reference on the node coalesced, a transfer cut short resumed with
//! a ranged request, and HTTPS with a per-registry CA, plain HTTP only for
//! loopback or `registries.insecure`.
//! Progress (layers and bytes done) goes to a [`ProgressFn`] at a bounded
//! rate ([`progress`]), which the runtime turns into allocation events.

mod auth;
mod blob;
mod clients;
mod local;
pub mod progress;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drover_model::image_ref::ImageRef;
use futures::stream::{self, StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::{ConfigBlob, ImageCache, ResolvedImage};
use crate::policy::RegistryPolicy;
use progress::Meter;
pub use progress::{ProgressFn, PullNote};

/// Layers downloaded at once for one image.
const PARALLEL_LAYERS: usize = 3;
/// Largest manifest, index or config read into memory.
const MAX_JSON: usize = 4 << 20;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED: [&str; 4] = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

/// A pull that failed: names the image and the cause.
#[derive(Debug, thiserror::Error)]
#[error("image {image}: {cause}")]
pub struct PullError {
    /// The reference as the job named it (normalised).
    pub image: String,
    /// What went wrong.
    pub cause: String,
}

/// A content descriptor of a manifest or index.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// A manifest or an index: whichever fields the document has.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

/// Pulls images; clones share the table of pulls in flight and the
/// registry clients kept between pulls.
#[derive(Debug, Clone, Default)]
pub struct Puller {
    inflight: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    clients: clients::Clients,
}

/// One pull's connection to its registry.
struct Session {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    image: String,
}

impl Puller {
    /// Resolves `image` (a tag to the digest it names now) and makes sure
    /// its layers are in `cache`. Concurrent pulls of one reference wait
    /// for the first, and then find its layers cached. The returned
    /// image's `reference` is `image` pinned to its manifest digest.
    /// `progress` hears how the pull goes ([`PullNote`]).
    pub async fn pull(
        &self,
        cache: &ImageCache,
        registries: &RegistryPolicy,
        image: &ImageRef,
        progress: Option<ProgressFn>,
    ) -> Result<ResolvedImage, PullError> {
        let key = image.to_string();
        let gate = {
            let mut map = self
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.retain(|_, g| Arc::strong_count(g) > 1);
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let _turn = gate.lock().await;
        if let Some(resolved) = local::resolve(cache, image) {
            debug!(image = %key, manifest = %resolved.manifest, "pinned image cached: no registry request");
            return Ok(resolved);
        }
        let err = |cause: String| PullError {
            image: key.clone(),
            cause,
        };
        let https = Session::new(&self.clients, registries, image, false).map_err(&err)?;
        let (session, top, top_digest) = match https.manifest(None).await {
            Ok((bytes, digest)) => (https, bytes, digest),
            Err(e) if e.transport && registries.allows_plain_http(image) => {
                debug!(image = %key, error = %e.cause, "HTTPS failed; trying plain HTTP");
                let http = Session::new(&self.clients, registries, image, true).map_err(&err)?;
                match http.manifest(None).await {
                    Ok((bytes, digest)) => (http, bytes, digest),
                    // The registry answered over plain HTTP: its answer
                    // is the cause, the TLS failure only context.
                    Err(e2) if !e2.transport => {
                        return Err(err(format!(
                            "{} (over plain HTTP; HTTPS failed: {})",
                            e2.cause, e.cause
                        )))
                    }
                    Err(e2) => {
                        return Err(err(format!(
                            "{} (and over plain HTTP: {})",
                            e.cause, e2.cause
                        )))
                    }
                }
            }
            Err(e) => return Err(err(e.cause)),
        };
        let resolved = session
            .resolve(cache, &top, &top_digest, image, progress)
            .await
            .map_err(err)?;
        info!(image = %key, digest = %top_digest, manifest = %resolved.manifest, layers = resolved.layers.len(), "image pulled");
        Ok(resolved)
    }
}

/// A manifest fetch that failed; `transport`: no HTTP answer at all (a
/// plain-HTTP registry answers nothing a TLS client accepts).
struct FetchError {
    cause: String,
    transport: bool,
}

/// The client configuration for a registry over `plain` HTTP or HTTPS,
/// trusting `ca` (PEM; empty for none) besides the system's roots.
fn client_config(plain: bool, ca: Vec<u8>) -> ClientConfig {
    let extra = if ca.is_empty() {
        Vec::new()
    } else {
        vec![Certificate {
            encoding: CertificateEncoding::Pem,
            data: ca,
        }]
    };
    ClientConfig {
        protocol: if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates: extra,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    }
}

impl Session {
    fn new(
        clients: &clients::Clients,
        registries: &RegistryPolicy,
        image: &ImageRef,
        plain: bool,
    ) -> Result<Session, String> {
        // reqwest is built without a crypto provider of its own: ring, as
        // tonic uses. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = match registries.ca_files.get(&image.registry) {
            Some(ca) => std::fs::read(ca)
                .map_err(|e| format!("CA file {} (registries.ca_files): {e}", ca.display()))?,
            None => Vec::new(),
        };
        let auth = match &registries.auth_file {
            None => RegistryAuth::Anonymous,
            Some(file) => match auth::lookup(file, image)? {
                Some(c) => RegistryAuth::Basic(c.username, c.password),
                None => RegistryAuth::Anonymous,
            },
        };
        let reference: Reference = image
            .to_string()
            .parse()
            .map_err(|e| format!("the client cannot parse the reference: {e}"))?;
        let client = clients.get(&image.registry, plain, &ca, &auth, || {
            Client::new(client_config(plain, ca.clone()))
        });
        Ok(Session {
            client,
            reference,
            auth,
            image: image.to_string(),
        })
    }

    /// The reference with `digest` instead of its tag.
    fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_owned(),
        )
    }

    /// Fetches a manifest or index (by the reference's tag or digest, or
    /// by `digest`) and returns its bytes and their digest (our hash),
    /// checked against the digest asked for.
    async fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String), FetchError> {
        let reference = digest.map_or_else(|| self.reference.clone(), |d| self.at(d));
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, &ACCEPTED)
            .await
            .map_err(|e| FetchError {
                transport: matches!(&e, oci_client::errors::OciDistributionError::RequestError(r) if r.is_connect() || r.is_request()),
                cause: describe(&e, "manifest", reference.tag().unwrap_or_default()),
            })?;
        if bytes.len() > MAX_JSON {
            return Err(FetchError {
                cause: format!("manifest is larger than {MAX_JSON} bytes"),
                transport: false,
            });
        }
        let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if let Some(want) = digest.or(reference.digest()) {
            if want != actual {
                return Err(FetchError {
                    cause: format!(
                        "manifest {want} is corrupt: the registry sent content that hashes \
                         to {actual}"
                    ),
                    transport: false,
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// From the manifest or index the reference names (`top`, whose
    /// digest is `top_digest`): the platform's manifest, the config and
    /// the layers, into the cache. The image is pinned to the manifest
    /// of the node's platform (the index's digest is only logged).
    async fn resolve(
        &self,
        cache: &ImageCache,
        top: &[u8],
        top_digest: &str,
        image: &ImageRef,
        progress: Option<ProgressFn>,
    ) -> Result<ResolvedImage, String> {
        let mut doc = parse_document(top, top_digest)?;
        let mut manifest_digest = top_digest.to_owned();
        let mut manifest_bytes = top.to_vec();
        // An index (possibly nested once): the node's platform.
        for _ in 0..2 {
            let Some(entries) = &doc.manifests else { break };
            let chosen = pick_platform(entries, &manifest_digest)?;
            let (bytes, digest) = self
                .manifest(Some(&chosen.digest))
                .await
                .map_err(|e| e.cause)?;
            doc = parse_document(&bytes, &digest)?;
            manifest_digest = digest;
            manifest_bytes = bytes;
        }
        if doc.manifests.is_some() {
            return Err(format!("index {manifest_digest} is nested too deep"));
        }
        if let Some(mt) = &doc.media_type {
            if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
                return Err(format!(
                    "manifest {manifest_digest} has media type {mt:?}, not an OCI or Docker v2 \
                     schema 2 image manifest"
                ));
            }
        }
        let config_desc = doc
            .config
            .ok_or_else(|| format!("manifest {manifest_digest} has no config"))?;
        if doc.layers.is_empty() {
            return Err(format!("manifest {manifest_digest} lists no layer"));
        }
        let config_bytes = self.small_blob(&config_desc).await?;
        let config: ConfigBlob = serde_json::from_slice(&config_bytes)
            .map_err(|e| format!("config {} is not valid: {e}", config_desc.digest))?;
        cache.prepare().map_err(|e| e.to_string())?;
        let cached = doc
            .layers
            .iter()
            .filter(|d| blob::cached(cache, d).is_some())
            .count();
        let meter = Meter::start(
            progress,
            doc.layers.len(),
            doc.layers.iter().map(|d| d.size).sum(),
            cached,
        );
        let mut layers: Vec<PathBuf> = stream::iter(doc.layers.iter())
            .map(|d| blob::ensure_layer(self, cache, d, &meter))
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
        layers.reverse();
        meter.finish(image.pinned(top_digest).to_string());
        local::keep(
            cache,
            &[
                (manifest_digest.as_str(), manifest_bytes.as_slice()),
                (config_desc.digest.as_str(), config_bytes.as_slice()),
            ],
        );
        Ok(resolved(image, &manifest_digest, layers, config))
    }

    /// A small blob (the config), verified against its digest.
    async fn small_blob(&self, desc: &Desc) -> Result<Vec<u8>, String> {
        if desc.size > MAX_JSON as u64 {
            return Err(format!(
                "config {} is larger than {MAX_JSON} bytes",
                desc.digest
            ));
        }
        let mut out = Vec::new();
        self.client
            .pull_blob(&self.reference, desc.digest.as_str(), &mut out)
            .await
            .map_err(|e| describe(&e, "config", &desc.digest))?;
        let actual = format!("sha256:{}", hex(&Sha256::digest(&out)));
        if actual != desc.digest {
            return Err(format!(
                "config {} is corrupt: the registry sent content that hashes to {actual}",
                desc.digest
            ));
        }
        Ok(out)
    }
}

/// The resolved image: `layers` (lowest last, as the cache lists them)
/// under `config`, pinned to the platform's manifest `manifest_digest`
/// (not the index: exactly what runs here, and what a restart pulls
/// without the index).
fn resolved(
    image: &ImageRef,
    manifest_digest: &str,
    layers: Vec<PathBuf>,
    config: ConfigBlob,
) -> ResolvedImage {
    ResolvedImage {
        image: PathBuf::from(image.to_string()),
        manifest: manifest_digest.to_owned(),
        layers,
        defaults: config.defaults(),
        reference: Some(image.pinned(manifest_digest).to_string()),
    }
}

fn parse_document(bytes: &[u8], digest: &str) -> Result<Document, String> {
    let doc: Document = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest {digest} is not valid JSON: {e}"))?;
    if doc.schema_version != Some(2) {
        return Err(format!(
            "manifest {digest} has schemaVersion {:?}: only OCI and Docker v2 schema 2 \
             images are supported",
            doc.schema_version
        ));
    }
    if let Some(mt) = &doc.media_type {
        if doc.manifests.is_some() && mt != OCI_INDEX && mt != DOCKER_LIST {
            return Err(format!("index {digest} has media type {mt:?}"));
        }
    }
    Ok(doc)
}

/// The OCI architecture name of this node.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn pick_platform<'a>(entries: &'a [Desc], index: &str) -> Result<&'a Desc, String> {
    let arch = node_arch();
    entries
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .ok_or_else(|| {
            let have: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            format!("index {index} has no manifest for linux/{arch} (it has {have:?})")
        })
}

/// A client error in words: what was fetched and why it failed.
fn describe(e: &oci_client::errors::OciDistributionError, what: &str, which: &str) -> String {
    use oci_client::errors::OciDistributionError as E;
    let which = if which.is_empty() {
        String::new()
    } else {
        format!(" {which}")
    };
    match e {
        E::AuthenticationFailure(m) => {
            format!("authentication failed fetching {what}{which}: {m} (check the node's registries.auth_file)")
        }
        E::UnauthorizedError { url } => format!(
            "not authorized fetching {what}{which} ({url}): wrong or missing credentials in the \
             node's registries.auth_file"
        ),
        E::ImageManifestNotFoundError(m) => format!("{what}{which} not found: {m}"),
        E::RegistryError { envelope, url } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}: {}", x.code, x.message))
                .collect();
            let unknown = envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            });
            let denied = envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            });
            let head = if unknown {
                "not found"
            } else if denied {
                "not authorized (wrong or missing credentials in the node's \
                 registries.auth_file)"
            } else {
                "refused"
            };
            format!(
                "{what}{which} {head} by the registry ({url}): {}",
                codes.join("; ")
            )
        }
        E::RequestError(r) => format!(
            "fetching {what}{which}: cannot reach the registry: {}",
            error_chain(r)
        ),
        other => format!("fetching {what}{which}: {other}"),
    }
}

/// An error and its sources, `: `-separated (reqwest hides the TLS cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_node_platform_and_refuses_schema1() {
        let d = |os: &str, arch: &str, n: char| Desc {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
            }),
        };
        let entries = vec![
            d("windows", node_arch(), 'a'),
            d("linux", "s390x", 'b'),
            d("linux", node_arch(), 'c'),
        ];
        assert!(pick_platform(&entries, "i").unwrap().digest.ends_with('c'));
        let e = pick_platform(&entries[..2], "sha256:i").unwrap_err();
        assert!(e.contains("linux/") && e.contains("s390x"), "{e}");
        let e = parse_document(br#"{"schemaVersion": 1}"#, "sha256:x").unwrap_err();
        assert!(e.contains("schemaVersion"), "{e}");
        assert!(parse_document(b"{", "sha256:x")
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
