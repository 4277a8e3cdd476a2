//! Publishing a slot: the header is written, then one Release store of a fresh generation
//! into the state word makes it visible (I1: a nonzero state word means the header and
//! payload are complete; I2: publish order is seq order, since both happen under the
//! mutex). Gap markers, which stand for a range of seqs that will never be delivered, are
//! published the same way.

use super::config::Durability;
use super::{Inner, OutEntry, Result, Shared, SlotId, write_words};
use crate::error::StoreError;
use crate::failpoint;
use crate::layout::{KIND_OUT, KIND_OUT_LOST, LOST_LEN, SLOT_HDR, SlotHeader, class_for};
use crate::sync::Ordering;

impl Inner {
    /// Publishes a filled slot under the lock: header, then one Release store of the state word.
    /// Inlined, so the header is built in registers rather than read back from the caller's
    /// stack (narrow stores read back wide stall on store forwarding).
    #[inline(always)]
    pub(super) fn publish(&mut self, sh: &Shared, slot: SlotId, mut hdr: SlotHeader) {
        let Some(seg) = sh.seg(slot.seg) else { return };
        hdr.generation = self.generation;
        self.generation += 1;
        let off = seg.off(slot.idx);
        write_words(&seg.map, off + 8, &hdr.encode_words());
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

    /// Writes `word` (little-endian) as the 8-byte payload of the claimed slot `slot` (of size
    /// class `class`), then publishes it with `hdr` and the payload's crc, which it returns.
    /// If the slot is in no segment of this store the slot is returned and nothing published.
    pub(super) fn publish_word(
        &mut self,
        sh: &Shared,
        slot: SlotId,
        class: usize,
        word: u64,
        mut hdr: SlotHeader,
    ) -> Result<u32> {
        let payload = word.to_le_bytes();
        let Some(seg) = sh.seg(slot.seg) else {
            self.unclaim(class, slot);
            return Err(StoreError::WrongStore);
        };
        seg.map.write(seg.off(slot.idx) + SLOT_HDR, &payload);
        hdr.crc = crc32c::crc32c(&payload);
        self.publish(sh, slot, hdr);
        Ok(hdr.crc)
    }

    /// Claims a slot and publishes in it a gap marker for `first..=last` of `kind` for the
    /// peer at `pidx` ([`Inner::publish_marker_in`]). Returns its index entry.
    pub(super) fn publish_marker(
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
    pub(super) fn publish_marker_in(
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
            inc,
            kind,
            ..SlotHeader::default()
        };
        let crc = self.publish_word(sh, slot, class, last, hdr)?;
        Ok(OutEntry {
            seq: first,
            last,
            lost: true,
            slot,
            len: LOST_LEN,
            crc,
            flags: 0,
        })
    }
}
