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

use super::config::Durability;
use super::recovery::{Candidate, RecoveryPlan};
use super::report::{Damage, LostRange, OpenReport, PeerReport};
use super::scan::{
    check_segment_header, check_slot_header, check_slot_payload, read_superblock, scan_records,
};
use super::{LOCK_FILE, MAX_SEGMENTS, META_FILE, SlotId};
use crate::error::StoreError;
use crate::layout::{
    ENTRY_LEN, FORMAT_VERSION, REC_INBOUND_STARTED, Record, SEG_HDR, SLOT_HDR, SUPER_LEN,
    is_outbound,
};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Whether a process holds the store's lock, as probed by [`inspect_dir`].
///
/// The probe opens `LOCK` read-only (it never creates it) and asks for a *shared* `flock`
/// without waiting: refused means a [`Store`](crate::Store) holds the exclusive lock
/// ([`LockState::Held`]). Granted, it is released at once ([`LockState::Free`]); the owner of
/// a held lock is never disturbed. In the instant the probe holds the shared lock, a
/// concurrent [`Store::open`](crate::Store::open) of the directory would get
/// [`StoreError::Locked`] (and may simply retry).
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

    fn new(peer: u32, rec: Option<(u32, Record)>) -> Self {
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
            inbound_bytes: 0,
        }
    }
}

/// What [`inspect_dir`] found in a store directory.
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
    /// [`OpenReport::MAX_DAMAGE`] entries.
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

    let rec_of: BTreeMap<u32, (u32, Record)> = records
        .found
        .iter()
        .map(|&(e, r, _)| (r.peer, (e, r)))
        .collect();
    let plan = RecoveryPlan::build(
        &mut cands,
        |p| rec_of.get(&p).map(|x| x.1),
        sync,
        &meta_path,
        &mut report,
    );

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
    for &k in &plan.free {
        let Some(c) = cands.get(k) else { continue };
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
        live_slots: plan.keep.len(),
        stale_slots: plan.free.len(),
        damaged_slots,
        segments,
        peers: peers.into_values().collect(),
        used_bytes,
        lost: plan.lost,
        damage: report.damage,
        damage_count: report.damage_count,
    })
}

/// Opens `path` read-only, refusing anything but a regular file. `O_NONBLOCK`, so that a
/// FIFO (or device) planted under a store file's name cannot make the open wait forever.
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Probes the lock without taking it from anyone (see [`LockState`]).
fn probe_lock(dir: &Path) -> LockState {
    let file = match open_regular(&dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LockState::NoLockFile,
        Err(e) => return LockState::Unknown(format!("open {LOCK_FILE}: {e}")),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            // Released at once; closing the file would release it too.
            let _ = file.unlock();
            LockState::Free
        }
        Err(fs::TryLockError::WouldBlock) => LockState::Held,
        Err(fs::TryLockError::Error(e)) => LockState::Unknown(format!("flock {LOCK_FILE}: {e}")),
    }
}

/// Reads `buf.len()` bytes at `off`, or as many as the file has: the rest of `buf` is zeroed
/// (as `open` with `recover_damaged` extends a cut file with zeros). Returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(done)
}

/// Bytes read at a time from a segment of small slots.
const CHUNK: usize = 1 << 20;

/// Reads a segment's slots by offset, walking down from the last slot (the order `open`
/// scans them, so damage is listed in the same order). Slots of at most half a [`CHUNK`] are
/// read a chunk of whole slots at a time; larger ones header first, payload only if needed.
struct SlotReader<'a> {
    file: &'a File,
    slot_size: usize,
    per_chunk: u32,
    /// Slots `first..first + count` are in `buf`.
    first: u32,
    count: u32,
    buf: Vec<u8>,
    payload: Vec<u8>,
}

impl<'a> SlotReader<'a> {
    fn new(file: &'a File, slot_size: usize) -> Self {
        SlotReader {
            file,
            slot_size,
            per_chunk: u32::try_from(CHUNK / slot_size).unwrap_or(1).max(1),
            first: 0,
            count: 0,
            buf: Vec::new(),
            payload: Vec::new(),
        }
    }

    fn off(&self, idx: u32) -> u64 {
        SEG_HDR as u64 + u64::from(idx) * self.slot_size as u64
    }

    fn chunked(&self) -> bool {
        self.per_chunk > 1
    }

