//! Read-only inspection of a store directory, for operators: [`inspect_dir`] reports what a
//! store holds (node id, epoch, segment files and their use, per-peer cursors and pending
//! messages), whether a live process holds its lock, and every damaged record, header or slot
//! it finds, with file and byte offset.
//!
//! It owns nothing on disk and changes nothing: it takes no lock (it only probes the `LOCK`
//! file, see [`LockState`]), creates and deletes no file, opens every file read-only, maps
//! nothing and writes nothing, so it is safe next to a live node and on a damaged or
//! half-written store. Files are read with `pread` (`FileExt::read_at`) by offset, a bounded
//! chunk at a time. The rules are those of [`Store::open`](crate::Store::open): the superblock,
//! record, segment-header and slot checks come from the same `scan` functions, and the
//! decisions about streams from the same recovery plan, so a store inspected as healthy opens
//! without damage, and the damage listed is what `open` with
//! [`StoreConfig::recover_damaged`](crate::StoreConfig) would report (same files and offsets),
//! plus what `open` refuses outright (a bad segment header, a cut peer table), which inspection
//! reports and reads past.
//!
//! Invariant: for any directory contents whatsoever — missing, empty, truncated or garbage
//! files — inspection returns `Ok` or `Err` and never panics, and it leaves every file as it
//! found it.
#![forbid(unsafe_code)]

mod read;
mod types;

use read::{open_regular, probe_lock, read_full_at, scan_segment};
pub use types::{FileInfo, FileKind, Inspection, LockState, PeerInfo, SegmentInfo};

use super::config::Durability;
use super::recovery::{Candidate, RecoveryPlan, keep_calls};
use super::report::OpenReport;
use super::scan::{read_superblock, scan_records};
use super::{LOCK_FILE, META_FILE};
use crate::error::StoreError;
use crate::layout::{ENTRY_LEN, FORMAT_VERSION, KIND_CALL, Record, SUPER_LEN, is_outbound};
use std::collections::BTreeMap;
use std::fs::{self};
use std::io;
use std::path::Path;

/// Inspects the store in `dir`, judging it as a [`Durability::Process`] store (the default);
/// see [`inspect_dir_as`].
pub fn inspect_dir(dir: &Path) -> Result<Inspection, StoreError> {
    inspect_dir_as(dir, Durability::Process)
}

