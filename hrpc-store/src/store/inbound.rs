//! Inbound messages: persisting them (whole, or fragment by fragment into an
//! [`InboundSlot`]), gap markers for inbound ranges that will never arrive, reading, and
//! consuming in order. A seq already persisted or consumed is refused; the consumed cursor
//! is written before the slot is freed (I5).

use super::alloc::free_or_defer;
use super::report::MessageRef;
use super::{Inner, Result, Shared, SlotId, Store};
use crate::error::StoreError;
use crate::inbound_index::InEntry;
use crate::layout::{
    FLAG_CALL, KIND_IN, KIND_IN_LOST, LOST_LEN, REC_INBOUND_STARTED, SLOT_HDR, SlotHeader,
    class_for,
};
use crate::sync::{MutexGuard, lock};
use crate::{MAX_MESSAGE_LEN, failpoint};

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
    flags: u8,
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

/// Most messages one [`Store::put_inbound_batch`] call persists.
pub const MAX_PUT_BATCH: usize = 64;

/// A complete inbound message for [`Store::put_inbound_batch`], with what its sender declared.
#[derive(Debug, Clone, Copy)]
pub struct InboundPut<'a> {
    /// Sequence number.
    pub seq: u64,
    /// The whole payload.
    pub payload: &'a [u8],
    /// Its crc32c as the sender declared it (checked before anything is stored).
    pub crc: u32,
    /// [`FLAG_CALL`](crate::FLAG_CALL) or 0; other bits are dropped.
    pub flags: u8,
}

impl Store {
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
    /// declared to be `crc` and whose flags are `flags` ([`FLAG_CALL`](crate::FLAG_CALL) or 0;
    /// other bits are dropped): reserves an unpublished slot to assemble fragments in.
    pub fn begin_inbound(
        &mut self,
        peer: u32,
        seq: u64,
        len: u32,
        crc: u32,
        flags: u8,
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
            flags: flags & FLAG_CALL,
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
            flags: slot.flags,
            ..SlotHeader::default()
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
                flags: slot.flags,
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
        self.put_inbound_checked(peer, seq, payload, crc32c::crc32c(payload), 0)
    }

    /// Persists a complete inbound message whose sender declared `crc` and `flags`
    /// ([`FLAG_CALL`](crate::FLAG_CALL) or 0; other bits are dropped): the payload is checked
    /// against `crc` first ([`StoreError::ChecksumMismatch`], nothing claimed), then copied
    /// into a slot and published, under one lock. The one-frame fast path of the receiver.
    pub fn put_inbound_checked(
        &mut self,
        peer: u32,
        seq: u64,
        payload: &[u8],
        crc: u32,
        flags: u8,
    ) -> Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l as usize <= MAX_MESSAGE_LEN)
            .ok_or_else(|| StoreError::TooLarge {
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
            flags: flags & FLAG_CALL,
            ..SlotHeader::default()
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
                flags: flags & FLAG_CALL,
            },
        );
        Ok(())
    }

    /// Persists several complete inbound messages from `peer` (at most [`MAX_PUT_BATCH`]; the
    /// rest are ignored), each exactly as [`Store::put_inbound_checked`] would, under one lock
    /// acquisition: the payload checked against the declared crc before anything is claimed,
    /// then claim, copy, header and publish. Returns a mask: bit `i` set means `msgs[i]` was
    /// persisted. A message not persisted, for whatever reason (bad checksum, already
    /// persisted or consumed, no space, unknown peer, ...), changed nothing: calling
    /// [`Store::put_inbound_checked`] for it does the same work one message at a time and
    /// says why.
    pub fn put_inbound_batch(&mut self, peer: u32, msgs: &[InboundPut<'_>]) -> u64 {
        let msgs = &msgs[..msgs.len().min(MAX_PUT_BATCH)];
        let sh: &Shared = &self.shared;
        if sh.check_stopped().is_err() {
            return 0;
        }
        // Checksums first, with no lock held.
        let mut good = 0u64;
        for (i, m) in msgs.iter().enumerate() {
            if m.seq != 0 && m.payload.len() <= sh.max_len && crc32c::crc32c(m.payload) == m.crc {
                good |= 1 << i;
            }
        }
        if good == 0 {
            return 0;
        }
        let mut inner = lock(&sh.inner);
        let Some(&pidx) = inner.peers.get(&peer) else {
            return 0; // A new peer's record is written by the one-message path.
        };
        let pidx = pidx as usize;
        let mut done = 0u64;
        for (i, m) in msgs.iter().enumerate() {
            if good & (1 << i) == 0
                || m.seq <= inner.states[pidx].rec.consumed_in
                || self.inbound.contains(peer, m.seq)
            {
                continue;
            }
            let len = m.payload.len() as u32;
            let class = class_for(m.payload.len() + SLOT_HDR);
            let Ok(slot) = inner.claim(sh, class) else {
                break; // Full: the one-message path reports it.
            };
            let Some(seg) = sh.seg(slot.seg) else {
                inner.unclaim(class, slot);
                break;
            };
            inner.mark_inbound_started(sh, pidx);
            seg.map.write(seg.off(slot.idx) + SLOT_HDR, m.payload);
            let hdr = SlotHeader {
                generation: 0,
                seq: m.seq,
                peer,
                len,
                crc: m.crc,
                inc: inner.states[pidx].rec.in_inc,
                kind: KIND_IN,
                flags: m.flags & FLAG_CALL,
                ..SlotHeader::default()
            };
            inner.publish(sh, slot, hdr);
            self.inbound.insert(
                peer,
                m.seq,
                InEntry {
                    last: m.seq,
                    lost: false,
                    slot,
                    len,
                    crc: m.crc,
                    flags: m.flags & FLAG_CALL,
                },
            );
            done |= 1 << i;
        }
        done
    }

    /// The persisted, unconsumed inbound message `seq` from `peer` (or the gap marker that
    /// starts at `seq`: [`MessageRef::lost_through`]).
    pub fn inbound_message(&self, peer: u32, seq: u64) -> Option<MessageRef<'_>> {
        let e = self.inbound.get(peer, seq)?;
        let lost = e.lost.then_some(e.last);
        self.shared
            .message_ref(seq, lost, e.slot, e.len, e.crc, e.flags)
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
                flags: 0,
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
