//! The writes that bring the store's SkyDNS keys to the desired records:
//! a pure diff of what is held (value and lease per key) against what is
//! wanted, within a scope (every key Drover owns, or one allocation's).

use std::collections::BTreeMap;

use super::desired::Desired;

/// What a key Drover wrote holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The lease it is bound to.
    pub lease: i64,
}

/// The writes of one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Keys to delete.
    pub delete: Vec<String>,
    /// Per node: keys to put and their values, each bound to the node's
    /// lease (granted first when it has none).
    pub put: BTreeMap<String, Vec<(String, Vec<u8>)>>,
}

impl Plan {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.put.is_empty()
    }
}

/// The writes that make the keys `in_scope` hold `desired`: held keys in
/// scope that are not desired go, and desired records are put unless the
/// key holds the same value bound to the node's current lease (a key
/// bound to another lease, e.g. one granted before a scheduler restart, is
/// rewritten so that the node's lease governs it).
pub fn plan(
    held: &BTreeMap<String, Held>,
    leases: &BTreeMap<String, i64>,
    desired: &Desired,
    in_scope: impl Fn(&str) -> bool,
) -> Plan {
    let mut out = Plan::default();
    for key in held.keys() {
        if in_scope(key) && !desired.contains_key(key) {
            out.delete.push(key.clone());
        }
    }
    for (key, wanted) in desired {
        let value = wanted.record.to_json();
        let current = leases.get(&wanted.node_id).and_then(|lease| {
            held.get(key)
                .filter(|h| h.lease == *lease && h.value == value)
        });
        if current.is_none() {
            out.put
                .entry(wanted.node_id.clone())
                .or_default()
                .push((key.clone(), value));
        }
    }
    out
}
