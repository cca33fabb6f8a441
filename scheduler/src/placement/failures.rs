//! What a plan says about the instances of one group it could not place:
//! one line per group, with a count, however many instances failed (a job
//! of 10,000 instances on a cluster that holds none gives one line, not
//! 10,000).

use crate::job::Resources;

/// Most node ids a line names; the rest are counted.
const NAMED_NODES: usize = 5;

/// The unplaced instances of one group.
#[derive(Debug, Default)]
pub(super) struct Unplaced {
    /// Instances for any node that fit nowhere.
    instances: usize,
    /// Why the first of them fit nowhere.
    reason: Option<String>,
    /// Nodes that could not take the instance meant for them (system
    /// groups), the first few by id.
    nodes: Vec<String>,
    /// How many such nodes in all.
    node_count: usize,
}

impl Unplaced {
    /// Counts an instance for any node that fits nowhere; `reason` is given
    /// for the first one.
    pub(super) fn instance(&mut self, reason: Option<String>) {
        self.instances += 1;
        if self.reason.is_none() {
            self.reason = reason;
        }
    }

    /// Counts an instance meant for `node_id` that the node cannot take.
    pub(super) fn node(&mut self, node_id: &str) {
        self.node_count += 1;
        if self.nodes.len() < NAMED_NODES {
            self.nodes.push(node_id.to_owned());
        }
    }

    /// Whether an instance for any node has failed already.
    pub(super) fn any(&self) -> bool {
        self.instances > 0
    }

    /// The plan's failure lines for group `group`, whose instances each
    /// need `need`.
    pub(super) fn lines(self, group: &str, need: Resources) -> Vec<String> {
        let mut out = Vec::new();
        if self.instances > 0 {
            out.push(format!(
                "group {group:?}: {} unplaceable: {}",
                counted(self.instances, "instance", "instances"),
                self.reason.as_deref().unwrap_or("no node fits")
            ));
        }
        if self.node_count > 0 {
            let more = self.node_count - self.nodes.len();
            let mut names = self.nodes.join(", ");
            if more > 0 {
                names.push_str(&format!(" and {} more", thousands(more)));
            }
            out.push(format!(
                "group {group:?}: {} {} {} millicores / {} MiB free: {names}",
                counted(self.node_count, "node", "nodes"),
                if self.node_count == 1 {
                    "lacks"
                } else {
                    "lack"
                },
                need.cpu_millis,
                need.memory_mb,
            ));
        }
        out
    }
}

/// `n` with its noun: "1 instance", "9,998 instances".
pub(super) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// `n` with a comma every three digits: 9998 -> "9,998".
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_like_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(9_998), "9,998");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(counted(1, "node", "nodes"), "1 node");
    }

    #[test]
    fn one_line_per_kind_of_failure() {
        let mut u = Unplaced::default();
        u.instance(Some("no node can take it".into()));
        for _ in 0..9_997 {
            u.instance(None);
        }
        for i in 0..8 {
            u.node(&format!("n{i}"));
        }
        let need = Resources {
            cpu_millis: 100,
            memory_mb: 32,
        };
        assert_eq!(
            u.lines("web", need),
            [
                "group \"web\": 9,998 instances unplaceable: no node can take it",
                "group \"web\": 8 nodes lack 100 millicores / 32 MiB free: n0, n1, n2, n3, n4 and 3 more",
            ]
        );
        assert!(Unplaced::default().lines("web", need).is_empty());
    }
}
