//! Synchronisation shim (tokio style): `loom` types under `cfg(loom)`, `std` otherwise.
//!
//! Everything that the poll thread and producer threads share goes through these names, so the
//! loom test (`tests/loom.rs`, run with `RUSTFLAGS="--cfg loom"`) explores the real code paths.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) use std::sync::atomic::Ordering;

/// Locks `m`, ignoring poisoning: the protected state is kept consistent at every await-free
/// step (no user code runs while the lock is held), so a panic elsewhere cannot tear it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
