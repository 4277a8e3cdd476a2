//! The store: open/recovery, slot allocation, outbound/inbound messages, peer records, sync.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::failpoint;
use crate::inbound_index::{InEntry, InboundIndex};
use crate::layout::{
    COPIES, ENTRY_LEN, KIND_IN, KIND_IN_LOST, KIND_OUT, KIND_OUT_LOST, LOST_LEN, NUM_CLASSES,
    REC_INBOUND_STARTED, RECORD_LEN, Record, SEG_HDR, SLOT_HDR, SUPER_LEN, SegHeader, SlotHeader,
    Superblock, class_for, class_size, is_outbound,
};
use crate::map::{MappedFile, SegCell};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard, Ordering, lock, wait_timeout};
use crate::{MAX_MESSAGE_LEN, MAX_PEERS, MIN_CAPACITY};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maximum number of segment files (indexes of deleted ones are reused).
const MAX_SEGMENTS: usize = 1024;
/// A segment whose slots have all been free for this long is deleted by [`Store::maintain`].
const IDLE_DELAY: Duration = Duration::from_secs(2);
/// Segments of slots this large are deleted as soon as `maintain` finds them empty: each slot
/// is a large message, and recreating such a segment costs little next to writing one.
const LARGE_SLOT: usize = 1 << 20;
/// Target size of the first segment of a class; later ones double up to `SEG_MAX`.
#[cfg(not(loom))]
const SEG_BASE: usize = 64 << 10;
#[cfg(loom)]
const SEG_BASE: usize = 1 << 10;
const SEG_MAX: usize = 64 << 20;
const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta";

/// How much a committed message survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives the process being killed at any instruction (SIGKILL, abort, panic), not an OS
    /// crash or power loss. No syscalls on the message path; [`Store::sync`] is a no-op.
    #[default]
    Process,
    /// Additionally survives OS crash / power loss for everything committed before the last
    /// successful [`Store::sync`] (a group commit: `msync` of what changed since the last one).
    Sync,
}

/// Configuration for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This node's id. Stored in the superblock at creation; a mismatch on reopen is an error.
    pub node_id: u32,
    /// Crash model to honour.
    pub durability: Durability,
    /// Limit on slot bytes (64-byte header + payload, rounded up to the slot size class) in use;
    /// [`StoreError::Full`] beyond (backpressure). A message whose slot alone exceeds it is
    /// [`StoreError::TooLarge`]. At least [`crate::MIN_CAPACITY`] (64 KiB), else
    /// [`Store::open`] fails with [`StoreError::CapacityTooSmall`]. Default 1 GiB.
    pub capacity_bytes: u64,
    /// Peer table size, fixed when the store is created (ignored on reopen). Default 1024;
    /// costs 192 bytes of disk per entry.
    pub max_peers: u32,
    /// Open a store whose files were damaged while it was closed (cut short, overwritten,
    /// replaced by a stale copy). Default `false`: [`Store::open`] fails with
    /// [`StoreError::Damaged`] naming the file, the offset and what is wrong, and changes
    /// nothing. `true`: it opens anyway, and [`Store::open_report`] says what was found and
    /// which outbound seqs of which peers were lost (gap markers then tell the peers).
    pub recover_damaged: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            durability: Durability::Process,
            capacity_bytes: 1 << 30,
            max_peers: 1024,
            recover_damaged: false,
        }
    }
}

impl StoreConfig {
    /// Default configuration for `node_id`.
    pub fn new(node_id: u32) -> Self {
        Self {
            node_id,
            ..Self::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Maps keyed by peer id (a fast, non-cryptographic hash; peer tables are bounded).
type IdMap<V> = rustc_hash::FxHashMap<u32, V>;

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

fn corrupt(file: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn fallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => Err(StoreError::NoSpace),
        Err(e) => Err(StoreError::io("fallocate", path)(e.into())),
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

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

#[derive(Debug, Default)]
struct ClassState {
    free: Vec<SlotId>,
    segs: u32,
}

/// Occupancy of one segment (index into `Inner::seg_use`), for reclaiming empty ones.
#[derive(Debug, Default, Clone, Copy)]
struct SegUse {
    /// Slots of it on the free list.
    free: u32,
    /// All its slots (0 = no segment at this index).
    slots: u32,
    /// Its slots are at least `LARGE_SLOT`: deleted as soon as found empty.
    large: bool,
    /// In `Inner::empty` (it was seen with every slot free).
    listed: bool,
    /// When `maintain` first saw it empty; reset by a claim.
    idle_since: Option<Instant>,
}

/// Per-segment occupancy of the segments in `segments`, from the class free lists, and the
/// segments found empty.
fn seg_use_of(segments: &[SegCell<Segment>], classes: &[ClassState]) -> (Vec<SegUse>, Vec<u32>) {
    let mut v: Vec<SegUse> = segments
        .iter()
        .map(|c| match c.get() {
            Some(seg) => SegUse {
                slots: seg.slots,
                large: seg.slot_size >= LARGE_SLOT,
                ..SegUse::default()
            },
            None => SegUse::default(),
        })
        .collect();
    for s in classes.iter().flat_map(|c| &c.free) {
        if let Some(u) = v.get_mut(s.seg as usize) {
            u.free += 1;
        }
    }
    let mut empty = Vec::new();
    for (i, u) in v.iter_mut().enumerate() {
        if u.slots > 0 && u.free == u.slots {
            u.listed = true;
            empty.push(i as u32);
        }
    }
    (v, empty)
}

/// Test hook called after each successful flush: `(file, offset, len)`.
type FlushHook = Box<dyn FnMut(&Path, u64, u64) + Send>;
struct HookSlot(Option<FlushHook>);
impl fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(hook)"
        } else {
            "None"
        })
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
}

impl Inner {
    fn mark_dirty(&mut self, seg: u32, lo: usize, hi: usize) {
        let Some(d) = self.seg_dirty.get_mut(seg as usize) else {
            return;
        };
        if d.0 >= d.1 {
            *d = (lo, hi);
            self.dirty_segs.push(seg);
        } else {
            *d = (d.0.min(lo), d.1.max(hi));
        }
    }

    /// Claims a free slot of `class` (growing the store by one segment if needed).
    fn claim(&mut self, sh: &Shared, class: usize) -> Result<SlotId> {
        let size = class_size(class) as u64;
        if self.used + size > sh.capacity {
            return Err(StoreError::Full {
                used: self.used,
                requested: size,
                capacity: sh.capacity,
            });
        }
        if self.classes[class].free.is_empty() {
            self.add_segment(sh, class)?;
        }
        let Some(slot) = self.classes[class].free.pop() else {
            return Err(StoreError::Full {
                used: self.used,
                requested: size,
                capacity: sh.capacity,
            });
        };
        self.used += size;
        let u = &mut self.seg_use[slot.seg as usize];
        u.free -= 1;
        u.idle_since = None;
        Ok(slot)
    }

    /// Returns a claimed, never-published slot (its state word is still 0).
    fn unclaim(&mut self, class: usize, slot: SlotId) {
        self.classes[class].free.push(slot);
        self.used -= class_size(class) as u64;
        self.note_free(slot.seg);
    }

    /// One more slot of segment `seg` is on the free list; list the segment once all are.
    #[inline]
    fn note_free(&mut self, seg: u32) {
        let u = &mut self.seg_use[seg as usize];
        u.free += 1;
        if u.free == u.slots && !u.listed {
            u.listed = true;
            self.empty.push(seg);
        }
    }

    /// Deletes the segments that have been empty long enough (see [`Store::maintain`]).
    /// Returns how many.
    fn reclaim(&mut self, sh: &Shared, now: Instant) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while let Some(&seg) = self.empty.get(i) {
            let u = &mut self.seg_use[seg as usize];
            if u.slots == 0 || u.free != u.slots {
                u.listed = false;
                u.idle_since = None;
                self.empty.swap_remove(i);
                continue;
            }
            let since = *u.idle_since.get_or_insert(now);
            let delay = if u.large { Duration::ZERO } else { IDLE_DELAY };
            if now.saturating_duration_since(since) < delay {
                i += 1;
                continue;
            }
            match self.remove_segment(sh, seg) {
                Ok(()) => {
                    removed += 1;
                    self.empty.swap_remove(i);
                }
                Err(e) => {
                    // The segment stays usable; try again after another idle delay.
                    tracing::warn!(error = ?e, "cannot delete an empty segment");
                    self.seg_use[seg as usize].idle_since =
                        Some(now.checked_add(IDLE_DELAY).unwrap_or(now));
                    i += 1;
                }
            }
        }
        removed
    }

