//! The store: the state shared by the poll thread and producers, and the modules that act on it.
//!
//! This module holds the types every part uses: [`Store`] (the poll thread's handle),
//! `Shared` (what producers share with it), `Inner` (everything behind the store mutex),
//! `PeerState` and the slot/segment identifiers. What is done with them lives in one
//! submodule per idea:
//!
//! - `config`: [`StoreConfig`] and [`Durability`].
//! - `open`: opening a directory — lock, superblock, peer records, slot scan — and building
//!   the state; `recovery` holds the decisions it makes about the slots it found.
//! - `alloc`: size classes turned into segments and slots: claim, unclaim, free (I3).
//! - `publish`: making a filled slot visible (header, then the state word; I1, I2), and gap
//!   markers.
//! - `records`: the multi-buffered peer records and the next-seq floors (I5, I6).
//! - `producer`: [`OutboundProducer`] and [`OutboundReservation`], the any-thread send path.
//! - `outbound`, `inbound`, `peers`: the poll thread's view of each stream and peer.
//! - `flush`: group commit ([`Store::sync`]).
//! - `maintain`: giving disk space back by deleting empty segments (I8).
//! - `lifecycle`: closing to producers and releasing the files.
//! - `report`: the value types the API returns, and [`Store::inspect`].
//! - `inspect`: read-only inspection of a store directory, without opening it; `scan` holds
//!   the checks of the superblock, records, segment headers and slots it shares with `open`.
//! - `files`, `hooks`: file-creation helpers, and test hooks.

mod alloc;
mod calls;
mod config;
mod files;
mod flush;
mod hooks;
mod inbound;
pub mod inspect;
mod lifecycle;
mod maintain;
mod open;
mod outbound;
mod peers;
mod producer;
mod publish;
mod records;
mod recovery;
mod report;
mod scan;

pub use self::calls::PendingCall;
pub use self::config::{Durability, StoreConfig};
pub use self::inbound::{InboundPut, InboundSlot, MAX_PUT_BATCH};
pub use self::outbound::{OUTBOUND_RUN, OutboundRun};
pub use self::producer::{MAX_BATCH, OutboundProducer, OutboundReservation, SendWindow};
pub use self::report::{
    Damage, FileReport, LostRange, MessageRef, OpenReport, OutboundOnReset, PeerReport,
    ResetReport, StoreReport,
};

use self::alloc::{ClassState, SegUse};
use self::hooks::HookSlot;
use crate::error::StoreError;
use crate::inbound_index::InboundIndex;
use crate::layout::{Record, SEG_HDR, SLOT_HDR};
use crate::map::{MappedFile, SegCell};
use crate::sync::{Arc, Condvar, Mutex, lock};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maximum number of segment files (indexes of deleted ones are reused).
const MAX_SEGMENTS: usize = 1024;

const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta";

/// Maps keyed by peer id (a fast, non-cryptographic hash; peer tables are bounded).
type IdMap<V> = rustc_hash::FxHashMap<u32, V>;

/// Identifies a slot: segment file index and slot index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotId {
    pub(crate) seg: u32,
    pub(crate) idx: u32,
}

#[derive(Debug, Clone, Copy)]
struct OutEntry {
    seq: u64,
    /// Last seq this entry stands for: `seq` for a message, the end of the
    /// range for a gap marker.
    last: u64,
    /// A gap marker (`seq..=last` are gone), not a message.
    lost: bool,
    slot: SlotId,
    len: u32,
    crc: u32,
    /// The message's flags ([`FLAG_CALL`](crate::FLAG_CALL) or 0), kept here so that
    /// reading a message does not touch its slot header.
    flags: u8,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    map: MappedFile,
    class: usize,
    slot_size: usize,
    slots: u32,
}

impl Segment {
    #[inline]
    fn off(&self, idx: u32) -> usize {
        SEG_HDR + idx as usize * self.slot_size
    }
}

