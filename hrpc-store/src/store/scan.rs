//! Read-only checks shared by [`Store::open`](super::Store::open) and
//! [`inspect`](super::inspect): reading the superblock, choosing each peer entry's current
//! record copy (and spotting a second record for one peer), validating a segment header, and
//! validating one published slot. Nothing here writes; callers bring the bytes, from a mapping
//! (`open`) or from `pread` (`inspect`), so both judge a store by the same rules.

use super::alloc::SEG_MAX;
use super::files::corrupt;
use super::recovery::Candidate;
use super::report::OpenReport;
use super::{IdMap, Result, SlotId};
use crate::error::StoreError;
use crate::layout::{
    COPIES, ENTRY_LEN, KIND_CALL, KIND_IN_LOST, KIND_OUT_LOST, RECORD_LEN, Record, SEG_HDR,
    SLOT_HDR, SUPER_LEN, SegHeader, SlotHeader, Superblock, class_size,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Reads and validates the superblock of `meta` with `pread`; returns it and the file length.
/// A file shorter than the superblock, or a superblock failing its checks, is
/// [`StoreError::Corrupt`].
pub(super) fn read_superblock(file: &File, path: &Path) -> Result<(Superblock, u64)> {
    let meta_len = file.metadata().map_err(StoreError::io("stat", path))?.len();
    if meta_len < 64 {
        return Err(corrupt(path, format!("truncated to {meta_len} bytes")));
    }
    let mut sbb = [0u8; 64];
    file.read_exact_at(&mut sbb, 0)
        .map_err(StoreError::io("read superblock of", path))?;
    let sb = Superblock::decode(&sbb).map_err(|r| corrupt(path, r))?;
    Ok((sb, meta_len))
}

/// The valid copy (crc, generation ≠ 0, known flags) with the highest generation in one peer
/// entry, and its copy index; `None` if no copy is valid (a free entry).
pub(super) fn best_copy(entry: &[u8; ENTRY_LEN]) -> Option<(Record, u8)> {
    let mut best: Option<(Record, u8)> = None;
    for c in 0..COPIES {
        if let Some(r) = Record::decode(&entry[c * RECORD_LEN..(c + 1) * RECORD_LEN])
            && best.is_none_or(|(b, _)| r.generation > b.generation)
        {
            best = Some((r, c as u8));
        }
    }
    best
}

/// The peer table as found: one current record per peer, and the entries that are free.
#[derive(Debug, Default)]
pub(super) struct PeerRecords {
    /// `(entry, record, copy)`, one per peer, entries in descending order.
    pub(super) found: Vec<(u32, Record, u8)>,
    /// Free entries (no valid copy, or shadowed by a second record of a peer), descending.
    pub(super) free: Vec<u32>,
    /// Entries holding a record that a newer record of the same peer shadows (damage).
    pub(super) shadowed: Vec<u32>,
}

/// Reads every entry of the peer table (`entry(e, buf)` fills entry `e`) and keeps, per peer,
/// the newest record; a second record for one peer is reported as damage in `report`.
pub(super) fn scan_records(
    max_peers: u32,
    mut entry: impl FnMut(u32, &mut [u8; ENTRY_LEN]),
    meta_path: &Path,
    report: &mut OpenReport,
) -> PeerRecords {
    let mut out = PeerRecords::default();
    let mut by_peer: IdMap<usize> = IdMap::default();
    let mut buf = [0u8; ENTRY_LEN];
    for e in (0..max_peers).rev() {
        entry(e, &mut buf);
        let Some((rec, c)) = best_copy(&buf) else {
            out.free.push(e);
            continue;
        };
        if let Some(&other) = by_peer.get(&rec.peer) {
            // Two entries for one peer: only possible through outside damage. Keep the newer.
            report.damage(
                meta_path,
                (SUPER_LEN + e as usize * ENTRY_LEN) as u64,
                format!("a second record for peer {}", rec.peer),
            );
            let o = &mut out.found[other];
            if o.1.generation < rec.generation {
                *o = (e, rec, c);
            }
            continue;
        }
        by_peer.insert(rec.peer, out.found.len());
        out.found.push((e, rec, c));
    }
    // Entries shadowed by duplicates are neither free nor used; `open` zeroes them so they
    // become free.
    // Sets, not list scans: the table may have `MAX_PEERS` entries.
    let taken: std::collections::HashSet<u32> = out
        .found
        .iter()
        .map(|f| f.0)
        .chain(out.free.iter().copied())
        .collect();
    out.shadowed = (0..max_peers).filter(|e| !taken.contains(e)).collect();
    out.free.extend(&out.shadowed);
    out.free.sort_unstable_by(|a, b| b.cmp(a));
    out
}

/// Validates the header of segment file `seg-NNNNNN` (`index` = NNNNNN) of the store with
/// superblock epoch `epoch`: checksum, version, geometry, index and epoch, and a size the
/// store could have created. Returns what is wrong otherwise.
pub(super) fn check_segment_header(
    index: u32,
    hb: &[u8; SEG_HDR],
    epoch: u64,
) -> std::result::Result<SegHeader, &'static str> {
    let h = SegHeader::decode(hb)?;
    if h.index != index || h.epoch != epoch {
        return Err("segment belongs to another store or index");
    }
    if h.file_len() > (SEG_MAX + class_size(h.class as usize) + SEG_HDR) as u64 {
        return Err("segment larger than any the store creates");
    }
    Ok(h)
}

/// Checks the header bytes 8..64 of a slot whose state word is `state` (nonzero: published)
/// and whose payload capacity is `cap`. The header checksum is checked before any field is
/// used.
pub(super) fn check_slot_header(
    state: u64,
    hdr: &[u8; SLOT_HDR - 8],
    cap: usize,
) -> std::result::Result<SlotHeader, &'static str> {
    let h = SlotHeader::decode(hdr).ok_or("header fails its checksum or has a bad field")?;
    if h.generation != state {
        return Err("header generation differs from the state word");
    }
    if h.len as usize > cap {
        return Err("payload length exceeds the slot");
    }
    Ok(h)
}

/// Completes the check of a published slot with header `h` (from [`check_slot_header`]) and
/// its `h.len` payload bytes: the payload checksum and a gap marker's range. Returns the
/// recovery candidate it is.
pub(super) fn check_slot_payload(
    h: &SlotHeader,
    payload: &[u8],
    slot: SlotId,
) -> std::result::Result<Candidate, &'static str> {
    if payload.len() != h.len as usize || crc32c::crc32c(payload) != h.crc {
        return Err("payload fails its checksum");
    }
    let last = if h.kind == KIND_OUT_LOST || h.kind == KIND_IN_LOST {
        // A marker's length is 8 (checked by `SlotHeader::decode`).
        let b: [u8; 8] = payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("gap marker payload too short")?;
        let last = u64::from_le_bytes(b);
        if last < h.seq {
            return Err("gap marker range ends before it starts");
        }
        last
    } else {
        h.seq
    };
    Ok(Candidate {
        index: 0,
        peer: h.peer,
        kind: h.kind,
        seq: h.seq,
        last,
        generation: h.generation,
        inc: h.inc,
        len: h.len,
        crc: h.crc,
        slot,
        flags: h.flags,
        link_inc: h.link_inc,
        link: h.link,
        deadline_ms: if h.kind == KIND_CALL {
            payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or("call payload too short")?
        } else {
            0
        },
    })
}
