//! The report [`inspect_dir`](super::inspect_dir)(super::inspect_dir) returns: the store's files, segments,
//! peers, lock state and damage.

use super::super::report::{Damage, LostRange, PeerReport};
use crate::layout::{REC_INBOUND_STARTED, Record};
use std::path::PathBuf;

/// Whether a process holds the store's lock, as probed by [`inspect_dir`](super::inspect_dir).
///
/// The probe opens `LOCK` read-only (it never creates it) and asks for a *shared* `flock`
/// without waiting: refused means a [`Store`](crate::Store) holds the exclusive lock
/// ([`LockState::Held`]). Granted, it is released at once ([`LockState::Free`]); the owner of
/// a held lock is never disturbed. In the instant the probe holds the shared lock, a
/// concurrent [`Store::open`](crate::Store::open) of the directory would get
/// [`StoreError::Locked`](crate::StoreError::Locked) (and may simply retry).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LockState {
    /// No process holds the lock: the store is closed.
    Free,
    /// A live process (or another handle in this one) has the store open.
    Held,
    /// There is no `LOCK` file (the store was never opened, or the file was removed).
    NoLockFile,
    /// The lock could not be probed; the reason.
    Unknown(String),
}

/// What a file in the store directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FileKind {
    /// `LOCK`.
    Lock,
    /// `meta`: superblock and peer table.
    Meta,
    /// `seg-NNNNNN`.
    Segment,
    /// `*.tmp`: left by an interrupted file creation; the next open deletes it.
    Temporary,
    /// Anything else (not the store's; ignored by `open`).
    Other,
}

/// One entry of the store directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FileInfo {
    /// File name in the directory.
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Length in bytes.
    pub bytes: u64,
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SegmentInfo {
    /// File name (`seg-NNNNNN`).
    pub name: String,
    /// Segment index (NNNNNN).
    pub index: u32,
    /// File length in bytes.
    pub bytes: u64,
    /// Whether its header is valid; if not, nothing below it was read and the counts are 0.
    pub header_ok: bool,
    /// Size class index.
    pub class: u32,
    /// Slot size in bytes (header and payload).
    pub slot_size: u32,
    /// Slot count.
    pub slots: u32,
    /// Length the header implies (header + slots); longer than `bytes` if the file was cut.
    pub expected_bytes: u64,
    /// Slots holding a message or gap marker the store keeps.
    pub live_slots: u32,
    /// Published slots the store would free on open: acknowledged, consumed, superseded or
    /// of an older session (normal after a crash; not damage).
    pub stale_slots: u32,
    /// Published slots failing their checks (damage in Process mode, a torn write after a
    /// power loss in Sync mode).
    pub damaged_slots: u32,
    /// Free slots (state word 0, or past the end of a cut file).
    pub free_slots: u32,
    /// Bytes of live slots.
    pub used_bytes: u64,
    /// Bytes of the other slots: free once the store is opened.
    pub free_bytes: u64,
}

/// One peer's record and streams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerInfo {
    /// Peer node id.
    pub peer: u32,
    /// Whether the peer table holds a record for it (slots without one are damage).
    pub has_record: bool,
    /// Peer table entry of the record.
    pub entry: Option<u32>,
    /// Generation of the record's current copy.
    pub record_generation: u64,
    /// Outbound incarnation (bumped when a reset drops the outbound stream).
    pub outbound_incarnation: u32,
    /// Inbound incarnation (bumped by each reset).
    pub inbound_incarnation: u32,
    /// Whether the inbound stream has started in this incarnation.
    pub inbound_started: bool,
    /// The peer's session token as recorded; a secret shared with that peer, so not
    /// serialized.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub session_epoch: Option<u64>,
    /// Next-seq floor as recorded: every outbound seq below it was committed.
    pub next_outbound_floor: u64,
    /// Next outbound seq the store will assign (as `open` computes it).
    pub next_outbound_seq: u64,
    /// Highest cumulatively acknowledged outbound seq.
    pub acked_outbound_seq: u64,
    /// Lowest pending (unacknowledged) outbound seq held; pending seqs run from it to
    /// `next_outbound_seq - 1`.
    pub lowest_outbound_seq: Option<u64>,
    /// Pending outbound messages and gap markers.
    pub outbound_count: usize,
    /// Their payload bytes.
    pub outbound_bytes: u64,
    /// Highest consumed inbound seq.
    pub consumed_inbound_seq: u64,
    /// Lowest persisted, unconsumed inbound seq.
    pub lowest_inbound_seq: Option<u64>,
    /// Highest inbound seq held (a gap marker counts with the end of its range).
    pub highest_inbound_seq: Option<u64>,
    /// Persisted, unconsumed inbound messages and gap markers.
    pub inbound_count: usize,
    /// Calls to this peer still waiting for their response or timeout.
    pub calls_pending: usize,
    /// Their payload bytes.
    pub inbound_bytes: u64,
}