    /// Deletes empty segment `seg`: its file first (if that fails nothing changed), then its
    /// slots leave the free list and the mapping goes (M6: every slot is free, so nothing
    /// references it, and the caller holds `&mut Store` and the mutex).
    fn remove_segment(&mut self, sh: &Shared, seg: u32) -> Result<()> {
        let Some(cell) = sh.segments.get(seg as usize) else {
            return Ok(());
        };
        let Some(s) = cell.get() else { return Ok(()) };
        let class = s.class;
        let slot_size = s.slot_size;
        fs::remove_file(&s.path).map_err(StoreError::io("delete segment", &s.path))?;
        let cs = &mut self.classes[class];
        cs.free.retain(|x| x.seg != seg);
        cs.segs = cs.segs.saturating_sub(1);
        if let Some(d) = self.seg_dirty.get_mut(seg as usize) {
            *d = (0, 0);
        }
        self.dirty_segs.retain(|&x| x != seg);
        self.seg_use[seg as usize] = SegUse::default();
        drop(cell.take());
        tracing::debug!(index = seg, class, slot_size, "deleted empty segment");
        Ok(())
    }

    /// Lets go of the store's files once the [`Store`] is gone and no reservation is
    /// outstanding (the caller checks both, under the mutex): unmaps every segment and drops
    /// the lock, so another open may take the directory. Producers still holding the shared
    /// state get [`StoreError::Closed`] without touching any mapping. M6: nothing references
    /// a segment now — `&Store` borrowers are gone with the store, producers dereference only
    /// segments of slots they reserved and none is reserved, and `closed` (set under this
    /// mutex) refuses every new claim.
    fn release(&mut self, sh: &Shared) {
        debug_assert!(self.closed && self.store_gone && self.reservations == 0);
        for cell in sh.segments.iter() {
            drop(cell.take());
        }
        self.classes.iter_mut().for_each(|c| c.free.clear());
        if self.lock_file.take().is_some() {
            tracing::debug!(dir = %sh.dir.display(), "store released");
        }
    }

    /// Frees a published slot: one Release store of 0 into its state word.
    fn free_slot(&mut self, sh: &Shared, slot: SlotId) {
        let Some(seg) = sh.seg(slot.seg) else { return };
        let off = seg.off(slot.idx);
        seg.map.word(off).store(0, Ordering::Release);
        let class = seg.class;
        if sh.durability == Durability::Sync {
            self.mark_dirty(slot.seg, off, off + 8);
        }
        self.classes[class].free.push(slot);
        self.used -= class_size(class) as u64;
        self.note_free(slot.seg);
    }

    fn add_segment(&mut self, sh: &Shared, class: usize) -> Result<()> {
        // The lowest free index: deleted segments' indexes are reused.
        let Some(index) = sh.segments.iter().position(|c| c.get().is_none()) else {
            return Err(StoreError::Full {
                used: self.used,
                requested: 0,
                capacity: sh.capacity,
            });
        };
        let index = index as u32;
        let slot_size = class_size(class);
        let k = self.classes[class].segs.min(10);
        let target = (SEG_BASE << k).min(SEG_MAX);
        let slots = ((target.saturating_sub(SEG_HDR)) / slot_size).max(1);
        let hdr = SegHeader {
            index,
            class: class as u32,
            slot_size: slot_size as u32,
            slots: slots as u32,
            epoch: sh.epoch,
        };
        let len = hdr.file_len();
        let path = sh.dir.join(format!("seg-{index:06}"));
        let tmp = sh.dir.join(format!("seg-{index:06}.tmp"));
        let file = create_file(&tmp, len, &hdr.encode(), sh.durability == Durability::Sync)?;
        failpoint::hit("segment.before_rename");
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("rename new segment", &tmp)(e));
        }
        if sh.durability == Durability::Sync {
            fsync_dir(&sh.dir)?;
            sh.flushed(&path, 0, len);
        }
        let map = MappedFile::map(&file, &path, len as usize, false, true)?;
        let seg = Segment {
            path,
            file,
            map,
            class,
            slot_size,
            slots: slots as u32,
        };
        if sh.segments[index as usize].set(seg).is_err() {
            return Err(StoreError::io("install segment", &sh.dir)(
                io::Error::other("segment index in use"),
            ));
        }
        self.nsegs = self.nsegs.max(index + 1);
        if self.seg_dirty.len() <= index as usize {
            self.seg_dirty.resize(index as usize + 1, (0, 0));
        }
        self.seg_use[index as usize] = SegUse {
            free: slots as u32,
            slots: slots as u32,
            large: slot_size >= LARGE_SLOT,
            listed: false,
            idle_since: None,
        };
        let cs = &mut self.classes[class];
        cs.segs += 1;
        cs.free.extend(
            (0..slots as u32)
                .rev()
                .map(|idx| SlotId { seg: index, idx }),
        );
        tracing::debug!(index, class, slot_size, slots, "added segment");
        Ok(())
    }

    /// Index of `peer`'s state, creating a peer table entry if needed.
    fn peer_idx(&mut self, sh: &Shared, peer: u32) -> Result<usize> {
        if let Some(&i) = self.peers.get(&peer) {
            return Ok(i as usize);
        }
        let Some(entry) = self.free_entries.pop() else {
            return Err(StoreError::TooManyPeers { max: sh.max_peers });
        };
        let i = self.states.len();
        self.states.push(PeerState {
            peer,
            entry,
            rec: Record {
                peer,
                next_out: 1,
                ..Record::default()
            },
            latest: 0,
            durable: 0,
            dirty: false,
            listed: false,
            sendable: 1,
            next_out: 1,
            out: VecDeque::new(),
            out_bytes: 0,
            reserved: 0,
            reserved_bytes: 0,
        });
        self.peers.insert(peer, i as u32);
        self.write_record(sh, i);
        Ok(i)
    }

    /// Writes `states[i].rec` to a copy that is neither the latest nor the durable one, so a torn
    /// write (process death) falls back to the latest value and a power loss to the synced one.
    fn write_record(&mut self, sh: &Shared, i: usize) {
        let st = &mut self.states[i];
        let target = (0..COPIES as u8)
            .find(|&c| c != st.latest && c != st.durable)
            .unwrap_or((st.latest + 1) % COPIES as u8);
        st.rec.generation += 1;
        let bytes = st.rec.encode();
        let off = SUPER_LEN + st.entry as usize * ENTRY_LEN + target as usize * RECORD_LEN;
        if failpoint::fires("record.torn") {
            self.meta.write(off, &bytes[..RECORD_LEN / 2]);
            failpoint::die("record.torn");
        }
        self.meta.write(off, &bytes);
        st.latest = target;
        if sh.durability == Durability::Process {
            st.durable = target;
        } else if !st.dirty {
            st.dirty = true;
            self.dirty_entries.push(i as u32);
        }
    }

    /// Publishes a filled slot under the lock: header, then one Release store of the state word.
    fn publish(&mut self, sh: &Shared, slot: SlotId, mut hdr: SlotHeader) {
        let Some(seg) = sh.seg(slot.seg) else { return };
        hdr.generation = self.generation;
        self.generation += 1;
        let off = seg.off(slot.idx);
        seg.map.write(off + 8, &hdr.encode());
        failpoint::hit(if hdr.kind == KIND_OUT {
            "commit.before_publish"
        } else {
            "inbound.before_publish"
        });
        seg.map.word(off).store(hdr.generation, Ordering::Release);
        if sh.durability == Durability::Sync {
            self.mark_dirty(slot.seg, off, off + SLOT_HDR + hdr.len as usize);
        }
    }
}

impl Inner {
    /// Records (once per inbound incarnation) that the peer's inbound stream has started.
    fn mark_inbound_started(&mut self, sh: &Shared, pidx: usize) {
        if self.states[pidx].rec.flags & REC_INBOUND_STARTED == 0 {
            self.states[pidx].rec.flags |= REC_INBOUND_STARTED;
            self.write_record(sh, pidx);
        }
    }

    /// Captures the next seq of every peer committed to since the last call,
    /// appending `(peer index, next seq)` to `out`, and (if `write`) records
    /// it as the peer's next-seq floor.
    fn record_floors(&mut self, sh: &Shared, out: &mut Vec<(u32, u64)>, write: bool) {
        let listed = std::mem::take(&mut self.committed);
        for &i in &listed {
            let st = &mut self.states[i as usize];
            st.listed = false;
            let next = st.next_out;
            out.push((i, next));
            if write && st.rec.next_out < next {
                st.rec.next_out = next;
                self.write_record(sh, i as usize);
            }
        }
        self.committed = listed;
        self.committed.clear();
    }

    /// Claims a slot and publishes in it a gap marker for `first..=last` of `kind` for the
    /// peer at `pidx` ([`Inner::publish_marker_in`]). Returns its index entry.
    fn publish_marker(
        &mut self,
        sh: &Shared,
        pidx: usize,
        peer: u32,
        first: u64,
        last: u64,
        kind: u8,
    ) -> Result<OutEntry> {
        let class = class_for(LOST_LEN as usize + SLOT_HDR);
        let slot = self.claim(sh, class)?;
        self.publish_marker_in(sh, slot, class, pidx, peer, first, last, kind)
    }

