//! The slot allocator: size classes, the segment files that hold their slots, and the
//! claim / unclaim / free transitions of a slot (invariant I3: a slot is on a free list xor
//! claimed xor published). Freeing a published slot is one Release store of 0 into its
//! state word ([`Inner::free_slot`]); when a free must wait for the cursor that justifies
//! it to be durable (I5), callers go through [`free_or_defer`].

use super::config::Durability;
use super::files::{create_file, fsync_dir};
use super::{Inner, Result, Segment, Shared, SlotId};
use crate::error::StoreError;
use crate::layout::{NUM_CLASSES, SEG_HDR, SLOT_HDR, SegHeader, class_size};
use crate::map::{MappedFile, SegCell};
use crate::sync::Ordering;
use crate::{MAX_MESSAGE_LEN, failpoint};
use std::time::Instant;
use std::{fs, io};

/// Segments of slots this large are deleted as soon as `maintain` finds them empty: each slot
/// is a large message, and recreating such a segment costs little next to writing one.
const LARGE_SLOT: usize = 1 << 20;
/// Target size of the first segment of a class; later ones double up to `SEG_MAX`.
#[cfg(not(loom))]
const SEG_BASE: usize = 64 << 10;
#[cfg(loom)]
const SEG_BASE: usize = 1 << 10;
pub(super) const SEG_MAX: usize = 64 << 20;

#[derive(Debug, Default)]
pub(super) struct ClassState {
    pub(super) free: Vec<SlotId>,
    pub(super) segs: u32,
}

/// Occupancy of one segment (index into `Inner::seg_use`), for reclaiming empty ones.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SegUse {
    /// Slots of it on the free list.
    pub(super) free: u32,
    /// All its slots (0 = no segment at this index).
    pub(super) slots: u32,
    /// Its slots are at least `LARGE_SLOT`: deleted as soon as found empty.
    pub(super) large: bool,
    /// In `Inner::empty` (it was seen with every slot free).
    pub(super) listed: bool,
    /// When `maintain` first saw it empty; reset by a claim.
    pub(super) idle_since: Option<Instant>,
}

/// Per-segment occupancy of the segments in `segments`, from the class free lists, and the
/// segments found empty.
pub(super) fn seg_use_of(
    segments: &[SegCell<Segment>],
    classes: &[ClassState],
) -> (Vec<SegUse>, Vec<u32>) {
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

impl Inner {
    pub(super) fn mark_dirty(&mut self, seg: u32, lo: usize, hi: usize) {
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
    pub(super) fn claim(&mut self, sh: &Shared, class: usize) -> Result<SlotId> {
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
    pub(super) fn unclaim(&mut self, class: usize, slot: SlotId) {
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

    /// Frees a published slot: one Release store of 0 into its state word.
    pub(super) fn free_slot(&mut self, sh: &Shared, slot: SlotId) {
        let Some(seg) = sh.seg(slot.seg) else { return };
        let off = seg.off(slot.idx);
        seg.map.word(off).store(0, Ordering::Release);
        let class = seg.class;
        if sh.durability == Durability::Sync {
            self.mark_dirty(slot.seg, off, off + 8);
        }
        // Its state word is 0 again: back on the free list as a never-published one.
        self.unclaim(class, slot);
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
}

/// The largest payload whose slot fits `capacity` (at most `MAX_MESSAGE_LEN`).
pub(super) fn max_payload(capacity: u64) -> usize {
    (0..NUM_CLASSES)
        .rev()
        .map(class_size)
        .find(|&s| s as u64 <= capacity)
        .map_or(0, |s| s - SLOT_HDR)
        .min(MAX_MESSAGE_LEN)
}

pub(super) fn sh_segments_set(
    segs: &[SegCell<Segment>],
    i: u32,
    seg: Segment,
) -> Result<(), Segment> {
    match segs.get(i as usize) {
        Some(cell) => cell.set(seg),
        None => Err(seg),
    }
}

pub(super) fn seg_class(sh: &Shared, slot: SlotId) -> usize {
    sh.seg(slot.seg).map_or(0, |s| s.class)
}

/// Frees a released slot now (Process mode) or after the next sync made the cursor that
/// justifies it durable (Sync mode).
#[inline]
pub(super) fn free_or_defer(
    deferred: &mut Vec<SlotId>,
    sh: &Shared,
    inner: &mut Inner,
    slot: SlotId,
) {
    if sh.durability == Durability::Sync {
        deferred.push(slot);
    } else {
        inner.free_slot(sh, slot);
    }
}