/// Inspects the store in `dir` without taking its lock and without writing anything (see the
/// module documentation). `durability` is the mode the store is used in, which decides, as
/// in [`Store::open`](crate::Store::open), whether a torn slot, a slot without a peer record
/// or a hole above the recorded floor is damage (Process) or what a power loss leaves (Sync).
///
/// Errors, when there is nothing to inspect: the directory cannot be listed
/// ([`StoreError::Io`]); `meta` is missing, shorter than its superblock, or the superblock
/// fails its checks ([`StoreError::Corrupt`]: nothing else can be interpreted without it);
/// `meta` cannot be read ([`StoreError::Io`]). Everything else found wrong is listed in
/// [`Inspection::damage`].
pub fn inspect_dir_as(dir: &Path, durability: Durability) -> Result<Inspection, StoreError> {
    let sync = durability == Durability::Sync;
    let mut files = Vec::new();
    let mut seg_files: Vec<(u32, String)> = Vec::new();
    for ent in fs::read_dir(dir).map_err(StoreError::io("read store directory", dir))? {
        let ent = ent.map_err(StoreError::io("read store directory", dir))?;
        let os_name = ent.file_name();
        let name = os_name.to_string_lossy().into_owned();
        let bytes = ent.metadata().map_or(0, |m| m.len());
        // The same recognition as `open`.
        let kind = match os_name.to_str() {
            Some(LOCK_FILE) => FileKind::Lock,
            Some(META_FILE) => FileKind::Meta,
            Some(n) if n.ends_with(".tmp") => FileKind::Temporary,
            Some(n) => match n.strip_prefix("seg-") {
                Some(i) if i.len() == 6 => match i.parse::<u32>() {
                    Ok(i) => {
                        seg_files.push((i, name.clone()));
                        FileKind::Segment
                    }
                    Err(_) => FileKind::Other,
                },
                _ => FileKind::Other,
            },
            None => FileKind::Other,
        };
        files.push(FileInfo { name, kind, bytes });
    }
    files.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    seg_files.sort_unstable();
    let lock = probe_lock(dir);

    let meta_path = dir.join(META_FILE);
    let meta_file = match open_regular(&meta_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let reason = if seg_files.is_empty() {
                "missing: no store here"
            } else {
                "missing, but segment files exist"
            };
            return Err(super::files::corrupt(&meta_path, reason));
        }
        Err(e) => return Err(StoreError::io("open", &meta_path)(e)),
    };
    let (sb, meta_len) = read_superblock(&meta_file, &meta_path)?;
    let mut report = OpenReport::default();
    let table_end = (SUPER_LEN + sb.max_peers as usize * ENTRY_LEN) as u64;
    if meta_len < table_end {
        report.damage(
            &meta_path,
            meta_len,
            format!("peer table cut short: {meta_len} of {table_end} bytes"),
        );
    }
    let mut read_error = None;
    let records = scan_records(
        sb.max_peers,
        |e, buf| {
            let off = (SUPER_LEN + e as usize * ENTRY_LEN) as u64;
            if let Err(err) = read_full_at(&meta_file, buf, off) {
                buf.fill(0);
                read_error.get_or_insert(err);
            }
        },
        &meta_path,
        &mut report,
    );
    if let Some(e) = read_error {
        return Err(StoreError::io("read peer table of", &meta_path)(e));
    }

    let mut segments = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
    let mut damaged_slots = 0usize;
    for (i, name) in &seg_files {
        let path = dir.join(name);
        let mut info = SegmentInfo {
            name: name.clone(),
            index: *i,
            bytes: 0,
            header_ok: false,
            class: 0,
            slot_size: 0,
            slots: 0,
            expected_bytes: 0,
            live_slots: 0,
            stale_slots: 0,
            damaged_slots: 0,
            free_slots: 0,
            used_bytes: 0,
            free_bytes: 0,
        };
        scan_segment(
            &path,
            *i,
            sb.epoch,
            sync,
            &mut info,
            &mut cands,
            &mut report,
        );
        damaged_slots += info.damaged_slots as usize;
        segments.push(info);
    }

    let (mut calls, mut cands): (Vec<Candidate>, Vec<Candidate>) =
        cands.into_iter().partition(|c| c.kind == KIND_CALL);
    // As `open` does: one call slot per call id, the newest.
    let (calls_keep, calls_free) = keep_calls(&mut calls);
    let mut rec_of: BTreeMap<u32, (u32, Record)> = records
        .found
        .iter()
        .map(|&(e, r, _)| (r.peer, (e, r)))
        .collect();
    let plan = RecoveryPlan::build(
        &mut cands,
        |p| rec_of.get(&p).map(|x| x.1),
        rec_of.keys().copied(),
        sync,
        &meta_path,
        &mut report,
    );
    // As `open` would: requests consumed by a reply recovery keeps.
    for &(peer, through) in &plan.relinked {
        if let Some(x) = rec_of.get_mut(&peer) {
            x.1.consumed_in = through;
        }
    }

    let mut peers: BTreeMap<u32, PeerInfo> = rec_of
        .iter()
        .map(|(&p, &r)| (p, PeerInfo::new(p, Some(r))))
        .collect();
    let seg_pos: BTreeMap<u32, usize> = segments
        .iter()
        .enumerate()
        .map(|(k, s)| (s.index, k))
        .collect();
    let mut used_bytes = 0u64;
    for &k in &plan.keep {
        let Some(c) = cands.get(k) else { continue };
        if let Some(s) = seg_pos.get(&c.slot.seg).and_then(|&k| segments.get_mut(k)) {
            s.live_slots += 1;
            s.used_bytes += u64::from(s.slot_size);
            used_bytes += u64::from(s.slot_size);
        }
        let p = peers
            .entry(c.peer)
            .or_insert_with(|| PeerInfo::new(c.peer, None));
        if is_outbound(c.kind) {
            p.outbound_count += 1;
            p.outbound_bytes += u64::from(c.len);
            p.lowest_outbound_seq = Some(p.lowest_outbound_seq.map_or(c.seq, |l| l.min(c.seq)));
            p.next_outbound_seq = p.next_outbound_seq.max(c.last.saturating_add(1));
        } else {
            p.inbound_count += 1;
            p.inbound_bytes += u64::from(c.len);
            p.lowest_inbound_seq = Some(p.lowest_inbound_seq.map_or(c.seq, |l| l.min(c.seq)));
            p.highest_inbound_seq = Some(p.highest_inbound_seq.map_or(c.last, |h| h.max(c.last)));
        }
    }
    for c in calls_keep.iter().map(|&k| &calls[k]) {
        if let Some(s) = seg_pos.get(&c.slot.seg).and_then(|&k| segments.get_mut(k)) {
            s.live_slots += 1;
            s.used_bytes += u64::from(s.slot_size);
            used_bytes += u64::from(s.slot_size);
        }
        peers
            .entry(c.peer)
            .or_insert_with(|| PeerInfo::new(c.peer, None))
            .calls_pending += 1;
    }
    let stale = plan.free.iter().filter_map(|&k| cands.get(k));
    for c in stale.chain(calls_free.iter().map(|&k| &calls[k])) {
        if let Some(s) = seg_pos.get(&c.slot.seg).and_then(|&k| segments.get_mut(k)) {
            s.stale_slots += 1;
        }
    }
    for s in &mut segments {
        s.free_bytes = u64::from(s.slots.saturating_sub(s.live_slots)) * u64::from(s.slot_size);
    }

    Ok(Inspection {
        dir: dir.to_path_buf(),
        format_version: FORMAT_VERSION,
        node_id: sb.node_id,
        epoch: sb.epoch,
        max_peers: sb.max_peers,
        lock,
        disk_bytes: files.iter().map(|f| f.bytes).sum(),
        files,
        live_slots: plan.keep.len() + calls_keep.len(),
        stale_slots: plan.free.len() + calls_free.len(),
        damaged_slots,
        segments,
        peers: peers.into_values().collect(),
        used_bytes,
        lost: plan.lost,
        damage: report.damage,
        damage_count: report.damage_count,
    })
}