    /// Writes a gap marker for `first..=last` of `kind` into the claimed slot `slot` (of size
    /// class `class`) and publishes it; on error the slot is returned.
    #[allow(clippy::too_many_arguments)]
    fn publish_marker_in(
        &mut self,
        sh: &Shared,
        slot: SlotId,
        class: usize,
        pidx: usize,
        peer: u32,
        first: u64,
        last: u64,
        kind: u8,
    ) -> Result<OutEntry> {
        let payload = last.to_le_bytes();
        let Some(seg) = sh.seg(slot.seg) else {
            self.unclaim(class, slot);
            return Err(StoreError::WrongStore);
        };
        seg.map.write(seg.off(slot.idx) + SLOT_HDR, &payload);
        let crc = crc32c::crc32c(&payload);
        let rec = self.states[pidx].rec;
        let inc = if kind == KIND_OUT_LOST {
            rec.out_inc
        } else {
            rec.in_inc
        };
        let hdr = SlotHeader {
            generation: 0,
            seq: first,
            peer,
            len: LOST_LEN,
            crc,
            inc,
            kind,
        };
        self.publish(sh, slot, hdr);
        Ok(OutEntry {
            seq: first,
            last,
            lost: true,
            slot,
            len: LOST_LEN,
            crc,
        })
    }
}

fn create_file(path: &Path, len: u64, header: &[u8], sync: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(StoreError::io("create", path))?;
    let res = (|| -> Result<()> {
        fallocate(&file, path, len)?;
        file.write_all_at(header, 0)
            .map_err(StoreError::io("write header of", path))?;
        if sync {
            file.sync_all().map_err(StoreError::io("fsync", path))?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public types

/// A committed message borrowed from the store (zero-copy view into the mapping), or a gap
/// marker: a range of seqs that will never be delivered ([`MessageRef::lost_through`]).
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    seq: u64,
    crc: u32,
    payload: &'a [u8],
    lost_through: Option<u64>,
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
}

/// Something wrong found in a store's files by [`Store::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Most entries kept in [`OpenReport::damage`].
    pub const MAX_DAMAGE: usize = 1000;

    fn damage(&mut self, file: &Path, offset: u64, what: impl Into<String>) {
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

/// A persistent message store. Owned by the poll thread; `Send`, not `Sync`-shared.
///
/// Dropping a `Store` does no work beyond recording the next-seq floors, closing it to
/// producers, unmapping and unlocking: to the files it is the same as the process dying, which
/// is why tests use drop + reopen as a process-death crash. If a producer thread holds an
/// [`OutboundReservation`] at that moment, the unmapping and unlocking wait for it (see
/// [`Store::close`]).
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

/// A per-peer limit on what is committed and not yet acknowledged, for
/// [`OutboundProducer::reserve_within`]. A plain `u64` converts to a limit on messages only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    /// Most messages (reservations in progress included).
    pub msgs: u64,
    /// Most payload bytes (reservations in progress included); one message is always allowed
    /// when none is pending, whatever its size.
    pub bytes: u64,
}

impl From<u64> for SendWindow {
    fn from(msgs: u64) -> Self {
        SendWindow {
            msgs,
            bytes: u64::MAX,
        }
    }
}

/// Clone + Send + Sync handle for committing outbound messages from any thread.
#[derive(Debug, Clone)]
pub struct OutboundProducer {
    shared: Arc<Shared>,
}

/// A reserved outbound slot being filled in place. Dropping it releases the slot.
///
/// [`OutboundProducer::reserve`] lends it the producer (`'a`);
/// [`OutboundProducer::reserve_owned_within`] gives it a producer handle of its own
/// (`OutboundReservation<'static>`), so it can be kept in a struct between calls.
#[derive(Debug)]
pub struct OutboundReservation<'a> {
    producer: Cow<'a, OutboundProducer>,
    slot: SlotId,
    class: usize,
    pidx: usize,
    peer: u32,
    len: u32,
}

/// An inbound message being assembled in a reserved, unpublished slot. Owned (no lifetime) so
/// it can be kept across poll iterations; finish it with [`Store::commit_inbound`] or
/// [`Store::abort_inbound`] (if simply dropped, the slot stays reserved until the next open).
#[derive(Debug)]
pub struct InboundSlot {
    instance: u64,
    slot: SlotId,
    class: usize,
    pidx: usize,
    peer: u32,
    seq: u64,
    len: u32,
    crc: u32,
    inc: u32,
}

impl InboundSlot {
    /// Peer node id.
    pub fn peer(&self) -> u32 {
        self.peer
    }
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Declared message length.
    pub fn len(&self) -> u32 {
        self.len
    }
    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Producer side

impl OutboundProducer {
    /// Like [`Store::outbound_pending`], from any thread: `(lowest pending
    /// seq, next seq to assign)` for `peer`, so `next - lowest` messages are
    /// committed and not yet acknowledged.
    pub fn outbound_pending(&self, peer: u32) -> Option<(u64, u64)> {
        self.shared.outbound_pending(peer)
    }

    /// Reserves a slot for an outbound message of `len` bytes to `peer`. Fill it with
    /// [`OutboundReservation::payload_mut`], then [`OutboundReservation::commit`].
    ///
    /// Errors: [`StoreError::TooLarge`], [`StoreError::Full`], [`StoreError::NoSpace`],
    /// [`StoreError::TooManyPeers`], [`StoreError::Stopped`], [`StoreError::Closed`]. On error
    /// nothing changed.
    pub fn reserve(&self, peer: u32, len: usize) -> Result<OutboundReservation<'_>> {
        self.reserve_within(peer, len, u64::MAX)
    }

    /// [`OutboundProducer::reserve`], refused with [`StoreError::WindowFull`] when `peer`
    /// already has `limit.msgs` messages committed and not acknowledged, or when this message
    /// would take its unacknowledged payload bytes past `limit.bytes` (one message is always
    /// allowed when none is pending), counting reservations for it in progress (not yet
    /// committed or dropped). A plain `u64` limits messages only. The check and the count are
    /// made under the store lock together with the claim, so any number of threads reserving
    /// at once never exceed the limit.
    pub fn reserve_within(
        &self,
        peer: u32,
        len: usize,
        limit: impl Into<SendWindow>,
    ) -> Result<OutboundReservation<'_>> {
        let limit = limit.into();
        let (slot, class, pidx) = self.claim_within(peer, len, limit)?;
        Ok(OutboundReservation {
            producer: Cow::Borrowed(self),
            slot,
            class,
            pidx,
            peer,
            len: len as u32,
        })
    }

    /// [`OutboundProducer::reserve_within`], returning a reservation that holds its own
    /// producer handle (one reference-count increment) instead of borrowing this one: it can
    /// be stored and committed or dropped later, from any thread. Same errors, same limit.
    pub fn reserve_owned_within(
        &self,
        peer: u32,
        len: usize,
        limit: impl Into<SendWindow>,
    ) -> Result<OutboundReservation<'static>> {
        let limit = limit.into();
        let (slot, class, pidx) = self.claim_within(peer, len, limit)?;
        Ok(OutboundReservation {
            producer: Cow::Owned(self.clone()),
            slot,
            class,
            pidx,
            peer,
            len: len as u32,
        })
    }

    /// Checks and claims a slot for [`OutboundProducer::reserve_within`] and its owned form:
    /// `(slot, size class, peer index)`, counted as a reservation in progress.
    fn claim_within(
        &self,
        peer: u32,
        len: usize,
        limit: SendWindow,
    ) -> Result<(SlotId, usize, usize)> {
        let sh = &*self.shared;
        sh.check_len(len)?;
        sh.check_stopped()?;
        let class = class_for(len + SLOT_HDR);
        let mut inner = lock(&sh.inner);
        if inner.closed {
            return Err(StoreError::Closed);
        }
        let (unacked, unacked_bytes) = inner.peers.get(&peer).map_or((0, 0), |&i| {
            let st = &inner.states[i as usize];
            (
                (st.next_out - st.low()).saturating_add(st.reserved),
                st.out_bytes.saturating_add(st.reserved_bytes),
            )
        });
        if unacked >= limit.msgs
            || unacked > 0 && unacked_bytes.saturating_add(len as u64) > limit.bytes
        {
            return Err(StoreError::WindowFull {
                peer,
                unacked,
                unacked_bytes,
            });
        }
        let slot = inner.claim(sh, class)?;
        let pidx = match inner.peer_idx(sh, peer) {
            Ok(i) => i,
            Err(e) => {
                inner.unclaim(class, slot);
                return Err(e);
            }
        };
        inner.states[pidx].reserved += 1;
        inner.states[pidx].reserved_bytes += len as u64;
        inner.reservations += 1;
        drop(inner);
        failpoint::hit("reserve.after_claim");
        Ok((slot, class, pidx))
    }

    /// Convenience: reserve, copy `payload`, commit. Returns the assigned seq.
    pub fn send(&self, peer: u32, payload: &[u8]) -> Result<u64> {
        let mut r = self.reserve(peer, payload.len())?;
        r.payload_mut().copy_from_slice(payload);
        r.commit()
    }

    /// Whether the store was closed ([`Store::close_producers`], or the [`Store`] dropped):
    /// every reserve and commit through any producer now fails with [`StoreError::Closed`].
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.inner).closed
    }
}

