//! # hrpc-store: a crash-safe, memory-mapped message store
//!
//! The store behind hrpc's promise: a message that `send` accepted, or that the receiver
//! acknowledged, survives the process being killed at any instruction — and, in
//! [`Durability::Sync`] mode, an OS crash or power loss after the next [`Store::sync`].
//!
//! It keeps, per peer node id: outbound messages from commit until the peer acknowledges them,
//! inbound messages from the moment they are completely persisted until the application consumes
//! them, and small cursors (next outbound seq, acked seq, consumed seq, the peer's session epoch)
//! in checksummed, multi-buffered records. A superblock holds this node's id and epoch (64 random bits, a secret).
//!
//! Messages live in fixed-size slots (size classes 128 B … 16 MiB + 64, at most 1/16 larger than
//! needed from 4 KiB up; 64-byte header) in segment files mapped with memmap2. The store starts
//! at ~200 KiB and grows by adding segment files — a live mapping is never remapped. Space is
//! reserved with `fallocate`, so a full disk is [`StoreError::NoSpace`], never SIGBUS. Freed
//! slots are reused, and [`Store::maintain`] (call it once per poll iteration) deletes segment
//! files that stay empty, so an idle store shrinks back to its empty size.
//!
//! ```
//! use hrpc_store::{Store, StoreConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut store = Store::open(dir.path(), &StoreConfig::new(7))?;
//!
//! // Zero-copy: reserve, fill in place, commit (any thread, via a producer handle).
//! let producer = store.producer();
//! let mut r = producer.reserve(42, 5)?;
//! r.payload_mut().copy_from_slice(b"hello");
//! let seq = r.commit()?;
//! assert_eq!(store.outbound_message(42, seq).unwrap().payload(), b"hello");
//!
//! // Peer 42 acknowledged everything through `seq`: free it.
//! assert_eq!(store.release_outbound_through(42, seq)?, 1);
//!
//! // Inbound: persist (possibly fragment by fragment), then consume in order.
//! store.put_inbound(42, 1, b"hi back")?;
//! assert_eq!(store.inbound_message(42, 1).unwrap().payload(), b"hi back");
//! store.consume_inbound(42, 1)?;
//! assert_eq!(store.inbound_consumed(42), 1);
//! # Ok(()) }
//! ```
//!
//! ## Safety and what users must not do
//!
//! `unsafe` code is confined to the private `map` module; its soundness argument (invariants
//! M1–M6) is written there and in `docs/design.md`. [`Store::open`] is a **safe** function: it
//! takes an exclusive `flock` on `LOCK` before mapping anything, so no other cooperating process
//! or second `Store` can map the files. Users must not truncate, write or replace the store's
//! files while it is open (from this or another process, bypassing the lock); that is outside the
//! contract. Damage found while the store is closed is handled by recovery: every byte read from
//! disk is validated before use.
//!
//! ## Inspection
//!
//! [`inspect::inspect_dir`] reports on a store directory without opening it: it takes no lock
//! and writes nothing, so it is safe beside a live node and on a damaged store, and it judges
//! the files by the same checks as [`Store::open`] (`hrpc-bench inspect` prints it).
//!
//! ## Threads
//!
//! [`Store`] is owned by the poll thread. [`OutboundProducer`] (Clone + Send + Sync) lets other
//! threads reserve, fill and commit outbound messages concurrently. Sequence numbers are assigned
//! at commit under the store lock, so publish order equals seq order.
//!
//! Closing: dropping the [`Store`] (or [`Store::close_producers`]) closes it to every producer
//! clone at once — reserve and commit fail with [`StoreError::Closed`], checked under the store
//! lock, so no commit follows the close. A reservation being filled when the store is dropped
//! keeps the files (mappings and the `LOCK`) until it is committed (refused) or dropped: a new
//! [`Store::open`] of the directory, in this process or another, gets [`StoreError::Locked`]
//! meanwhile, and nothing is ever written into a store after its lock is released.
//! [`Store::wait_producers`] and [`Store::close`] wait (bounded) for such reservations.
//! [`OutboundProducer::reserve_within`] takes a per-peer limit on unacknowledged messages,
//! counting reservations in progress, and is exact under any number of threads.
#![deny(unsafe_code)] // allowed only in `map`, the mapping module

// Test support (fail points, the damaged-store harness, the power-loss simulation and the
// `Store::__*` hooks) exists only with the `testing` feature, which the crate's own tests and
// those of its dependents enable as a dev-dependency feature; a normal build has none of it.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod corruption;
mod error;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod failpoint;
#[cfg(not(feature = "testing"))]
mod failpoint;
mod inbound_index;
mod layout;
mod map;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod power_loss;
mod store;
mod sync;

pub use error::StoreError;
pub use layout::FLAG_CALL;
pub use store::inspect;
pub use store::{
    Damage, Durability, FileReport, InboundPut, InboundSlot, LostRange, MAX_BATCH, MAX_PUT_BATCH,
    MessageRef, OUTBOUND_RUN, OpenReport, OutboundOnReset, OutboundProducer, OutboundReservation,
    OutboundRun, PeerReport, PendingCall, ResetReport, SendWindow, Store, StoreConfig, StoreReport,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

/// Largest message payload the store accepts (16 MiB, equal to `hrpc_wire::MAX_MESSAGE_LEN`).
pub const MAX_MESSAGE_LEN: usize = 16 << 20;

/// Smallest `capacity_bytes` [`Store::open`] accepts (64 KiB): room for a few hundred small
/// messages or one of 65 472 bytes. Below it, [`StoreError::CapacityTooSmall`].
pub const MIN_CAPACITY: u64 = 64 << 10;

/// Largest `max_peers` accepted in [`StoreConfig`].
pub const MAX_PEERS: u32 = 1 << 16;