impl PeerInfo {
    /// The same facts in the form of [`Store::inspect`](crate::Store::inspect), for comparison
    /// with a store opened on the directory.
    pub fn peer_report(&self) -> PeerReport {
        PeerReport {
            peer: self.peer,
            epoch: self.session_epoch,
            next_outbound_seq: self.next_outbound_seq,
            acked_outbound_seq: self.acked_outbound_seq,
            consumed_inbound_seq: self.consumed_inbound_seq,
            outbound_count: self.outbound_count,
            outbound_bytes: self.outbound_bytes,
            oldest_outbound: self.lowest_outbound_seq,
            inbound_count: self.inbound_count,
            inbound_bytes: self.inbound_bytes,
            oldest_inbound: self.lowest_inbound_seq,
        }
    }

    pub(super) fn new(peer: u32, rec: Option<(u32, Record)>) -> Self {
        let (entry, r) = match rec {
            Some((e, r)) => (Some(e), r),
            None => (
                None,
                Record {
                    peer,
                    next_out: 1,
                    ..Record::default()
                },
            ),
        };
        PeerInfo {
            peer,
            has_record: entry.is_some(),
            entry,
            record_generation: r.generation,
            outbound_incarnation: r.out_inc,
            inbound_incarnation: r.in_inc,
            inbound_started: r.flags & REC_INBOUND_STARTED != 0,
            session_epoch: (r.peer_epoch != 0).then_some(r.peer_epoch),
            next_outbound_floor: r.next_out,
            next_outbound_seq: r.next_out.max(r.acked_out.saturating_add(1)).max(1),
            acked_outbound_seq: r.acked_out,
            lowest_outbound_seq: None,
            outbound_count: 0,
            outbound_bytes: 0,
            consumed_inbound_seq: r.consumed_in,
            lowest_inbound_seq: None,
            highest_inbound_seq: None,
            inbound_count: 0,
            calls_pending: 0,
            inbound_bytes: 0,
        }
    }
}

/// What [`inspect_dir`](super::inspect_dir) found in a store directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Inspection {
    /// The store directory.
    pub dir: PathBuf,
    /// On-disk format version (stores of another version are refused as unreadable).
    pub format_version: u32,
    /// This node's id.
    pub node_id: u32,
    /// The store epoch: the node's secret (see [`Store::epoch`](crate::Store::epoch)), so not
    /// serialized.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub epoch: u64,
    /// Size of the peer table.
    pub max_peers: u32,
    /// Whether a live process holds the store's lock. If it does, the files are read while
    /// they may change: the result is a snapshot of a moving store, and anything written
    /// during the inspection may show as damage. Inspect again to tell.
    pub lock: LockState,
    /// Every entry of the directory, by name.
    pub files: Vec<FileInfo>,
    /// Segment files, by index.
    pub segments: Vec<SegmentInfo>,
    /// Peers with a record or slots, by id.
    pub peers: Vec<PeerInfo>,
    /// Sum of the file lengths.
    pub disk_bytes: u64,
    /// Bytes of live slots (what [`Store::usage`](crate::Store::usage) counts).
    pub used_bytes: u64,
    /// Messages and gap markers kept.
    pub live_slots: usize,
    /// Published slots `open` would free (acknowledged, consumed, superseded, older session).
    pub stale_slots: usize,
    /// Published slots failing their checks.
    pub damaged_slots: usize,
    /// Outbound seqs missing from the streams (damage): `open` with `recover_damaged` would
    /// publish a gap marker for each range.
    pub lost: Vec<LostRange>,
    /// Damage found, in the order `open` finds it, at most
    /// [`OpenReport::MAX_DAMAGE`](crate::OpenReport::MAX_DAMAGE) entries.
    pub damage: Vec<Damage>,
    /// Problems found, including those not listed in `damage`.
    pub damage_count: usize,
}

impl Inspection {
    /// No damage was found: the store opens as it is, losing nothing.
    pub fn is_healthy(&self) -> bool {
        self.damage_count == 0
    }

    /// The peer `peer`, if it has a record or slots.
    pub fn peer(&self, peer: u32) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.peer == peer)
    }
}
