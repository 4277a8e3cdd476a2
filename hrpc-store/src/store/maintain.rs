//! Giving disk space back: [`Store::maintain`] deletes segment files whose slots have all been
//! free for a while. A segment is removed only by `&mut Store` under the mutex, and only when
//! every slot is on the free list; its slots leave the free list first (invariant I8).

use super::alloc::SegUse;
use super::{Inner, Result, Shared, Store};
use crate::error::StoreError;
use crate::sync::lock;
use std::fs;
use std::time::{Duration, Instant};

/// A segment whose slots have all been free for this long is deleted by [`Store::maintain`].
const IDLE_DELAY: Duration = Duration::from_secs(2);

impl Inner {
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
}