impl OutboundReservation<'_> {
    /// The payload area (exactly the reserved length), in the mapped file.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let sh = &*self.producer.shared;
        match sh.seg(self.slot.seg) {
            Some(seg) => seg
                .map
                .bytes_mut(seg.off(self.slot.idx) + SLOT_HDR, self.len as usize),
            None => &mut [],
        }
    }

    /// Peer this message goes to.
    pub fn peer(&self) -> u32 {
        self.peer
    }

    /// Length of the payload area in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Commits: checksums the payload, then (under the store lock, so publish order == seq
    /// order) assigns the next seq for the peer, writes the header and publishes. Returns seq.
    ///
    /// [`StoreError::Closed`] if the store was closed since the reserve: nothing is published
    /// and the slot is released (the store's files are released with the last such
    /// reservation, if the [`Store`] is already gone).
    pub fn commit(self) -> Result<u64> {
        let sh = &*self.producer.shared;
        let crc = crc32c::crc32c(self.payload_ref());
        failpoint::hit("commit.before_lock");
        let mut inner = lock(&sh.inner);
        if inner.closed {
            drop(inner);
            return Err(StoreError::Closed); // Drop releases the slot.
        }
        if let Err(e) = sh.check_stopped() {
            drop(inner);
            return Err(e); // Drop releases the slot.
        }
        inner.reservations -= 1;
        let st = &mut inner.states[self.pidx];
        st.reserved -= 1;
        st.reserved_bytes -= u64::from(self.len);
        let seq = st.next_out;
        st.next_out += 1;
        let inc = st.rec.out_inc;
        let hdr = SlotHeader {
            generation: 0,
            seq,
            peer: self.peer,
            len: self.len,
            crc,
            inc,
            kind: KIND_OUT,
        };
        inner.publish(sh, self.slot, hdr);
        let st = &mut inner.states[self.pidx];
        st.out.push_back(OutEntry {
            seq,
            last: seq,
            lost: false,
            slot: self.slot,
            len: self.len,
            crc,
        });
        st.out_bytes += u64::from(self.len);
        if !st.listed {
            st.listed = true;
            inner.committed.push(self.pidx as u32);
        }
        drop(inner);
        std::mem::forget(self);
        failpoint::hit("commit.after_publish");
        Ok(seq)
    }

    fn payload_ref(&self) -> &[u8] {
        match self.producer.shared.seg(self.slot.seg) {
            Some(seg) => seg
                .map
                .bytes(seg.off(self.slot.idx) + SLOT_HDR, self.len as usize),
            None => &[],
        }
    }
}