    /// The 64-byte header of slot `idx` (state word first).
    fn head(&mut self, idx: u32) -> io::Result<[u8; SLOT_HDR]> {
        let mut h = [0u8; SLOT_HDR];
        if !self.chunked() {
            read_full_at(self.file, &mut h, self.off(idx))?;
            return Ok(h);
        }
        if !(self.first <= idx && idx - self.first < self.count) {
            let first = (idx + 1).saturating_sub(self.per_chunk);
            let count = idx + 1 - first;
            self.buf.resize(count as usize * self.slot_size, 0);
            let off = self.off(first);
            read_full_at(self.file, &mut self.buf, off)?;
            (self.first, self.count) = (first, count);
        }
        let at = (idx - self.first) as usize * self.slot_size;
        h.copy_from_slice(&self.buf[at..at + SLOT_HDR]);
        Ok(h)
    }

    /// The first `len` payload bytes of slot `idx` (`len` ≤ the slot's capacity); after
    /// [`SlotReader::head`] of the same slot.
    fn payload(&mut self, idx: u32, len: usize) -> io::Result<&[u8]> {
        if self.chunked() && self.first <= idx && idx - self.first < self.count {
            let at = (idx - self.first) as usize * self.slot_size + SLOT_HDR;
            return Ok(&self.buf[at..at + len]);
        }
        self.payload.resize(len, 0);
        let off = self.off(idx) + SLOT_HDR as u64;
        read_full_at(self.file, &mut self.payload, off)?;
        Ok(&self.payload)
    }
}

/// Checks one segment file the way `open` does, filling `info`, adding the valid slots to
/// `cands` and what is wrong to `report`. Unlike `open`, a segment it cannot use is reported
/// and skipped, and a cut segment is read up to the cut (the rest reads as free slots).
fn scan_segment(
    path: &Path,
    index: u32,
    epoch: u64,
    sync: bool,
    info: &mut SegmentInfo,
    cands: &mut Vec<Candidate>,
    report: &mut OpenReport,
) {
    if index as usize >= MAX_SEGMENTS {
        report.damage(path, 0, "segment index out of range");
        return;
    }
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(e) => {
            report.damage(path, 0, format!("cannot open: {e}"));
            return;
        }
    };
    let flen = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            report.damage(path, 0, format!("cannot stat: {e}"));
            return;
        }
    };
    info.bytes = flen;
    if flen < SEG_HDR as u64 {
        report.damage(path, 0, format!("truncated to {flen} bytes"));
        return;
    }
    let mut hb = [0u8; SEG_HDR];
    if let Err(e) = file.read_exact_at(&mut hb, 0) {
        report.damage(path, 0, format!("cannot read header: {e}"));
        return;
    }
    let h = match check_segment_header(index, &hb, epoch) {
        Ok(h) => h,
        Err(r) => {
            report.damage(path, 0, r);
            return;
        }
    };
    info.header_ok = true;
    info.class = h.class;
    info.slot_size = h.slot_size;
    info.slots = h.slots;
    info.expected_bytes = h.file_len();
    if flen < info.expected_bytes {
        // Files are created at full length: a shorter one was cut, and the slots past the
        // cut are gone.
        report.damage(
            path,
            flen,
            format!("cut short: {flen} of {} bytes", info.expected_bytes),
        );
    }
    let slot_size = h.slot_size as usize;
    let cap = slot_size - SLOT_HDR;
    let mut reader = SlotReader::new(&file, slot_size);
    for idx in (0..h.slots).rev() {
        let head = match reader.head(idx) {
            Ok(head) => head,
            Err(e) => {
                report.damage(path, reader.off(idx), format!("cannot read: {e}"));
                return;
            }
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[..8]);
        let state = u64::from_le_bytes(word);
        if state == 0 {
            info.free_slots += 1;
            continue;
        }
        let mut hdr = [0u8; SLOT_HDR - 8];
        hdr.copy_from_slice(&head[8..]);
        let slot = SlotId { seg: index, idx };
        let checked = check_slot_header(state, &hdr, cap).and_then(|h| {
            let payload = reader
                .payload(idx, h.len as usize)
                .map_err(|_| "payload cannot be read")?;
            check_slot_payload(&h, payload, slot)
        });
        match checked {
            Ok(c) => cands.push(c),
            Err(what) => {
                info.damaged_slots += 1;
                // As in `open`: in Sync mode a power loss can tear a published slot.
                if !sync {
                    report.damage(
                        path,
                        reader.off(idx),
                        format!("slot {idx}: published, but {what}"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_full_at_zero_fills_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let mut buf = [9u8; 6];
        assert_eq!(read_full_at(&f, &mut buf, 1).unwrap(), 2);
        assert_eq!(&buf, b"bc\0\0\0\0");
    }
}
