//! Small shared helpers for the in-memory tables of one scheduler process.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a std mutex, recovering the data if a panicking thread poisoned
/// it: the tables behind these locks hold no invariant a panic could break
/// half-way.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
