//! Synchronisation shim (tokio style): `loom` types under `cfg(loom)`, `std` otherwise.
//!
//! Only the state that the poll thread and sending threads really share goes through these
//! names ([`WakeFlag`](super::waker::WakeFlag)), so `tests/loom.rs` explores the real code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicBool;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicBool;

pub(crate) use std::sync::atomic::Ordering;
