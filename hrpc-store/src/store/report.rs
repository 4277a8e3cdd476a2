//! The value types the store's API returns — [`MessageRef`], [`OpenReport`] and its
//! [`Damage`] and [`LostRange`] entries, [`ResetReport`], and the [`StoreReport`] of
//! [`Store::inspect`] — and the read-only inspection itself.

#[cfg(doc)]
use super::config::{Durability, StoreConfig};
use super::{LOCK_FILE, META_FILE, Store};
use crate::sync::lock;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A committed message borrowed from the store (zero-copy view into the mapping), or a gap
/// marker: a range of seqs that will never be delivered ([`MessageRef::lost_through`]).
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    pub(super) seq: u64,
    pub(super) crc: u32,
    pub(super) payload: &'a [u8],
    pub(super) lost_through: Option<u64>,
    pub(super) flags: u8,
}

impl<'a> MessageRef<'a> {
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The payload bytes, in the mapped file.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// crc32c of the payload (verified at commit and at recovery).
    pub fn crc(&self) -> u32 {
        self.crc
    }
    /// `Some(last)` if this is a gap marker: seqs `seq()..=last` are gone (discarded, or lost
    /// with a damaged store) and will never be delivered; the payload is then empty.
    pub fn lost_through(&self) -> Option<u64> {
        self.lost_through
    }
    /// The message's flags as committed or received: [`FLAG_CALL`](crate::FLAG_CALL) if its
    /// payload starts with a call envelope; 0 for a plain message or a gap marker.
    pub fn flags(&self) -> u8 {
        self.flags
    }
}

/// Something wrong found in a store's files by [`Store::open`] (or by
/// [`inspect_dir`](crate::inspect::inspect_dir)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset in it where the damage was found.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// Outbound messages lost from a damaged store: seqs `first..=last` to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LostRange {
    /// Peer node id.
    pub peer: u32,
    /// First lost seq.
    pub first: u64,
    /// Last lost seq.
    pub last: u64,
}

/// What [`Store::open`] found and did ([`Store::open_report`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Damage found (only with [`StoreConfig::recover_damaged`]; otherwise open fails). At
    /// most [`OpenReport::MAX_DAMAGE`] entries; `damage_count` counts them all.
    pub damage: Vec<Damage>,
    /// Number of problems found, including those not listed in `damage`.
    pub damage_count: usize,
    /// Outbound seqs lost with the damage. A gap marker now stands for each range, so the peer
    /// is told and its stream does not stall. A range may include seqs the peer had already
    /// persisted; its own `Lost` report is exact.
    pub lost: Vec<LostRange>,
    /// Slots found half-written (torn by a power loss in [`Durability::Sync`] mode) and freed.
    pub torn_slots: usize,
    /// Slots already acknowledged or consumed, superseded, or of an older peer session, freed.
    pub stale_slots: usize,
    /// Messages and markers found intact and kept.
    pub live_slots: usize,
}

impl OpenReport {
    /// Most entries kept in [`OpenReport::damage`](field@OpenReport::damage).
    pub const MAX_DAMAGE: usize = 1000;

    pub(super) fn damage(&mut self, file: &Path, offset: u64, what: impl Into<String>) {
        self.damage_count += 1;
        if self.damage.len() < Self::MAX_DAMAGE {
            self.damage.push(Damage {
                file: file.to_path_buf(),
                offset,
                what: what.into(),
            });
        }
    }
}

/// What to do with a peer's unacknowledged outbound messages in [`Store::reset_peer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundOnReset {
    /// Keep them and their sequence numbers.
    Keep,
    /// Free them and restart outbound numbering at 1. Enumerate them first with
    /// [`Store::outbound_seqs`] / [`Store::outbound_message`] to re-send their payloads.
    Drop,
}

/// Result of [`Store::reset_peer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetReport {
    /// Inbound messages (persisted, not consumed) freed.
    pub inbound_dropped: usize,
    /// Outbound messages freed (only with [`OutboundOnReset::Drop`]).
    pub outbound_dropped: usize,
    /// Outbound messages kept (only with [`OutboundOnReset::Keep`]).
    pub outbound_kept: usize,
}

