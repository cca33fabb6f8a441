//! Which event records the store holds, by allocation: what decides,
//! without I/O, which ones go when a bound is passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::EventLimits;

/// The names of the stored events (time-ordered), each with its
/// allocation.
#[derive(Debug, Default)]
pub struct Index {
    all: BTreeMap<String, String>,
    by_alloc: HashMap<String, BTreeSet<String>>,
}

impl Index {
    /// Adds the record `name` of allocation `alloc_id`; false when it was
    /// there already (the same event written again).
    pub fn insert(&mut self, name: &str, alloc_id: &str) -> bool {
        if self.all.contains_key(name) {
            return false;
        }
        self.all.insert(name.to_string(), alloc_id.to_string());
        self.by_alloc
            .entry(alloc_id.to_string())
            .or_default()
            .insert(name.to_string());
        true
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// How many records of `alloc_id` it holds.
    pub fn len_of(&self, alloc_id: &str) -> usize {
        self.by_alloc.get(alloc_id).map_or(0, BTreeSet::len)
    }

    /// Forgets and returns the records past `limits`: the oldest of each
    /// allocation over its bound, then the oldest of all over the
    /// cluster-wide one.
    pub fn over(&mut self, limits: EventLimits) -> Vec<String> {
        let mut gone = Vec::new();
        let per_alloc = limits.per_alloc.max(1);
        for names in self.by_alloc.values_mut() {
            while names.len() > per_alloc {
                let Some(oldest) = names.pop_first() else {
                    break;
                };
                self.all.remove(&oldest);
                gone.push(oldest);
            }
        }
        while self.all.len() > limits.max_events.max(1) {
            let Some((oldest, alloc)) = self.all.pop_first() else {
                break;
            };
            if let Some(names) = self.by_alloc.get_mut(&alloc) {
                names.remove(&oldest);
                if names.is_empty() {
                    self.by_alloc.remove(&alloc);
                }
            }
            gone.push(oldest);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_alloc: usize, max_events: usize) -> EventLimits {
        EventLimits {
            per_alloc,
            max_events,
        }
    }

    #[test]
    fn each_allocation_keeps_its_newest_events() {
        let mut ix = Index::default();
        for t in 0..5 {
            assert!(ix.insert(&format!("{t:016}-a"), "a"));
        }
        assert!(ix.insert("0000000000000002-b", "b"));
        assert!(!ix.insert("0000000000000002-b", "b"), "a duplicate");
        let gone = ix.over(limits(3, 100));
        assert_eq!(gone, vec!["0000000000000000-a", "0000000000000001-a"]);
        assert_eq!((ix.len_of("a"), ix.len_of("b"), ix.len()), (3, 1, 4));
        assert!(ix.over(limits(3, 100)).is_empty());
    }

    #[test]
    fn the_cluster_keeps_its_newest_events_whatever_the_allocation() {
        let mut ix = Index::default();
        for t in 0..6 {
            let alloc = if t % 2 == 0 { "a" } else { "b" };
            ix.insert(&format!("{t:016}-{alloc}"), alloc);
        }
        let gone = ix.over(limits(10, 4));
        assert_eq!(gone, vec!["0000000000000000-a", "0000000000000001-b"]);
        assert_eq!((ix.len_of("a"), ix.len_of("b"), ix.len()), (2, 2, 4));
        // An allocation whose every event went is forgotten.
        let gone = ix.over(limits(10, 1));
        assert_eq!(gone.len(), 3);
        assert_eq!((ix.len_of("a"), ix.len_of("b")), (0, 1));
    }
}
