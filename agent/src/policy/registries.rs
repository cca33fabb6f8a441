//! Registries in the node policy: which images a task may pull (the
//! `allowed_images` entries that are not absolute paths are registry and
//! repository prefixes), whether a digest is required, and how to reach
//! each registry (CA files, plain HTTP, credentials).
//!
//! ```toml
//! allowed_images = ["/var/lib/drover/images", "registry.internal:5000/team/"]
//! [registries]
//! # Refuse references without @sha256:...
//! require_digest = false
//! # Credentials in ~/.docker/config.json's `auths` format.
//! auth_file = "/etc/drover/registry-auth.json"
//! # Registries reached over plain HTTP (loopback ones always may be).
//! insecure = ["registry.lan:5000"]
//! # CA certificates (PEM) trusted for one registry, besides the system's.
//! [registries.ca_files]
//! "registry.internal:5000" = "/etc/drover/registry-ca.pem"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use drover_model::image_ref::ImageRef;
use serde::Deserialize;

use super::NodePolicy;

/// How this node reaches registries (`[registries]` in the policy file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryPolicy {
    /// Refuse image references that are not pinned by digest.
    pub require_digest: bool,
    /// Credentials file (`{"auths": {"host:port": {"auth": base64}}}`).
    pub auth_file: Option<PathBuf>,
    /// Registries (`host:port`) that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra CA certificate file (PEM) per registry (`host:port`).
    pub ca_files: BTreeMap<String, PathBuf>,
}

impl RegistryPolicy {
    /// Checks the settings that can be checked without I/O.
    pub fn check(&self) -> Result<(), String> {
        for (name, path) in self
            .auth_file
            .iter()
            .map(|p| ("registries.auth_file", p))
            .chain(self.ca_files.values().map(|p| ("registries.ca_files", p)))
        {
            if !path.is_absolute() {
                return Err(format!(
                    "{name}: {} must be an absolute path",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Whether `registry` may be reached over plain HTTP: on loopback (as
    /// Docker allows) or listed in `insecure`.
    pub fn allows_plain_http(&self, image: &ImageRef) -> bool {
        image.registry_is_loopback() || self.insecure.iter().any(|r| r == &image.registry)
    }
}

impl NodePolicy {
    /// The registry prefixes of `allowed_images` (entries that are not
    /// absolute paths).
    pub fn allowed_registry_prefixes(&self) -> impl Iterator<Item = &str> {
        self.allowed_images
            .iter()
            .filter(|p| !p.is_absolute())
            .filter_map(|p| p.to_str())
    }

    /// Refuses an image reference this node may not pull, before any
    /// request: not under an `allowed_images` prefix (unless the policy
    /// allows any image), or not pinned while `registries.require_digest`
    /// is set. The message names the image and the setting.
    pub fn check_image_ref(&self, image: &ImageRef) -> Result<(), String> {
        if self.registries.require_digest && image.digest.is_none() {
            return Err(format!(
                "image {image} is not pinned by digest and this node requires one \
                 (registries.require_digest = true in its policy; name it as \
                 {}@sha256:...)",
                image.name()
            ));
        }
        let prefixes: Vec<&str> = self.allowed_registry_prefixes().collect();
        if prefixes.is_empty() {
            if self.any_rootfs {
                return Ok(());
            }
            return Err(format!(
                "image {image} is not allowed: this node allows no registry image \
                 (allowed_images lists no registry prefix in its policy)"
            ));
        }
        if prefixes.iter().any(|p| image.matches_prefix(p)) {
            return Ok(());
        }
        Err(format!(
            "image {image} is not allowed: allowed_images = {prefixes:?} \
             (an image must be under one of these registry/repository prefixes)"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn prefixes_digests_and_http() {
        let p: NodePolicy = toml::from_str(
            "allowed_images = [\"/var/images\", \"reg.internal:5000/team/\"]\n\
             [registries]\nrequire_digest = false\ninsecure = [\"reg.lan:80\"]\n",
        )
        .unwrap();
        p.check().unwrap();
        let p = NodePolicy {
            any_rootfs: false,
            ..p
        };
        assert!(p
            .check_image_ref(&img("reg.internal:5000/team/web:1"))
            .is_ok());
        let e = p
            .check_image_ref(&img("reg.internal:5000/other/web:1"))
            .unwrap_err();
        assert!(
            e.contains("reg.internal:5000/other/web:1") && e.contains("allowed_images"),
            "{e}"
        );
        assert!(p.check_image_ref(&img("nginx")).is_err());
        let strict = NodePolicy {
            registries: RegistryPolicy {
                require_digest: true,
                ..Default::default()
            },
            ..p.clone()
        };
        let e = strict
            .check_image_ref(&img("reg.internal:5000/team/web:1"))
            .unwrap_err();
        assert!(e.contains("require_digest"), "{e}");
        assert!(p.registries.allows_plain_http(&img("reg.lan:80/a")));
        assert!(p.registries.allows_plain_http(&img("127.0.0.1:5000/a")));
        assert!(!p.registries.allows_plain_http(&img("reg.internal:5000/a")));
        let none = NodePolicy::node_default();
        assert!(none
            .check_image_ref(&img("nginx"))
            .unwrap_err()
            .contains("no registry"));
        assert!(NodePolicy::default().check_image_ref(&img("nginx")).is_ok());
    }
}