/// In-memory state of one peer (index into `Inner::states`; never removed while open).
#[derive(Debug)]
struct PeerState {
    peer: u32,
    /// Peer table entry.
    entry: u32,
    /// Last written record value.
    rec: Record,
    /// Copy index holding `rec`.
    latest: u8,
    /// Copy index known durable (Sync mode: flushed by the last sync; Process mode: == latest).
    durable: u8,
    /// Sync mode: in `Inner::dirty_entries`.
    dirty: bool,
    /// In `Inner::committed` (commits since the last sync).
    listed: bool,
    /// Seqs below this may be transmitted: their next-seq floor is recorded
    /// and, in Sync mode, they were made durable by a completed sync.
    sendable: u64,
    /// Next outbound seq to assign.
    next_out: u64,
    /// Pending outbound messages and gap markers, in seq order: every seq from `acked + 1` to
    /// `next_out - 1` (I7).
    out: VecDeque<OutEntry>,
    out_bytes: u64,
    /// Outbound reservations for this peer not yet committed or dropped (counted by
    /// [`OutboundProducer::reserve_within`] against its limit), and their bytes.
    reserved: u64,
    reserved_bytes: u64,
}

impl PeerState {
    /// Lowest pending outbound seq (`next_out` if none is pending).
    fn low(&self) -> u64 {
        self.out.front().map_or(self.next_out, |e| e.seq)
    }

    /// The pending entry that holds `seq`: the message `seq`, or a gap marker
    /// whose range contains it.
    fn find_out(&self, seq: u64) -> Option<usize> {
        let front = self.out.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        let i = match self.out.get(i) {
            Some(e) if e.seq == seq => i,
            _ => self.out.partition_point(|e| e.seq <= seq).checked_sub(1)?,
        };
        let e = &self.out[i];
        (e.seq <= seq && seq <= e.last).then_some(i)
    }
}

/// Everything behind the store mutex.
#[derive(Debug)]
struct Inner {
    classes: Vec<ClassState>,
    nsegs: u32,
    used: u64,
    generation: u64,
    peers: IdMap<u32>,
    states: Vec<PeerState>,
    free_entries: Vec<u32>,
    meta: MappedFile,
    meta_file: File,
    /// Sync mode: dirty byte range per segment (`lo >= hi` = clean) and the list of dirty ones.
    seg_dirty: Vec<(usize, usize)>,
    dirty_segs: Vec<u32>,
    /// Sync mode: peer entries written since the last sync.
    dirty_entries: Vec<u32>,
    /// Peers (indexes into `states`) with commits since the last sync.
    committed: Vec<u32>,
    /// Occupancy per segment index (`MAX_SEGMENTS` entries).
    seg_use: Vec<SegUse>,
    /// Segments seen with every slot free (candidates for [`Store::maintain`]).
    empty: Vec<u32>,
    /// Producers are refused: [`Store::close_producers`] was called or the [`Store`] dropped.
    /// Checked by `reserve` and `commit` under this mutex, so no commit follows a close.
    closed: bool,
    /// The [`Store`] was dropped: the files are released as soon as `reservations` is 0.
    store_gone: bool,
    /// Outbound reservations claimed and not yet committed or dropped (any peer). Each may
    /// still write into a segment mapping, so the lock is held while any exists.
    reservations: u64,
    /// The exclusive lock on `LOCK` (`None` once released, see [`Inner::release`]).
    lock_file: Option<File>,
    /// Outstanding calls (request/response).
    calls: calls::CallTable,
}

/// State shared between the poll thread ([`Store`]) and producers ([`OutboundProducer`]).
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    durability: Durability,
    node_id: u32,
    epoch: u64,
    capacity: u64,
    /// Largest payload that can ever fit (`MAX_MESSAGE_LEN`, or less for a small capacity).
    max_len: usize,
    max_peers: u32,
    instance: u64,
    /// Mapped segments by index; an index is emptied only by `Store::maintain` (invariant M6).
    segments: Box<[SegCell<Segment>]>,
    inner: Mutex<Inner>,
    stopped: OnceLock<std::sync::Arc<io::Error>>,
    /// Notified when the last outstanding reservation of a closed store ends
    /// ([`Store::wait_producers`]).
    released: Condvar,
    /// Test hook (power-loss simulation). Outside `inner` so that a segment
    /// created by a producer while `sync` flushes still reaches it; lock
    /// order is `inner` before `hook`.
    hook: std::sync::Mutex<HookSlot>,
}

impl Shared {
    /// See [`Store::outbound_pending`].
    fn outbound_pending(&self, peer: u32) -> Option<(u64, u64)> {
        let inner = lock(&self.inner);
        let st = &inner.states[*inner.peers.get(&peer)? as usize];
        Some((st.low(), st.next_out))
    }