impl Drop for OutboundReservation<'_> {
    fn drop(&mut self) {
        let sh = &*self.producer.shared;
        let mut inner = lock(&sh.inner);
        inner.unclaim(self.class, self.slot);
        inner.states[self.pidx].reserved -= 1;
        inner.states[self.pidx].reserved_bytes -= u64::from(self.len);
        inner.reservations -= 1;
        if inner.closed && inner.reservations == 0 {
            if inner.store_gone {
                inner.release(sh);
            }
            sh.released.notify_all();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Open & recovery

struct Candidate {
    /// Position in the candidate list (after sorting).
    index: usize,
    peer: u32,
    kind: u8,
    seq: u64,
    /// Last seq it stands for (`seq`, or a gap marker's end).
    last: u64,
    generation: u64,
    inc: u32,
    len: u32,
    crc: u32,
    slot: SlotId,
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
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<Store> {
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
        let meta_len = meta_file
            .metadata()
            .map_err(StoreError::io("stat", &meta_path))?
            .len();
        if meta_len < 64 {
            return Err(corrupt(
                &meta_path,
                format!("truncated to {meta_len} bytes"),
            ));
        }
        let mut sbb = [0u8; 64];
        meta_file
            .read_exact_at(&mut sbb, 0)
            .map_err(StoreError::io("read superblock of", &meta_path))?;
        let sb = Superblock::decode(&sbb).map_err(|r| corrupt(&meta_path, r))?;
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
        let mut states: Vec<PeerState> = Vec::new();
        let mut peers: IdMap<u32> = IdMap::default();
        let mut free_entries = Vec::new();
        let mut buf = [0u8; RECORD_LEN];
        for e in (0..sb.max_peers).rev() {
            let mut best: Option<(Record, u8)> = None;
            for c in 0..COPIES {
                meta.read(
                    SUPER_LEN + e as usize * ENTRY_LEN + c * RECORD_LEN,
                    &mut buf,
                );
                if let Some(r) = Record::decode(&buf)
                    && best.is_none_or(|(b, _)| r.generation > b.generation)
                {
                    best = Some((r, c as u8));
                }
            }
            let Some((rec, c)) = best else {
                free_entries.push(e);
                continue;
            };
            if let Some(&other) = peers.get(&rec.peer) {
                // Two entries for one peer: only possible through outside damage. Keep the newer.
                report.damage(
                    &meta_path,
                    (SUPER_LEN + e as usize * ENTRY_LEN) as u64,
                    format!("a second record for peer {}", rec.peer),
                );
                let o = &mut states[other as usize];
                if o.rec.generation >= rec.generation {
                    continue;
                }
                *o = new_state(rec, e, c);
                continue;
            }
            peers.insert(rec.peer, states.len() as u32);
            states.push(new_state(rec, e, c));
        }
        // Entries shadowed by duplicates are neither free nor used; zeroed below so they
        // become free.
        let used_entries: std::collections::HashSet<u32> = states.iter().map(|s| s.entry).collect();
        let shadowed: Vec<u32> = (0..sb.max_peers)
            .filter(|e| !used_entries.contains(e) && !free_entries.contains(e))
            .collect();
        free_entries.extend(&shadowed);
        free_entries.sort_unstable_by(|a, b| b.cmp(a));

        let segments: Box<[SegCell<Segment>]> = (0..MAX_SEGMENTS).map(|_| SegCell::new()).collect();
        let mut classes: Vec<ClassState> =
            (0..NUM_CLASSES).map(|_| ClassState::default()).collect();
        let mut nsegs = 0u32;
        let mut cands: Vec<Candidate> = Vec::new();
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
            let h = SegHeader::decode(&hb).map_err(|r| corrupt(path, r))?;
            if h.index != *i || h.epoch != sb.epoch {
                return Err(corrupt(path, "segment belongs to another store or index"));
            }
            let len = h.file_len();
            if len > (SEG_MAX + class_size(h.class as usize) + SEG_HDR) as u64 {
                return Err(corrupt(path, "segment larger than any the store creates"));
            }
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
                let valid = SlotHeader::decode(&hdr).filter(|h| {
                    h.generation == state
                        && (h.len as usize) <= cap
                        && crc32c::crc32c(seg.map.bytes(off + SLOT_HDR, h.len as usize)) == h.crc
                });
                let lost_through = |h: &SlotHeader| -> Option<u64> {
                    if h.kind != KIND_OUT_LOST && h.kind != KIND_IN_LOST {
                        return Some(h.seq);
                    }
                    let mut b = [0u8; 8];
                    seg.map.read(off + SLOT_HDR, &mut b);
                    Some(u64::from_le_bytes(b)).filter(|&last| last >= h.seq)
                };
                match valid.and_then(|h| Some((h, lost_through(&h)?))) {
                    Some((h, last)) => {
                        max_gen = max_gen.max(h.generation);
                        cands.push(Candidate {
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
                        });
                    }
                    None => {
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

        // Streams: by (peer, direction, seq), highest generation first.
        cands.sort_unstable_by(|a, b| {
            (
                a.peer,
                is_outbound(a.kind),
                a.seq,
                std::cmp::Reverse(a.generation),
            )
                .cmp(&(
                    b.peer,
                    is_outbound(b.kind),
                    b.seq,
                    std::cmp::Reverse(b.generation),
                ))
        });
        for (i, c) in cands.iter_mut().enumerate() {
            c.index = i;
        }
        let mut plan = RecoveryPlan::default();
        let mut at = 0;
        while at < cands.len() {
            let (peer, out) = (cands[at].peer, is_outbound(cands[at].kind));
            let n = cands[at..].partition_point(|c| c.peer == peer && is_outbound(c.kind) == out);
            let group = &cands[at..at + n];
            at += n;
            let rec = match peers.get(&peer) {
                Some(&k) => states[k as usize].rec,
                None => {
                    // Every slot's peer record is written before the slot is published; only
                    // a power loss between the two flushes explains a slot without one.
                    if !sync {
                        report.damage(
                            &meta_path,
                            SUPER_LEN as u64,
                            format!("slots for peer {peer}, which has no record"),
                        );
                    }
                    Record {
                        peer,
                        next_out: 1,
                        ..Record::default()
                    }
                }
            };
            if out {
                plan.outbound(group, &rec, sync, &meta_path, &mut report);
            } else {
                plan.inbound(group, &rec);
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
                .max(st.rec.acked_out + 1)
                .max(last + 1)
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

/// Recovery's decisions about the slots found, made before anything is written.
#[derive(Debug, Default)]
struct RecoveryPlan {
    /// Candidates (indexes) to keep, in (peer, direction, seq) order.
    keep: Vec<usize>,
    /// Candidates to free: superseded, acknowledged or consumed, of an older session, or
    /// (Sync mode) committed after the last sync behind a hole.
    free: Vec<usize>,
    /// Outbound ranges lost with the damage (gap markers to create).
    lost: Vec<LostRange>,
}

impl RecoveryPlan {
    /// One peer's outbound slots, ascending by seq. An outbound stream is contiguous: the store
    /// holds every seq from `acked + 1` to the last committed one (messages or gap markers), and
    /// the recorded floor says how far it went at the last sync. A hole below the floor (or, in
    /// Process mode, anywhere) is damage: it becomes a gap marker. In Sync mode a hole at or
    /// above the floor is what a power loss leaves of commits made after the last sync (never
    /// transmitted): the rest of the stream is dropped and its seqs reused.
    fn outbound(
        &mut self,
        group: &[Candidate],
        rec: &Record,
        sync: bool,
        meta_path: &Path,
        report: &mut OpenReport,
    ) {
        let peer = rec.peer;
        let mut expected = rec.acked_out + 1;
        let floor = rec.next_out.max(expected);
        let mut dropping = false;
        let mut prev: Option<u64> = None;
        let damaged = |report: &mut OpenReport, lost: &mut Vec<LostRange>, first, last| {
            report.damage(
                meta_path,
                SUPER_LEN as u64,
                format!("peer {peer}: outbound seqs {first}..={last} are missing"),
            );
            lost.push(LostRange { peer, first, last });
        };
        for c in group {
            if prev == Some(c.seq) || c.inc != rec.out_inc || c.last < expected || dropping {
                self.free.push(c.index);
                continue;
            }
            prev = Some(c.seq);
            if c.seq > expected {
                let gap_end = c.seq - 1;
                if sync {
                    let damaged_end = gap_end.min(floor - 1);
                    if expected <= damaged_end {
                        damaged(report, &mut self.lost, expected, damaged_end);
                    }
                    if gap_end >= floor {
                        dropping = true;
                        self.free.push(c.index);
                        continue;
                    }
                } else {
                    damaged(report, &mut self.lost, expected, gap_end);
                }
            }
            self.keep.push(c.index);
            expected = expected.max(c.last + 1);
        }
        if expected < floor {
            damaged(report, &mut self.lost, expected, floor - 1);
        }
    }

    /// One peer's inbound slots: messages (and gap markers) past the consumed cursor are kept.
    fn inbound(&mut self, group: &[Candidate], rec: &Record) {
        let mut covered = rec.consumed_in;
        let mut prev: Option<u64> = None;
        for c in group {
            if prev == Some(c.seq) || c.inc != rec.in_inc || c.seq <= covered {
                self.free.push(c.index);
                continue;
            }
            prev = Some(c.seq);
            self.keep.push(c.index);
            if c.kind == KIND_IN_LOST {
                covered = covered.max(c.last);
            }
        }
    }
}

/// The largest payload whose slot fits `capacity` (at most `MAX_MESSAGE_LEN`).
fn max_payload(capacity: u64) -> usize {
    (0..NUM_CLASSES)
        .rev()
        .map(class_size)
        .find(|&s| s as u64 <= capacity)
        .map_or(0, |s| s - SLOT_HDR)
        .min(MAX_MESSAGE_LEN)
}

fn sh_segments_set(segs: &[SegCell<Segment>], i: u32, seg: Segment) -> Result<(), Segment> {
    match segs.get(i as usize) {
        Some(cell) => cell.set(seg),
        None => Err(seg),
    }
}

fn seg_class(sh: &Shared, slot: SlotId) -> usize {
    sh.seg(slot.seg).map_or(0, |s| s.class)
}

fn new_state(rec: Record, entry: u32, copy: u8) -> PeerState {
    PeerState {
        peer: rec.peer,
        entry,
        rec,
        latest: copy,
        durable: copy,
        dirty: false,
        listed: false,
        sendable: 1,
        next_out: 1,
        out: VecDeque::new(),
        out_bytes: 0,
        reserved: 0,
        reserved_bytes: 0,
    }
}

impl Drop for Store {
    /// Closes the store ([`Store::close_producers`]: no producer reserves or commits from now
    /// on) and records the next-seq floors (memory writes to the mapping, no syscall), so a
    /// store closed without a final [`Store::sync`] still knows how far each stream went if a
    /// segment is lost later. Then releases the files (segment mappings and the lock) — at once
    /// if no reservation is outstanding, otherwise when the last one is committed (it fails
    /// with [`StoreError::Closed`]) or dropped. Otherwise dropping is the same as the process
    /// dying.
    fn drop(&mut self) {
        let sh = &*self.shared;
        let mut inner = lock(&sh.inner);
        inner.closed = true;
        inner.store_gone = true;
        let mut scratch = Vec::new();
        // Sync mode: a floor is only written after its messages are flushed (by `sync`).
        let write = sh.durability == Durability::Process;
        inner.record_floors(sh, &mut scratch, write);
        if inner.reservations == 0 {
            inner.release(sh);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Poll-thread API

/// Frees a released slot now (Process mode) or after the next sync made the cursor that
/// justifies it durable (Sync mode).
#[inline]
fn free_or_defer(deferred: &mut Vec<SlotId>, sh: &Shared, inner: &mut Inner, slot: SlotId) {
    if sh.durability == Durability::Sync {
        deferred.push(slot);
    } else {
        inner.free_slot(sh, slot);
    }
}

/// Removes the pending outbound entries of the peer at `pidx` that lie wholly
/// at or below `through` (a gap marker reaching past it stays) and frees their
/// slots (now, or after the next sync in Sync mode). The caller has written the
/// record that justifies it (I5). Returns how many were freed.
fn free_outbound_through(
    deferred: &mut Vec<SlotId>,
    sh: &Shared,
    inner: &mut Inner,
    pidx: usize,
    through: u64,
) -> usize {
    let mut n = 0;
    loop {
        let st = &mut inner.states[pidx];
        let Some(e) = st.out.front().copied() else {
            break;
        };
        if e.last > through {
            break;
        }
        st.out.pop_front();
        st.out_bytes -= u64::from(e.len);
        free_or_defer(deferred, sh, inner, e.slot);
        n += 1;
        if n == 1 {
            failpoint::hit("release.mid_free");
        }
    }
    n
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

    /// A handle for committing outbound messages from any thread.
    pub fn producer(&self) -> OutboundProducer {
        self.producer.clone()
    }

    /// Closes the store to producers: from now on every reserve and commit, through any
    /// [`OutboundProducer`] clone, fails with [`StoreError::Closed`] (checked under the store
    /// lock, so no commit can follow this call). Reservations already made can still be
    /// filled, but not committed. The store itself keeps working for the poll thread (sync,
    /// acknowledgements, reads). Dropping the store does this too. Cannot be undone.
    pub fn close_producers(&mut self) {
        lock(&self.shared.inner).closed = true;
    }

    /// Waits, at most `timeout`, until no outbound reservation is outstanding; returns whether
    /// none is. Meant after [`Store::close_producers`], when no new one can start: then, if it
    /// returns `true`, dropping the store releases the directory at once. A reservation is
    /// outstanding from the reserve until its commit returns or it is dropped, which for a
    /// producer filling a message in place takes as long as the filling does.
    pub fn wait_producers(&mut self, timeout: Duration) -> bool {
        let sh = &*self.shared;
        let deadline = Instant::now().checked_add(timeout);
        let mut inner = lock(&sh.inner);
        // Bounded: each round waits until the deadline, or until notified.
        while inner.reservations > 0 {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            inner = wait_timeout(&sh.released, inner, left.min(Duration::from_secs(3600)));
        }
        true
    }

    /// Closes the store: [`Store::close_producers`], then [`Store::wait_producers`] for at
    /// most `wait`, then drop (which records the floors and releases the files). Returns
    /// whether the files were released when it returned; if not, they are released when the
    /// last outstanding reservation ends (and until then a new open of the directory gets
    /// [`StoreError::Locked`]).
    pub fn close(mut self, wait: Duration) -> bool {
        self.close_producers();
        let released = self.wait_producers(wait);
        drop(self);
        released
    }

    /// Reserves an outbound slot (same as `self.producer().reserve(..)`).
    pub fn reserve(&self, peer: u32, len: usize) -> Result<OutboundReservation<'_>> {
        self.producer.reserve(peer, len)
    }

    /// Peers that have a record (any message or cursor ever stored), sorted.
    pub fn peers(&self) -> Vec<u32> {
        let inner = lock(&self.shared.inner);
        let mut v: Vec<u32> = inner.states.iter().map(|s| s.peer).collect();
        v.sort_unstable();
        v
    }

    /// `(lowest pending seq, next seq to be assigned)` for `peer`; `None` if the peer is
    /// unknown. With nothing pending, lowest == next. Some seqs in between may have been
    /// released selectively.
    pub fn outbound_pending(&self, peer: u32) -> Option<(u64, u64)> {
        self.shared.outbound_pending(peer)
    }

    /// Seqs of all pending (committed, unreleased) outbound messages to `peer`, ascending.
    pub fn outbound_seqs(&self, peer: u32) -> Vec<u64> {
        let inner = lock(&self.shared.inner);
        match inner.peers.get(&peer) {
            Some(&i) => inner.states[i as usize].out.iter().map(|e| e.seq).collect(),
            None => Vec::new(),
        }
    }

    /// The pending outbound message `seq` to `peer`; `None` if released, acked or never sent.
    pub fn outbound_message(&self, peer: u32, seq: u64) -> Option<MessageRef<'_>> {
        let inner = lock(&self.shared.inner);
        let st = &inner.states[*inner.peers.get(&peer)? as usize];
        let e = st.out[st.find_out(seq)?];
        drop(inner);
        if e.lost {
            // A view of the marker from `seq` on.
            return Some(MessageRef {
                seq,
                crc: 0,
                payload: &[],
                lost_through: Some(e.last),
            });
        }
        // Sound (M5): the slot is published and only `&mut self` methods free it.
        let payload = self.shared.payload(e.slot, e.len)?;
        Some(MessageRef {
            seq,
            crc: e.crc,
            payload,
            lost_through: None,
        })
    }

    /// Cumulative acknowledgement: frees every pending message to `peer` with seq ≤ `seq` and
    /// persists the acked cursor (first). Returns how many were freed. A gap marker is freed
    /// only once `seq` covers its whole range.
    ///
    /// There is no selective release: the store always holds the whole unacknowledged part of
    /// a stream, `acked + 1 .. next`, which is what lets recovery tell a missing message from
    /// one that was acknowledged.
    /// [`StoreError::BadSeq`] if `seq` was never assigned.
    pub fn release_outbound_through(&mut self, peer: u32, seq: u64) -> Result<usize> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let mut inner = lock(&sh.inner);
        let Some(&pidx) = inner.peers.get(&peer) else {
            return if seq == 0 {
                Ok(0)
            } else {
                Err(StoreError::BadSeq {
                    peer,
                    seq,
                    reason: "no message was ever sent to this peer",
                })
            };
        };
        let pidx = pidx as usize;
        let st = &mut inner.states[pidx];
        if seq >= st.next_out {
            return Err(StoreError::BadSeq {
                peer,
                seq,
                reason: "acknowledges an unassigned seq",
            });
        }
        if seq <= st.rec.acked_out {
            return Ok(0);
        }
        st.rec.acked_out = seq;
        inner.write_record(sh, pidx);
        failpoint::hit("release.after_record");
        Ok(free_outbound_through(
            &mut self.deferred,
            sh,
            &mut inner,
            pidx,
            seq,
        ))
    }

    /// Gives up on the pending outbound messages to `peer` with seq ≤ `through`: one gap
    /// marker replaces them (published first, so a crash in between loses nothing), and the
    /// messages are freed. The marker is sent like a message and tells the peer the range will
    /// never be delivered. Returns the range the marker stands for (`None` if nothing was
    /// pending at or below `through`). Errors leave everything unchanged.
    pub fn discard_outbound(
        &mut self,
        peer: u32,
        through: u64,
    ) -> Result<Option<std::ops::RangeInclusive<u64>>> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let mut inner = lock(&sh.inner);
        let Some(&pidx) = inner.peers.get(&peer) else {
            return Ok(None);
        };
        let pidx = pidx as usize;
        let st = &inner.states[pidx];
        let Some(front) = st.out.front().copied() else {
            return Ok(None);
        };
        if front.seq > through {
            return Ok(None);
        }
        let first = front.seq;
        // Everything up to `through` goes, and a marker that reaches past it is swallowed whole.
        let last = st
            .out
            .iter()
            .take_while(|e| e.seq <= through)
            .map(|e| e.last)
            .max()
            .unwrap_or(first)
            .max(through.min(st.next_out - 1));
        let marker = inner.publish_marker(sh, pidx, peer, first, last, KIND_OUT_LOST)?;
        failpoint::hit("discard.after_marker");
        free_outbound_through(&mut self.deferred, sh, &mut inner, pidx, last);
        let st = &mut inner.states[pidx];
        st.out.push_front(marker);
        st.out_bytes += u64::from(marker.len);
        Ok(Some(first..=last))
    }

    /// What [`Store::open`] found: damage (with [`StoreConfig::recover_damaged`]), lost
    /// outbound ranges, and how many slots it freed.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Highest inbound seq from `peer` the application consumed (0 = none).
    pub fn inbound_consumed(&self, peer: u32) -> u64 {
        let inner = lock(&self.shared.inner);
        inner
            .peers
            .get(&peer)
            .map_or(0, |&i| inner.states[i as usize].rec.consumed_in)
    }

    /// Whether the inbound stream from `peer` has started in this store (something was
    /// persisted, or it was started past a seq with [`Store::skip_inbound_through`]) since
    /// the store was created or the peer was last reset. A stream that has not started may
    /// begin at any seq the sender names; one that has must account for every seq.
    pub fn inbound_started(&self, peer: u32) -> bool {
        let inner = lock(&self.shared.inner);
        inner
            .peers
            .get(&peer)
            .is_some_and(|&i| inner.states[i as usize].rec.flags & REC_INBOUND_STARTED != 0)
    }

    /// True if inbound message `seq` from `peer` is persisted and not consumed.
    pub fn has_inbound(&self, peer: u32, seq: u64) -> bool {
        self.inbound.contains(peer, seq)
    }

    /// Seqs of persisted, unconsumed inbound messages from `peer`, ascending.
    pub fn inbound_seqs(&self, peer: u32) -> Vec<u64> {
        self.inbound.seqs(peer)
    }

    /// Checks that inbound `seq` from `peer` is neither persisted nor consumed,
    /// then claims a slot for `len` payload bytes. Returns the held lock, the
    /// slot, its class and the peer's index.
    fn claim_inbound(
        &self,
        peer: u32,
        seq: u64,
        len: u32,
    ) -> Result<(MutexGuard<'_, Inner>, SlotId, usize, usize)> {
        let sh = &*self.shared;
        sh.check_len(len as usize)?;
        sh.check_stopped()?;
        if self.has_inbound(peer, seq) {
            return Err(StoreError::BadSeq {
                peer,
                seq,
                reason: "already persisted",
            });
        }
        let mut inner = lock(&sh.inner);
        let consumed = inner
            .peers
            .get(&peer)
            .map_or(0, |&i| inner.states[i as usize].rec.consumed_in);
        if seq == 0 || seq <= consumed {
            return Err(StoreError::BadSeq {
                peer,
                seq,
                reason: "already consumed",
            });
        }
        let class = class_for(len as usize + SLOT_HDR);
        let slot = inner.claim(sh, class)?;
        match inner.peer_idx(sh, peer) {
            Ok(pidx) => {
                inner.mark_inbound_started(sh, pidx);
                Ok((inner, slot, class, pidx))
            }
            Err(e) => {
                inner.unclaim(class, slot);
                Err(e)
            }
        }
    }

    /// Starts persisting inbound message `seq` from `peer` of `len` bytes whose crc32c is
    /// declared to be `crc`: reserves an unpublished slot to assemble fragments in.
    pub fn begin_inbound(
        &mut self,
        peer: u32,
        seq: u64,
        len: u32,
        crc: u32,
    ) -> Result<InboundSlot> {
        let sh = &*self.shared;
        let (inner, slot, class, pidx) = self.claim_inbound(peer, seq, len)?;
        let rec = inner.states[pidx].rec;
        Ok(InboundSlot {
            instance: sh.instance,
            slot,
            class,
            pidx,
            peer,
            seq,
            len,
            crc,
            inc: rec.in_inc,
        })
    }

    /// Writes a fragment at `offset` of an inbound message being assembled (bounds-checked).
    pub fn write_inbound(&mut self, slot: &InboundSlot, offset: u32, bytes: &[u8]) -> Result<()> {
        if slot.instance != self.shared.instance {
            return Err(StoreError::WrongStore);
        }
        let end = offset as usize + bytes.len();
        if end > slot.len as usize {
            return Err(StoreError::OutOfBounds {
                offset,
                len: bytes.len(),
                msg_len: slot.len,
            });
        }
        if let Some(seg) = self.shared.seg(slot.slot.seg) {
            seg.map
                .write(seg.off(slot.slot.idx) + SLOT_HDR + offset as usize, bytes);
        }
        Ok(())
    }

    /// Verifies the assembled payload against the declared crc32c and publishes it. On any
    /// error the slot is freed.
    pub fn commit_inbound(&mut self, slot: InboundSlot) -> Result<()> {
        if slot.instance != self.shared.instance {
            return Err(StoreError::WrongStore);
        }
        let sh = &*self.shared;
        let actual = sh.payload(slot.slot, slot.len).map_or(0, crc32c::crc32c);
        let mut inner = lock(&sh.inner);
        let fail = |inner: &mut Inner, e: StoreError| {
            inner.unclaim(slot.class, slot.slot);
            Err(e)
        };
        if let Err(e) = sh.check_stopped() {
            return fail(&mut inner, e);
        }
        if actual != slot.crc {
            let e = StoreError::ChecksumMismatch {
                peer: slot.peer,
                seq: slot.seq,
                declared: slot.crc,
                actual,
            };
            return fail(&mut inner, e);
        }
        let rec = inner.states[slot.pidx].rec;
        if rec.in_inc != slot.inc
            || slot.seq <= rec.consumed_in
            || self.has_inbound(slot.peer, slot.seq)
        {
            let e = StoreError::BadSeq {
                peer: slot.peer,
                seq: slot.seq,
                reason: "peer was reset, or message already stored/consumed",
            };
            return fail(&mut inner, e);
        }
        let hdr = SlotHeader {
            generation: 0,
            seq: slot.seq,
            peer: slot.peer,
            len: slot.len,
            crc: slot.crc,
            inc: slot.inc,
            kind: KIND_IN,
        };
        inner.publish(sh, slot.slot, hdr);
        drop(inner);
        self.inbound.insert(
            slot.peer,
            slot.seq,
            InEntry {
                last: slot.seq,
                lost: false,
                slot: slot.slot,
                len: slot.len,
                crc: slot.crc,
            },
        );
        Ok(())
    }

    /// Abandons an inbound message being assembled; frees its slot.
    pub fn abort_inbound(&mut self, slot: InboundSlot) {
        if slot.instance == self.shared.instance {
            lock(&self.shared.inner).unclaim(slot.class, slot.slot);
        }
    }

    /// Persists a complete inbound message in one call (its crc32c is computed here).
    pub fn put_inbound(&mut self, peer: u32, seq: u64, payload: &[u8]) -> Result<()> {
        self.put_inbound_checked(peer, seq, payload, crc32c::crc32c(payload))
    }

    /// Persists a complete inbound message whose sender declared `crc`: the
    /// payload is checked against it first ([`StoreError::ChecksumMismatch`],
    /// nothing claimed), then copied into a slot and published, under one
    /// lock. The one-frame fast path of the receiver.
    pub fn put_inbound_checked(
        &mut self,
        peer: u32,
        seq: u64,
        payload: &[u8],
        crc: u32,
    ) -> Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l as usize <= MAX_MESSAGE_LEN)
            .ok_or(StoreError::TooLarge {
                len: payload.len(),
                max: self.shared.max_len,
            })?;
        let actual = crc32c::crc32c(payload);
        if actual != crc {
            return Err(StoreError::ChecksumMismatch {
                peer,
                seq,
                declared: crc,
                actual,
            });
        }
        let sh: &Shared = &self.shared;
        let (mut inner, slot, class, pidx) = self.claim_inbound(peer, seq, len)?;
        let Some(seg) = sh.seg(slot.seg) else {
            inner.unclaim(class, slot);
            return Err(StoreError::WrongStore);
        };
        seg.map.write(seg.off(slot.idx) + SLOT_HDR, payload);
        let hdr = SlotHeader {
            generation: 0,
            seq,
            peer,
            len,
            crc,
            inc: inner.states[pidx].rec.in_inc,
            kind: KIND_IN,
        };
        inner.publish(sh, slot, hdr);
        drop(inner);
        self.inbound.insert(
            peer,
            seq,
            InEntry {
                last: seq,
                lost: false,
                slot,
                len,
                crc,
            },
        );
        Ok(())
    }

    /// The persisted, unconsumed inbound message `seq` from `peer` (or the gap marker that
    /// starts at `seq`: [`MessageRef::lost_through`]).
    pub fn inbound_message(&self, peer: u32, seq: u64) -> Option<MessageRef<'_>> {
        let e = self.inbound.get(peer, seq)?;
        if e.lost {
            return Some(MessageRef {
                seq,
                crc: 0,
                payload: &[],
                lost_through: Some(e.last),
            });
        }
        // Sound (M5): published; freed only through `&mut self`.
        let payload = self.shared.payload(e.slot, e.len)?;
        Some(MessageRef {
            seq,
            crc: e.crc,
            payload,
            lost_through: None,
        })
    }

    /// Persists an inbound gap marker: the sender will never deliver `first..=last` (it said so
    /// in a LOST frame, or its heartbeat showed it no longer holds them). Consuming the marker
    /// moves the consumed cursor to `last`. `first` must be past the consumed cursor and not
    /// persisted; the caller persists markers only for seqs it does not hold.
    pub fn put_inbound_lost(&mut self, peer: u32, first: u64, last: u64) -> Result<()> {
        if last < first {
            return Err(StoreError::BadSeq {
                peer,
                seq: first,
                reason: "gap ends before it starts",
            });
        }
        let sh: &Shared = &self.shared;
        let (mut inner, slot, class, pidx) = self.claim_inbound(peer, first, LOST_LEN)?;
        let e = inner.publish_marker_in(sh, slot, class, pidx, peer, first, last, KIND_IN_LOST)?;
        drop(inner);
        self.inbound.insert(
            peer,
            first,
            InEntry {
                last,
                lost: true,
                slot: e.slot,
                len: e.len,
                crc: e.crc,
            },
        );
        Ok(())
    }

    /// The application consumed inbound `seq` from `peer` (must be `inbound_consumed + 1` and
    /// persisted): persists the consumed cursor (first), then frees the slot. For a gap marker
    /// the cursor moves to the marker's last seq.
    pub fn consume_inbound(&mut self, peer: u32, seq: u64) -> Result<()> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let Some(e) = self.inbound.get(peer, seq) else {
            return Err(StoreError::BadSeq {
                peer,
                seq,
                reason: "not persisted",
            });
        };
        let mut inner = lock(&sh.inner);
        let Some(&pidx) = inner.peers.get(&peer) else {
            return Err(StoreError::BadSeq {
                peer,
                seq,
                reason: "unknown peer",
            });
        };
        let pidx = pidx as usize;
        if seq != inner.states[pidx].rec.consumed_in + 1 {
            return Err(StoreError::BadSeq {
                peer,
                seq,
                reason: "not the next seq to consume",
            });
        }
        inner.states[pidx].rec.consumed_in = e.last;
        inner.write_record(sh, pidx);
        failpoint::hit("consume.after_record");
        free_or_defer(&mut self.deferred, sh, &mut inner, e.slot);
        drop(inner);
        self.inbound.remove(peer, seq);
        Ok(())
    }

    /// The peer's recorded session epoch (`None` if never set or reset to 0).
    pub fn peer_epoch(&self, peer: u32) -> Option<u64> {
        let inner = lock(&self.shared.inner);
        let e = inner.states[*inner.peers.get(&peer)? as usize]
            .rec
            .peer_epoch;
        (e != 0).then_some(e)
    }

    /// Records the peer's session epoch.
    pub fn set_peer_epoch(&mut self, peer: u32, epoch: u64) -> Result<()> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let mut inner = lock(&sh.inner);
        let pidx = inner.peer_idx(sh, peer)?;
        if inner.states[pidx].rec.peer_epoch != epoch {
            inner.states[pidx].rec.peer_epoch = epoch;
            inner.write_record(sh, pidx);
        }
        Ok(())
    }

    /// The peer came back with a new session epoch (it lost its store): drops all inbound state
    /// for it (consumed cursor back to 0), records `new_epoch`, and keeps or drops unacknowledged
    /// outbound messages as chosen. Atomic with respect to crashes (one record write).
    pub fn reset_peer(
        &mut self,
        peer: u32,
        new_epoch: u64,
        outbound: OutboundOnReset,
    ) -> Result<ResetReport> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let mut inner = lock(&sh.inner);
        let pidx = inner.peer_idx(sh, peer)?;
        let st = &mut inner.states[pidx];
        st.rec.in_inc = st.rec.in_inc.wrapping_add(1);
        st.rec.consumed_in = 0;
        st.rec.flags &= !REC_INBOUND_STARTED;
        st.rec.peer_epoch = new_epoch;
        let mut report = ResetReport::default();
        let mut drop_out = Vec::new();
        if outbound == OutboundOnReset::Drop {
            st.rec.out_inc = st.rec.out_inc.wrapping_add(1);
            st.rec.acked_out = 0;
            st.rec.next_out = 1;
            st.next_out = 1;
            drop_out.extend(st.out.drain(..).map(|e| e.slot));
            st.out_bytes = 0;
            report.outbound_dropped = drop_out.len();
        } else {
            report.outbound_kept = st.out.len();
        }
        inner.write_record(sh, pidx);
        failpoint::hit("reset.after_record");
        for s in drop_out {
            free_or_defer(&mut self.deferred, sh, &mut inner, s);
        }
        let dropped = self.inbound.remove_peer(peer);
        report.inbound_dropped = dropped.len();
        for e in dropped {
            free_or_defer(&mut self.deferred, sh, &mut inner, e.slot);
        }
        Ok(report)
    }

    /// Group commit, called by the poll thread once per loop iteration.
    ///
    /// For every peer with commits since the last call it records the
    /// next-seq floor (so numbering never goes back, even if a segment is
    /// lost) and captures that peer's next seq, together with the set of
    /// changed byte ranges, under one lock. [`Durability::Sync`]: it then
    /// flushes those ranges (`msync`), then the changed peer records, and only
    /// then publishes the captured seqs as [`Store::sendable_next`] and frees
    /// the slots released since the last sync. A message a producer commits
    /// while the flush runs is covered by the next sync, not this one.
    /// [`Durability::Process`]: no flush; the floors are written and the
    /// watermark published at once.
    ///
    /// The first failure is sticky: this and every later call return
    /// [`StoreError::Stopped`].
    pub fn sync(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let sh = &*shared;
        sh.check_stopped()?;
        let res = self.sync_inner(sh);
        if let Err(e) = res {
            tracing::error!(error = %e, "sync failed: store stopped until reopened");
            let _ = sh.stopped.set(std::sync::Arc::new(e));
            return sh.check_stopped();
        }
        Ok(())
    }

    fn sync_inner(&mut self, sh: &Shared) -> io::Result<()> {
        let mut inner = lock(&sh.inner);
        self.captured.clear();
        if sh.durability == Durability::Process {
            inner.record_floors(sh, &mut self.captured, true);
            for &(i, next) in &self.captured {
                inner.states[i as usize].sendable = next;
            }
            return Ok(());
        }
        // Sync mode: the floors are written only once the messages below them are flushed,
        // so a floor on disk never claims a message that is not.
        inner.record_floors(sh, &mut self.captured, false);
        let segs = std::mem::take(&mut inner.dirty_segs);
        let mut ranges = Vec::with_capacity(segs.len());
        for s in segs {
            let r = std::mem::take(&mut inner.seg_dirty[s as usize]);
            ranges.push((s, r));
        }
        let entries = std::mem::take(&mut inner.dirty_entries);
        drop(inner);
        for (s, (lo, hi)) in ranges {
            if let Some(seg) = sh.seg(s) {
                seg.map.flush(lo, hi - lo)?;
                sh.flushed(&seg.path, lo as u64, (hi - lo) as u64);
            }
        }
        let mut inner = lock(&sh.inner);
        let mut entries = entries;
        for &(i, next) in &self.captured {
            let st = &mut inner.states[i as usize];
            if st.rec.next_out < next {
                st.rec.next_out = next;
                inner.write_record(sh, i as usize);
            }
        }
        // Records written since the capture (these floors, a producer's new peer) go with
        // this flush.
        entries.append(&mut inner.dirty_entries);
        if let (Some(lo), Some(hi)) = (
            entries
                .iter()
                .map(|&i| inner.states[i as usize].entry)
                .min(),
            entries
                .iter()
                .map(|&i| inner.states[i as usize].entry)
                .max(),
        ) {
            let lo = SUPER_LEN + lo as usize * ENTRY_LEN;
            let hi = SUPER_LEN + (hi as usize + 1) * ENTRY_LEN;
            inner.meta.flush(lo, hi - lo)?;
            sh.flushed(&sh.dir.join(META_FILE), lo as u64, (hi - lo) as u64);
            for i in entries {
                let st = &mut inner.states[i as usize];
                st.durable = st.latest;
                st.dirty = false;
            }
        }
        for &(i, next) in &self.captured {
            inner.states[i as usize].sendable = next;
        }
        for s in self.deferred.drain(..) {
            inner.free_slot(sh, s);
        }
        Ok(())
    }

    /// Outbound seqs to `peer` below this may be transmitted: their next-seq
    /// floor is recorded and, in [`Durability::Sync`] mode, they were made
    /// durable by a completed [`Store::sync`] (so a power loss cannot take
    /// back a message the peer has seen). 1 for an unknown peer.
    pub fn sendable_next(&self, peer: u32) -> u64 {
        self.shared.sendable_next(peer)
    }
}

impl Shared {
    fn sendable_next(&self, peer: u32) -> u64 {
        let inner = lock(&self.inner);
        inner
            .peers
            .get(&peer)
            .map_or(1, |&i| inner.states[i as usize].sendable)
    }
}

impl Store {
    /// Gives disk space back: deletes segment files whose slots have all been free for 2 s
    /// (at once for slots of 1 MiB and more), so a store returns to its empty size once the
    /// traffic that grew it is acknowledged and consumed. Cheap when there is nothing to do (a
    /// lock and a length check; the clock is read only when some segment is empty). Call it
    /// once per poll iteration, in either durability mode; returns how many segments it
    /// deleted. A deletion that fails is logged and tried again later.
    pub fn maintain(&mut self) -> usize {
        if lock(&self.shared.inner).empty.is_empty() {
            return 0;
        }
        self.maintain_at(Instant::now())
    }

    /// [`Store::maintain`] with the time given (`now` must not go backwards between calls).
    pub fn maintain_at(&mut self, now: Instant) -> usize {
        let sh = &*self.shared;
        if sh.check_stopped().is_err() {
            return 0;
        }
        lock(&sh.inner).reclaim(sh, now)
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

    /// Test hook (power-loss simulation): `hook(file, offset, len)` is called after every
    /// successful flush of a byte range (segment creation reports the whole file).
    #[doc(hidden)]
    #[allow(clippy::type_complexity)]
    pub fn __set_flush_hook(&mut self, hook: Box<dyn FnMut(&Path, u64, u64) + Send>) {
        self.shared.hook.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(hook);
    }

    /// Test hook: simulate a sync failure (makes the store stopped, as a failed msync would).
    #[doc(hidden)]
    pub fn __inject_sync_error(&mut self) {
        let _ = self
            .shared
            .stopped
            .set(std::sync::Arc::new(io::Error::other("injected")));
    }
}

impl Store {
    /// Number of peers with a record (cheap; no allocation).
    pub fn peer_count(&self) -> usize {
        lock(&self.shared.inner).states.len()
    }

    /// Size of the peer table: the most peers this store can hold a record for.
    pub fn max_peers(&self) -> u32 {
        self.shared.max_peers
    }

    /// The sender no longer holds any message `<= through` (its heartbeat said
    /// so): moves the consumed cursor forward to `through` (never back) and
    /// frees any persisted inbound message at or below it. One record write.
    pub fn skip_inbound_through(&mut self, peer: u32, through: u64) -> Result<()> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let mut inner = lock(&sh.inner);
        let pidx = inner.peer_idx(sh, peer)?;
        if inner.states[pidx].rec.consumed_in >= through {
            return Ok(());
        }
        inner.states[pidx].rec.consumed_in = through;
        inner.states[pidx].rec.flags |= REC_INBOUND_STARTED;
        inner.write_record(sh, pidx);
        for e in self.inbound.remove_through(peer, through) {
            free_or_defer(&mut self.deferred, sh, &mut inner, e.slot);
        }
        Ok(())
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
