//! Registry credentials from a file on the node in Docker's
//! `config.json` format: `{"auths": {"<registry>": {"auth": "<base64
//! user:password>"}}}` (or `username` and `password` fields). Keys may be
//! `host:port`, a URL (`https://host:port/v1/`), and Docker Hub's
//! `https://index.docker.io/v1/`. Never from the job.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use drover_model::image_ref::{ImageRef, DOCKER_HUB};
use serde::Deserialize;

/// Username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `host:port` of an `auths` key (scheme and path stripped).
fn key_registry(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// The credentials `file` holds for `image`'s registry; `Ok(None)` when
/// it has none. Errors name the file and what is wrong (never a secret).
pub(crate) fn lookup(file: &Path, image: &ImageRef) -> Result<Option<Credentials>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("credentials file {}: {e}", file.display()))?;
    let config: DockerConfig = serde_json::from_str(&text).map_err(|e| {
        format!(
            "credentials file {} is not a docker config.json: {e}",
            file.display()
        )
    })?;
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(k, _)| key_registry(k) == image.registry)
    else {
        return Ok(None);
    };
    let bad = |what: &str| {
        format!(
            "credentials file {}: auths[{key:?}]: {what}",
            file.display()
        )
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Err(bad("has neither auth nor username and password"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad("auth is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad("auth is not UTF-8"))?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| bad("auth is not base64 of user:password"))?;
    Ok(Some(Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_auths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{b64}"}},
                   "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                   "broken.io": {{"auth": "!!"}}}}}}"#
            ),
        )
        .unwrap();
        let c = lookup(&f, &ImageRef::parse("127.0.0.1:5000/a:1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = lookup(&f, &ImageRef::parse("nginx").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "bob");
        assert!(lookup(&f, &ImageRef::parse("other.io/a").unwrap())
            .unwrap()
            .is_none());
        let e = lookup(&f, &ImageRef::parse("broken.io/a").unwrap()).unwrap_err();
        assert!(e.contains("not base64") && !e.contains("!!"), "{e}");
    }
}
