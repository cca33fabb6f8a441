//! The node policy's `[seccomp]` table, and what it makes of a task's
//! request.
//!
//! ```toml
//! [seccomp]
//! # An OCI seccomp profile (JSON) every task gets instead of the built-in one.
//! profile = "/etc/drover/seccomp.json"
//! # Whether a job may ask for no filter: `seccomp = "unconfined"` in a task.
//! allow_unconfined = false
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use tracing::warn;

use super::{oci, Filter, Profile, Seccomp};

/// The node's seccomp settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeccompPolicy {
    /// An OCI seccomp profile (absolute path) every task gets instead of
    /// the built-in [`super::default_profile`].
    pub profile: Option<PathBuf>,
    /// Whether a job may ask for `seccomp = "unconfined"`.
    pub allow_unconfined: bool,
    /// [`SeccompPolicy::profile`] as read by [`SeccompPolicy::load`].
    #[serde(skip)]
    pub loaded: Option<Box<Profile>>,
}

impl SeccompPolicy {
    /// Reads and compiles the profile file, if the policy names one, so
    /// that a bad one stops the agent at start and not each task; the
    /// message names the setting and the file.
    pub fn load(&mut self) -> Result<(), String> {
        let Some(path) = &self.profile else {
            return Ok(());
        };
        // As the policy's other paths (not through `crate::policy`, which
        // depends on this module).
        let normal = path
            .components()
            .skip(1)
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !path.is_absolute() || !normal {
            return Err(format!(
                "seccomp.profile: {} must be an absolute path without `..` or `.`",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("seccomp.profile: cannot read {}: {e}", path.display()))?;
        let parsed =
            oci::parse(&text).map_err(|e| format!("seccomp.profile {}: {e}", path.display()))?;
        Filter::compile(&parsed.profile)
            .map_err(|e| format!("seccomp.profile {}: {e}", path.display()))?;
        if !parsed.unknown.is_empty() {
            warn!(
                profile = %path.display(),
                skipped = ?parsed.unknown,
                arch = super::NATIVE_ARCH_NAME,
                "seccomp profile names system calls this architecture does not have; skipped"
            );
        }
        self.loaded = Some(Box::new(parsed.profile));
        Ok(())
    }
}

/// What a task that asked for `requested` runs under on this node: the
/// policy's profile for [`Seccomp::Default`] when it has one;
/// [`Seccomp::Unconfined`] only when the policy allows it (the error
/// names the setting). A [`Seccomp::Profile`] given by a caller of the
/// runtime library is kept.
pub fn admit(policy: &SeccompPolicy, requested: &Seccomp) -> Result<Seccomp, String> {
    match requested {
        Seccomp::Default => Ok(policy
            .loaded
            .as_ref()
            .map_or(Seccomp::Default, |p| Seccomp::Profile(p.clone()))),
        Seccomp::Unconfined if policy.allow_unconfined => Ok(Seccomp::Unconfined),
        Seccomp::Unconfined => Err(
            "seccomp = \"unconfined\" is not allowed on this node: its policy must set \
             seccomp.allow_unconfined = true (in the file given to --policy)"
                .to_owned(),
        ),
        Seccomp::Profile(p) => Ok(Seccomp::Profile(p.clone())),
    }
}
