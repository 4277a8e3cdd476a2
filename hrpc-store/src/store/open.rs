//! Opening a store directory: the `LOCK`, the superblock, the peer records (per entry, the
//! valid copy with the highest generation), the segment scan and slot validation, then the
//! [`RecoveryPlan`](super::recovery::RecoveryPlan) applied and the in-memory state built.
//! Phase 1 only reads; a damaged store that is not to be recovered is refused with nothing
//! changed.

use super::alloc::{ClassState, max_payload, seg_class, seg_use_of, sh_segments_set};
use super::calls::CallTable;
use super::config::{Durability, StoreConfig};
use super::files::{corrupt, create_file, fallocate, fsync_dir};
use super::hooks::HookSlot;
use super::producer::OutboundProducer;
use super::records::new_state;
use super::recovery::{Candidate, RecoveryPlan, keep_calls};
use super::report::OpenReport;
use super::scan::{
    PeerRecords, check_segment_header, check_slot_header, check_slot_payload, read_superblock,
    scan_records,
};
use super::{
    IdMap, Inner, LOCK_FILE, MAX_SEGMENTS, META_FILE, OutEntry, PeerState, Result, Segment, Shared,
    SlotId, Store,
};
use crate::error::StoreError;
use crate::inbound_index::{InEntry, InboundIndex};
use crate::layout::{
    ENTRY_LEN, KIND_CALL, KIND_IN_LOST, KIND_OUT_LOST, NUM_CLASSES, SEG_HDR, SLOT_HDR, SUPER_LEN,
    Superblock, class_size, is_outbound,
};
use crate::map::{MappedFile, SegCell};
use crate::sync::{Arc, Condvar, Mutex, Ordering, lock};
use crate::{MAX_PEERS, MIN_CAPACITY, failpoint};
use std::fs::OpenOptions;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;
use std::{fs, io};

fn random_nonzero_u64() -> u64 {
    use std::hash::BuildHasher;
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(now);
        h.write_u32(std::process::id());
        let v = h.finish();
        if v != 0 {
            return v;
        }
    }
}

