//! What changed from one version of a job to the next, in one line, for
//! `drover job history`.

use crate::job::{GroupSpec, JobSpec};

/// A one-line summary of the change from `before` (none: the first
/// version) to `after`.
pub fn summary(before: Option<&JobSpec>, after: &JobSpec) -> String {
    let Some(before) = before else {
        return "first version".into();
    };
    let mut parts = Vec::new();
    if before.kind != after.kind {
        parts.push(format!(
            "kind {} -> {}",
            before.kind.as_str(),
            after.kind.as_str()
        ));
    }
    for g in &after.groups {
        match before.group(&g.name) {
            None => parts.push(format!("group {:?} added", g.name)),
            Some(old) => group_changes(old, g, &mut parts),
        }
    }
    for g in &before.groups {
        if after.group(&g.name).is_none() {
            parts.push(format!("group {:?} removed", g.name));
        }
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join("; ")
    }
}

fn group_changes(old: &GroupSpec, new: &GroupSpec, parts: &mut Vec<String>) {
    let name = &new.name;
    if old.count != new.count {
        parts.push(format!(
            "group {name:?} count {} -> {}",
            old.count, new.count
        ));
    }
    for t in &new.tasks {
        match old.tasks.iter().find(|o| o.name == t.name) {
            None => parts.push(format!("group {name:?} task {:?} added", t.name)),
            Some(o) if o != t => {
                let what = if o.command != t.command {
                    "command"
                } else if o.env != t.env {
                    "env"
                } else if o.resources != t.resources {
                    "resources"
                } else {
                    "settings"
                };
                parts.push(format!("group {name:?} task {:?} {what} changed", t.name));
            }
            Some(_) => {}
        }
    }
    for t in &old.tasks {
        if !new.tasks.iter().any(|n| n.name == t.name) {
            parts.push(format!("group {name:?} task {:?} removed", t.name));
        }
    }
    let others = [
        (old.restart != new.restart, "restart"),
        (old.services != new.services, "services"),
        (old.network != new.network, "network"),
        (old.update != new.update, "update"),
    ];
    for (changed, what) in others {
        if changed {
            parts.push(format!("group {name:?} {what} changed"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testkit::job;

    #[test]
    fn names_what_changed() {
        let a = job("service", 2, "a");
        assert_eq!(summary(None, &a), "first version");
        assert_eq!(summary(Some(&a), &a), "no change");
        let b = job("service", 3, "b");
        assert_eq!(
            summary(Some(&a), &b),
            "group \"g\" count 2 -> 3; group \"g\" task \"t\" command changed"
        );
    }
}