/// Per-peer part of a [`StoreReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// Peer node id.
    pub peer: u32,
    /// The peer's session epoch, if recorded.
    pub epoch: Option<u64>,
    /// Next outbound seq to be assigned.
    pub next_outbound_seq: u64,
    /// Highest cumulatively acknowledged outbound seq.
    pub acked_outbound_seq: u64,
    /// Highest consumed inbound seq.
    pub consumed_inbound_seq: u64,
    /// Pending outbound messages.
    pub outbound_count: usize,
    /// Payload bytes of pending outbound messages.
    pub outbound_bytes: u64,
    /// Lowest pending outbound seq.
    pub oldest_outbound: Option<u64>,
    /// Persisted, unconsumed inbound messages.
    pub inbound_count: usize,
    /// Payload bytes of those.
    pub inbound_bytes: u64,
    /// Lowest of those.
    pub oldest_inbound: Option<u64>,
}

/// One file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Path.
    pub path: PathBuf,
    /// Length in bytes.
    pub bytes: u64,
}

/// Read-only inspection of a store ([`Store::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReport {
    /// Node id.
    pub node_id: u32,
    /// Node epoch.
    pub epoch: u64,
    /// Peers, sorted by id.
    pub peers: Vec<PeerReport>,
    /// Files (lock, meta, segments).
    pub files: Vec<FileReport>,
    /// Sum of file lengths.
    pub disk_bytes: u64,
    /// Slot bytes in use.
    pub used_bytes: u64,
    /// Configured capacity.
    pub capacity_bytes: u64,
}

impl Store {
    /// What [`Store::open`] found: damage (with [`StoreConfig::recover_damaged`]), lost
    /// outbound ranges, and how many slots it freed.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// `(slot bytes in use, capacity)`.
    pub fn usage(&self) -> (u64, u64) {
        (lock(&self.shared.inner).used, self.shared.capacity)
    }

    /// Read-only snapshot of the store's state: per-peer counts, bytes and cursors, file sizes.
    pub fn inspect(&self) -> StoreReport {
        let sh = &*self.shared;
        let inner = lock(&sh.inner);
        let mut peers: Vec<PeerReport> = inner
            .states
            .iter()
            .map(|st| {
                let (inbound_count, inbound_bytes, oldest_inbound) = self.inbound.summary(st.peer);
                PeerReport {
                    peer: st.peer,
                    epoch: (st.rec.peer_epoch != 0).then_some(st.rec.peer_epoch),
                    next_outbound_seq: st.next_out,
                    acked_outbound_seq: st.rec.acked_out,
                    consumed_inbound_seq: st.rec.consumed_in,
                    outbound_count: st.out.len(),
                    outbound_bytes: st.out_bytes,
                    oldest_outbound: st.out.front().map(|e| e.seq),
                    inbound_count,
                    inbound_bytes,
                    oldest_inbound,
                }
            })
            .collect();
        peers.sort_unstable_by_key(|p| p.peer);
        let mut files = Vec::new();
        let len_of = |f: &File| f.metadata().map_or(0, |m| m.len());
        files.push(FileReport {
            path: sh.dir.join(LOCK_FILE),
            bytes: inner.lock_file.as_ref().map_or(0, len_of),
        });
        files.push(FileReport {
            path: sh.dir.join(META_FILE),
            bytes: len_of(&inner.meta_file),
        });
        for i in 0..inner.nsegs {
            if let Some(seg) = sh.seg(i) {
                files.push(FileReport {
                    path: seg.path.clone(),
                    bytes: len_of(&seg.file),
                });
            }
        }
        StoreReport {
            node_id: sh.node_id,
            epoch: sh.epoch,
            peers,
            disk_bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            used_bytes: inner.used,
            capacity_bytes: sh.capacity,
        }
    }
}