impl Store {
    /// Opens (creating if missing) the store in directory `dir`, recovering its state.
    ///
    /// `open` is a safe function. Its soundness rests on the exclusive lock it takes on
    /// `dir/LOCK` before mapping anything (a second `open`, in this or another process, gets
    /// [`StoreError::Locked`]) and on this **user obligation: do not truncate, write, replace or
    /// otherwise modify the store's files while a `Store` has them open** (reading/copying them
    /// is fine). Doing so is outside the store's contract and may crash the process. Damaged or
    /// truncated files found at open time are handled: torn records are dropped, unrecoverable
    /// damage yields [`StoreError::Corrupt`].
    ///
    /// Recovery: validates every slot (header checksum before any length is used, bounds, payload
    /// checksum, generation), frees torn or unpublished slots and slots already acknowledged or
    /// consumed according to the peer records, dedupes on (peer, seq), and rebuilds the indexes.
    /// Recovery is idempotent.
    ///
    /// Runs in an info-level `tracing` span `store_open` (fields `dir`, `node_id`) that
    /// records what recovery found: `live`, `torn` and `stale` slots, `damaged` problems and
    /// `lost` outbound ranges.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<Store> {
        use tracing::field::Empty;
        let span = tracing::info_span!(
            "store_open",
            dir = %dir.display(),
            node_id = cfg.node_id,
            live = Empty,
            torn = Empty,
            stale = Empty,
            damaged = Empty,
            lost = Empty,
        );
        let _entered = span.enter();
        let store = Self::open_inner(dir, cfg)?;
        if !span.is_disabled() {
            let r = store.open_report();
            span.record("live", r.live_slots);
            span.record("torn", r.torn_slots);
            span.record("stale", r.stale_slots);
            span.record("damaged", r.damage_count);
            span.record("lost", r.lost.len());
        }
        Ok(store)
    }

    fn open_inner(dir: &Path, cfg: &StoreConfig) -> Result<Store> {
        failpoint::init();
        if cfg.max_peers == 0 || cfg.max_peers > MAX_PEERS {
            return Err(StoreError::Config("max_peers must be in 1..=MAX_PEERS"));
        }
        if cfg.capacity_bytes < MIN_CAPACITY {
            return Err(StoreError::CapacityTooSmall {
                capacity: cfg.capacity_bytes,
                min: MIN_CAPACITY,
            });
        }
        fs::create_dir_all(dir).map_err(StoreError::io("create store directory", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(StoreError::io("open lock file", &lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("lock", &lock_path)(e)),
        }
        let sync = cfg.durability == Durability::Sync;

        // Directory scan: drop leftovers of interrupted file creation, collect segments.
        let mut seg_files = Vec::new();
        for ent in fs::read_dir(dir).map_err(StoreError::io("read store directory", dir))? {
            let ent = ent.map_err(StoreError::io("read store directory", dir))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                tracing::info!(file = name, "removing leftover temporary file");
                fs::remove_file(ent.path())
                    .map_err(StoreError::io("remove leftover file", &ent.path()))?;
            } else if let Some(n) = name.strip_prefix("seg-")
                && n.len() == 6
                && let Ok(i) = n.parse::<u32>()
            {
                seg_files.push((i, ent.path()));
            }
        }
        seg_files.sort_unstable_by_key(|s| s.0);

        // Superblock.
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            if !seg_files.is_empty() {
                return Err(corrupt(&meta_path, "missing, but segment files exist"));
            }
            let sb = Superblock {
                node_id: cfg.node_id,
                epoch: new_epoch().map_err(StoreError::io("draw the store epoch", dir))?,
                max_peers: cfg.max_peers,
            };
            let len = (SUPER_LEN + cfg.max_peers as usize * ENTRY_LEN) as u64;
            let tmp = dir.join("meta.tmp");
            drop(create_file(&tmp, len, &sb.encode(), true)?);
            fs::rename(&tmp, &meta_path).map_err(StoreError::io("rename new meta", &tmp))?;
            fsync_dir(dir)?;
            tracing::info!(dir = %dir.display(), node_id = cfg.node_id, epoch = sb.epoch, "created store");
        }
        let meta_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&meta_path)
            .map_err(StoreError::io("open", &meta_path))?;
        let (sb, meta_len) = read_superblock(&meta_file, &meta_path)?;
        if sb.node_id != cfg.node_id {
            return Err(StoreError::NodeIdMismatch {
                stored: sb.node_id,
                requested: cfg.node_id,
            });
        }
        let table_end = SUPER_LEN + sb.max_peers as usize * ENTRY_LEN;
        if meta_len < table_end as u64 {
            return Err(corrupt(
                &meta_path,
                format!("truncated to {meta_len} of {table_end} bytes"),
            ));
        }
        let meta = MappedFile::map(&meta_file, &meta_path, table_end, false, false)?;

        // Phase 1, read-only: peer records and slots are read and checked, and every decision
        // is made, before anything is written. A damaged store that is not to be recovered is
        // refused with nothing changed.
        let recover = cfg.recover_damaged;
        let mut report = OpenReport::default();

        // Peer records: per entry, the valid copy with the highest generation.
        let records = scan_records(
            sb.max_peers,
            |e, buf| meta.read(SUPER_LEN + e as usize * ENTRY_LEN, buf),
            &meta_path,
            &mut report,
        );
        let mut states: Vec<PeerState> = Vec::new();
        let mut peers: IdMap<u32> = IdMap::default();
        for &(e, rec, c) in &records.found {
            peers.insert(rec.peer, states.len() as u32);
            states.push(new_state(rec, e, c));
        }
        // Entries shadowed by duplicates are neither free nor used; zeroed below so they
        // become free.
        let PeerRecords {
            free: free_entries,
            shadowed,
            ..
        } = records;

        let segments: Box<[SegCell<Segment>]> = (0..MAX_SEGMENTS).map(|_| SegCell::new()).collect();
        let mut classes: Vec<ClassState> =
            (0..NUM_CLASSES).map(|_| ClassState::default()).collect();
        let mut nsegs = 0u32;
        let mut cands: Vec<Candidate> = Vec::new();
        // Call slots: not part of any stream.
        let mut calls: Vec<Candidate> = Vec::new();
        let mut max_gen = 0u64;
        let mut torn: Vec<SlotId> = Vec::new();
        let mut hdr = [0u8; SLOT_HDR - 8];
        for (i, path) in &seg_files {
            if *i as usize >= MAX_SEGMENTS {
                return Err(corrupt(path, "segment index out of range"));
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(StoreError::io("open segment", path))?;
            let flen = file
                .metadata()
                .map_err(StoreError::io("stat segment", path))?
                .len();
            if flen < SEG_HDR as u64 {
                return Err(corrupt(path, format!("truncated to {flen} bytes")));
            }
            let mut hb = [0u8; SEG_HDR];
            file.read_exact_at(&mut hb, 0)
                .map_err(StoreError::io("read header of segment", path))?;
            let h = check_segment_header(*i, &hb, sb.epoch).map_err(|r| corrupt(path, r))?;
            let len = h.file_len();
            if flen < len {
                // Files are created at full length (fallocate before rename): a shorter one was
                // cut while the store was closed, and the slots past the cut are gone.
                report.damage(path, flen, format!("cut short: {flen} of {len} bytes"));
                if !recover {
                    continue;
                }
                fallocate(&file, path, len)?;
            }
            let map = MappedFile::map(&file, path, len as usize, true, true)?;
            let seg = Segment {
                path: path.clone(),
                file,
                map,
                class: h.class as usize,
                slot_size: h.slot_size as usize,
                slots: h.slots,
            };
            let cap = seg.slot_size - SLOT_HDR;
            let cs = &mut classes[seg.class];
            cs.segs += 1;
            for idx in (0..seg.slots).rev() {
                let off = seg.off(idx);
                let w = seg.map.word(off);
                let state = w.load(Ordering::Acquire);
                let slot = SlotId { seg: *i, idx };
                if state == 0 {
                    cs.free.push(slot);
                    continue;
                }
                seg.map.read(off + 8, &mut hdr);
                let valid = check_slot_header(state, &hdr, cap).and_then(|h| {
                    let payload = seg.map.bytes(off + SLOT_HDR, h.len as usize);
                    check_slot_payload(&h, payload, slot)
                });
                match valid {
                    Ok(c) => {
                        max_gen = max_gen.max(c.generation);
                        if c.kind == KIND_CALL {
                            calls.push(c);
                        } else {
                            cands.push(c);
                        }
                    }
                    Err(_) => {
                        // A published slot is complete and checksummed (I1). Only a power loss
                        // can tear one (Sync mode: what it held was never durable); otherwise
                        // it was damaged while the store was closed.
                        if !sync {
                            report.damage(
                                path,
                                off as u64,
                                format!(
                                    "slot {idx}: published, but its header or payload fails its checksum"
                                ),
                            );
                        }
                        torn.push(slot);
                        cs.free.push(slot);
                    }
                }
            }
            if sh_segments_set(&segments, *i, seg).is_err() {
                return Err(corrupt(path, "duplicate segment index"));
            }
            nsegs = nsegs.max(*i + 1);
        }

        let (calls_keep, calls_free) = keep_calls(&mut calls);
        let plan = RecoveryPlan::build(
            &mut cands,
            |peer| peers.get(&peer).map(|&k| states[k as usize].rec),
            states.iter().map(|st| st.peer),
            sync,
            &meta_path,
            &mut report,
        );
        // Requests consumed by a reply whose consumption the peer record does not show yet.
        for &(peer, through) in &plan.relinked {
            if let Some(&k) = peers.get(&peer) {
                states[k as usize].rec.consumed_in = through;
            }
        }
        if !recover && report.damage_count > 0 {
            let first = &report.damage[0];
            return Err(StoreError::Damaged {
                file: first.file.clone(),
                offset: first.offset,
                what: first.what.clone(),
                problems: report.damage_count,
            });
        }
        for d in &report.damage {
            tracing::warn!(file = %d.file.display(), offset = d.offset, what = %d.what, "store damage: recovering");
        }

        // Phase 2: apply the plan.
        for &e in &shadowed {
            meta.write(SUPER_LEN + e as usize * ENTRY_LEN, &[0u8; ENTRY_LEN]);
        }
        let instance = random_nonzero_u64();
        let (seg_use, empty) = seg_use_of(&segments, &classes);
        let inner = Inner {
            classes,
            nsegs,
            used: 0,
            generation: 0,
            peers,
            states,
            free_entries,
            meta,
            meta_file,
            seg_dirty: vec![(0, 0); nsegs as usize],
            dirty_segs: Vec::new(),
            dirty_entries: Vec::new(),
            committed: Vec::new(),
            seg_use,
            empty,
            closed: false,
            store_gone: false,
            reservations: 0,
            lock_file: Some(lock_file),
            calls: CallTable::new(random_nonzero_u64()),
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            durability: cfg.durability,
            node_id: sb.node_id,
            epoch: sb.epoch,
            capacity: cfg.capacity_bytes,
            max_len: max_payload(cfg.capacity_bytes),
            max_peers: sb.max_peers,
            instance,
            segments,
            inner: Mutex::new(inner),
            stopped: OnceLock::new(),
            released: Condvar::new(),
            hook: std::sync::Mutex::new(HookSlot(None)),
        });
        let sh = &*shared;
        let mut inner = lock(&sh.inner);
        for &slot in &torn {
            if let Some(seg) = sh.seg(slot.seg) {
                seg.map.word(seg.off(slot.idx)).store(0, Ordering::Release);
            }
        }
        report.torn_slots = torn.len();
        report.stale_slots = plan.free.len();
        report.live_slots = plan.keep.len();
        for &k in &plan.free {
            let c = &cands[k];
            inner.used += class_size(seg_class(sh, c.slot)) as u64;
            inner.free_slot(sh, c.slot);
        }
        for c in calls_free.iter().map(|&k| &calls[k]) {
            inner.used += class_size(seg_class(sh, c.slot)) as u64;
            inner.free_slot(sh, c.slot);
        }
        for c in calls_keep.iter().map(|&k| &calls[k]) {
            inner.used += class_size(seg_class(sh, c.slot)) as u64;
            inner.calls.insert(c.seq, c.peer, c.deadline_ms, c.slot);
        }
        report.stale_slots += calls_free.len();
        report.live_slots += calls_keep.len();
        for &(peer, _) in &plan.relinked {
            let pidx = inner.peer_idx(sh, peer)?;
            inner.write_record(sh, pidx);
        }
        let mut inbound = InboundIndex::default();
        let mut cur_peer: Option<(u32, usize)> = None;
        for &k in &plan.keep {
            let c = &cands[k];
            inner.used += class_size(seg_class(sh, c.slot)) as u64;
            let pidx = match cur_peer {
                Some((p, i)) if p == c.peer => i,
                _ => {
                    let i = inner.peer_idx(sh, c.peer)?;
                    cur_peer = Some((c.peer, i));
                    i
                }
            };
            let lost = c.kind == KIND_OUT_LOST || c.kind == KIND_IN_LOST;
            if is_outbound(c.kind) {
                let st = &mut inner.states[pidx];
                st.out.push_back(OutEntry {
                    seq: c.seq,
                    last: c.last,
                    lost,
                    slot: c.slot,
                    len: c.len,
                    crc: c.crc,
                    flags: c.flags,
                });
                st.out_bytes += u64::from(c.len);
            } else {
                inbound.insert(
                    c.peer,
                    c.seq,
                    InEntry {
                        last: c.last,
                        lost,
                        slot: c.slot,
                        len: c.len,
                        crc: c.crc,
                        flags: c.flags,
                    },
                );
            }
        }
        inner.generation = max_gen + 1;
        // Gap markers for outbound seqs lost with the damage, so the peers are told.
        for r in &plan.lost {
            let pidx = inner.peer_idx(sh, r.peer)?;
            let e = inner.publish_marker(sh, pidx, r.peer, r.first, r.last, KIND_OUT_LOST)?;
            let st = &mut inner.states[pidx];
            let at = st.out.partition_point(|x| x.seq < r.first);
            st.out.insert(at, e);
            st.out_bytes += u64::from(e.len);
        }
        report.lost = plan.lost;
        for i in 0..inner.states.len() {
            let st = &mut inner.states[i];
            let last = st.out.back().map_or(0, |e| e.last);
            st.next_out = st
                .rec
                .next_out
                .max(st.rec.acked_out.saturating_add(1))
                .max(last.saturating_add(1))
                .max(1);
            // Everything recovered may be transmitted: record the floor
            // (made durable below in Sync mode) before anything is sent.
            st.sendable = st.next_out;
            if st.rec.next_out < st.next_out {
                st.rec.next_out = st.next_out;
                inner.write_record(sh, i);
            }
        }
        if report.torn_slots + report.stale_slots > 0 {
            tracing::info!(
                torn = report.torn_slots,
                stale = report.stale_slots,
                "recovery freed slots"
            );
        }
        tracing::info!(dir = %dir.display(), segments = nsegs, live = report.live_slots, peers = inner.states.len(), "store opened");
        if sync {
            // What recovery found may still be only in the page cache (the previous owner died
            // before syncing): make it durable before treating it as the durable state.
            inner
                .meta_file
                .sync_data()
                .map_err(StoreError::io("fsync", &meta_path))?;
            for i in 0..inner.nsegs {
                if let Some(seg) = sh.seg(i) {
                    seg.file
                        .sync_data()
                        .map_err(StoreError::io("fsync segment", &seg.path))?;
                }
            }
            for i in std::mem::take(&mut inner.dirty_entries) {
                let st = &mut inner.states[i as usize];
                st.durable = st.latest;
                st.dirty = false;
            }
            inner.dirty_segs.clear();
            for d in &mut inner.seg_dirty {
                *d = (0, 0);
            }
        }
        drop(inner);
        Ok(Store {
            producer: OutboundProducer {
                shared: shared.clone(),
            },
            shared,
            inbound,
            deferred: Vec::new(),
            captured: Vec::new(),
            report,
        })
    }
}

/// A new store epoch: 64 random bits from the operating system, never 0. Not derived from
/// the clock: it is kept secret (the protocol shows peers only values derived from it), and
/// nothing relies on later epochs comparing greater.
fn new_epoch() -> io::Result<u64> {
    loop {
        let v = getrandom::u64().map_err(io::Error::from)?;
        if v != 0 {
            return Ok(v);
        }
    }
}
