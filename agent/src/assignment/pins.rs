//! The deployment's image pins (`Assignment.image_pins`) applied to the
//! tasks that name a registry image by tag.
//!
//! The scheduler records the digest the deployment's first start resolved
//! and sends it with every assignment of that deployment; a task of it
//! then runs that digest instead of resolving the tag again, so a tag
//! moved on the registry changes nothing for running instances, their
//! restarts or their replacements. A pin that does not name the task's
//! image pinned by digest is ignored (and said so): the task then
//! resolves its tag as without a pin.

use std::collections::BTreeMap;

use drover_model::image_ref::ImageRef;

use super::{Rootfs, Task};

/// Sets `pinned_image` of each task of `tasks` that `pins` pins.
pub(super) fn apply(tasks: &mut [Task], pins: &BTreeMap<String, String>) {
    for t in tasks.iter_mut() {
        t.pinned_image = pins.get(&t.name).and_then(|pin| checked(t, pin));
    }
}

/// `pin` when task `t` names a registry image by tag and `pin` is that
/// image pinned by digest.
fn checked(t: &Task, pin: &str) -> Option<String> {
    let Rootfs::Oci(image) = &t.rootfs else {
        return None;
    };
    if image.is_absolute() {
        return None;
    }
    let named = image.to_str().and_then(|s| ImageRef::parse(s).ok())?;
    if named.digest.is_some() {
        return None;
    }
    match ImageRef::parse(pin) {
        Ok(p) if p.digest.is_some() && p.name() == named.name() => Some(pin.to_owned()),
        _ => {
            tracing::warn!(task = %t.name, image = %named, pin, "image pin does not name the task's image by digest; ignored");
            None
        }
    }
}
