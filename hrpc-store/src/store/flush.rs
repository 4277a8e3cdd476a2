//! Group commit: [`Store::sync`] records the next-seq floors and, in [`Durability::Sync`]
//! mode, flushes what changed since the last sync (segments first, then peer records)
//! before publishing the captured seqs as sendable and freeing the slots whose frees waited
//! for a durable cursor (I5, I6).

use super::config::Durability;
use super::{META_FILE, Result, Shared, Store};
#[cfg(doc)]
use crate::StoreError;
use crate::layout::{ENTRY_LEN, SUPER_LEN};
use crate::sync::lock;
use std::io;

impl Store {
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