    #[inline]
    fn check_stopped(&self) -> Result<()> {
        match self.stopped.get() {
            Some(e) => Err(StoreError::Stopped(e.clone())),
            None => Ok(()),
        }
    }

    /// Calls the flush hook, if one is set.
    fn flushed(&self, path: &Path, off: u64, len: u64) {
        let mut hook = self.hook.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hook.0.as_mut() {
            h(path, off, len);
        }
    }

    #[inline]
    fn seg(&self, i: u32) -> Option<&Segment> {
        self.segments.get(i as usize)?.get()
    }

    /// [`StoreError::TooLarge`] if a `len`-byte message can never fit this store.
    #[inline]
    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max_len {
            return Err(StoreError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        Ok(())
    }

    fn payload(&self, slot: SlotId, len: u32) -> Option<&[u8]> {
        let seg = self.seg(slot.seg)?;
        Some(seg.map.bytes(seg.off(slot.idx) + SLOT_HDR, len as usize))
    }

    /// The view of a held message, or of a gap marker from `seq` on (`lost` = `Some(last)`).
    /// Sound (M5): the slot is published and only `&mut Store` methods free it.
    #[allow(clippy::too_many_arguments)]
    fn message_ref(
        &self,
        seq: u64,
        lost: Option<u64>,
        slot: SlotId,
        len: u32,
        crc: u32,
        flags: u8,
    ) -> Option<MessageRef<'_>> {
        if lost.is_some() {
            return Some(MessageRef {
                seq,
                crc: 0,
                payload: &[],
                lost_through: lost,
                flags: 0,
            });
        }
        Some(MessageRef {
            seq,
            crc,
            payload: self.payload(slot, len)?,
            lost_through: None,
            flags,
        })
    }
}

/// Writes little-endian words into `map` at `off`, one 8-byte store each (see
/// `SlotHeader::encode_words`).
#[inline]
fn write_words(map: &MappedFile, off: usize, words: &[u64]) {
    for (i, w) in words.iter().enumerate() {
        map.write(off + 8 * i, &w.to_le_bytes());
    }
}

/// A persistent message store. Owned by the poll thread; `Send`, not `Sync`-shared.
///
/// Dropping a `Store` does no work beyond recording the next-seq floors, closing it to
/// producers, unmapping and unlocking: to the files it is the same as the process dying, which
/// is why tests use drop + reopen as a process-death crash. If a producer thread holds an
/// [`OutboundReservation`] at that moment, the unmapping and unlocking wait for it (see
/// [`Store::close`]).
///
/// A committed message stays in the store until the peer acknowledges it, across a drop (or
/// the process dying) and a reopen:
///
/// ```
/// use hrpc_store::{Store, StoreConfig};
///
/// let dir = tempfile::tempdir()?;
/// let cfg = StoreConfig::new(1);
/// let store = Store::open(dir.path(), &cfg)?;
/// let seq = store.producer().send(2, b"order #17")?;
/// assert_eq!(seq, 1);
/// drop(store); // to the files, the same as the process being killed here
///
/// let mut store = Store::open(dir.path(), &cfg)?;
/// assert_eq!(store.outbound_seqs(2), vec![1]);
/// assert_eq!(store.outbound_message(2, seq).unwrap().payload(), b"order #17");
/// // Peer 2 acknowledged it: the slot is freed, and the next message gets seq 2.
/// assert_eq!(store.release_outbound_through(2, seq)?, 1);
/// assert!(store.outbound_seqs(2).is_empty());
/// assert_eq!(store.producer().send(2, b"order #18")?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    producer: OutboundProducer,
    inbound: InboundIndex,
    /// Sync mode: slots released since the last sync; freed after the cursor records that make
    /// freeing them safe are durable.
    deferred: Vec<SlotId>,
    /// Scratch for [`Store::sync`]: `(peer index, next seq)` captured under the lock.
    captured: Vec<(u32, u64)>,
    /// What open found.
    report: OpenReport,
}

impl Store {
    /// This node's id (from the superblock).
    pub fn node_id(&self) -> u32 {
        self.shared.node_id
    }

    /// This store's epoch: 64 random bits (never 0) drawn from the operating system when the
    /// store was created. It says nothing about when, and two epochs are not ordered: it is
    /// the node's secret, from which the protocol derives what it shows its peers.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// The durability mode this store was opened with.
    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}
