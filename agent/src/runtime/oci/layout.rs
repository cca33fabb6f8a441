//! Reading an OCI image layout from a directory or a `.tar` of one, and
//! verifying blobs against their digests.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::OciError;

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 4 << 20;

/// An OCI content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

enum Source {
    Dir(PathBuf),
    /// Member name (without a leading `./`) → (data offset, size).
    Tar {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

/// An opened layout.
pub(super) struct Layout {
    image: PathBuf,
    source: Source,
}

impl Layout {
    /// Opens a layout directory, or indexes the members of a tar of one.
    pub fn open(image: &Path) -> Result<Self, OciError> {
        let read_err = |what: &str, source| OciError::Read {
            image: image.to_owned(),
            what: what.to_owned(),
            source,
        };
        let meta = std::fs::metadata(image).map_err(|e| read_err("the image", e))?;
        let source = if meta.is_dir() {
            Source::Dir(image.to_owned())
        } else {
            let file = File::open(image).map_err(|e| read_err("the image", e))?;
            let mut archive = tar::Archive::new(file);
            let mut members = HashMap::new();
            // Seeks over member data instead of reading it.
            for entry in archive
                .entries_with_seek()
                .map_err(|e| read_err("the image tar", e))?
            {
                let entry = entry.map_err(|e| read_err("the image tar", e))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let path = entry.path().map_err(|e| read_err("the image tar", e))?;
                let name: PathBuf = path
                    .components()
                    .filter(|c| !matches!(c, Component::CurDir))
                    .collect();
                members.insert(
                    name.to_string_lossy().into_owned(),
                    (entry.raw_file_position(), entry.size()),
                );
            }
            Source::Tar {
                file: image.to_owned(),
                members,
            }
        };
        let layout = Self {
            image: image.to_owned(),
            source,
        };
        // `oci-layout` marks a layout; its absence means a wrong path.
        layout.open_member("oci-layout")?;
        Ok(layout)
    }

    pub fn image(&self) -> &Path {
        &self.image
    }

    pub fn invalid(&self, what: String, detail: String) -> OciError {
        OciError::Invalid {
            image: self.image.clone(),
            what,
            detail,
        }
    }

    fn open_member(&self, name: &str) -> Result<Box<dyn Read + Send>, OciError> {
        let read_err = |source| OciError::Read {
            image: self.image.clone(),
            what: name.to_owned(),
            source,
        };
        match &self.source {
            Source::Dir(dir) => Ok(Box::new(File::open(dir.join(name)).map_err(read_err)?)),
            Source::Tar { file, members } => {
                let &(offset, size) = members.get(name).ok_or_else(|| {
                    read_err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "no such member in the tar",
                    ))
                })?;
                let mut f = File::open(file).map_err(read_err)?;
                f.seek(SeekFrom::Start(offset)).map_err(read_err)?;
                Ok(Box::new(f.take(size)))
            }
        }
    }

    /// The hex part of a `sha256:` digest, checked to be 64 lowercase hex
    /// digits (it names files and cache directories).
    pub fn hex<'d>(&self, desc: &'d Descriptor) -> Result<&'d str, OciError> {
        desc.digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| {
                self.invalid(
                    format!("digest {:?}", desc.digest),
                    "only sha256:<64 lowercase hex digits> digests are supported".to_owned(),
                )
            })
    }

    /// A reader over the blob's content (not verified).
    pub fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, OciError> {
        let hex = self.hex(desc)?;
        self.open_member(&format!("blobs/sha256/{hex}"))
    }

    /// Hashes the whole blob and compares with its digest.
    pub fn verify_blob(&self, desc: &Descriptor) -> Result<(), OciError> {
        let hex = self.hex(desc)?;
        let mut reader = self.open_blob(desc)?;
        let mut hasher = Sha256::new();
        io::copy(&mut reader, &mut hasher).map_err(|source| OciError::Read {
            image: self.image.clone(),
            what: format!("blob {}", desc.digest),
            source,
        })?;
        self.check(desc, hex, hasher)
    }

    fn check(&self, desc: &Descriptor, hex: &str, hasher: Sha256) -> Result<(), OciError> {
        let actual = to_hex(&hasher.finalize());
        if actual != hex {
            return Err(OciError::DigestMismatch {
                image: self.image.clone(),
                digest: desc.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Reads, verifies and parses a JSON blob (`what` names it in errors).
    pub fn read_json_blob<T: DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<T, OciError> {
        let hex = self.hex(desc)?;
        let bytes = self.read_small(self.open_blob(desc)?, &format!("{what} {}", desc.digest))?;
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        self.check(desc, hex, hasher)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("{what} {}", desc.digest), e.to_string()))
    }

    fn read_small(&self, reader: Box<dyn Read + Send>, what: &str) -> Result<Vec<u8>, OciError> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| OciError::Read {
                image: self.image.clone(),
                what: what.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(self.invalid(what.to_owned(), format!("larger than {MAX_JSON} bytes")));
        }
        Ok(bytes)
    }

    /// The manifest to use: from `index.json` (following nested indexes),
    /// the one for linux/amd64 if any has a platform, else the first.
    pub fn pick_manifest(&self) -> Result<Descriptor, OciError> {
        let bytes = self.read_small(self.open_member("index.json")?, "index.json")?;
        let mut index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid("index.json".to_owned(), e.to_string()))?;
        let mut what = "index.json".to_owned();
        // Nested indexes: a few levels at most.
        for _ in 0..4 {
            let chosen = index
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or_else(|| index.manifests.first())
                .cloned()
                .ok_or_else(|| self.invalid(what.clone(), "lists no manifest".to_owned()))?;
            if !INDEX_MEDIA_TYPES.contains(&chosen.media_type.as_str()) {
                return Ok(chosen);
            }
            what = format!("index {}", chosen.digest);
            index = self.read_json_blob(&chosen, "index")?;
        }
        Err(self.invalid(what, "indexes nested too deep".to_owned()))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
