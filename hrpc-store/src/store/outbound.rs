//! The poll thread's side of outbound streams: reading pending messages, and freeing them
//! when the peer acknowledges them or when they are given up on (a gap marker replaces
//! them). The cursor record is written before any slot is freed (I5), and every seq from
//! `acked + 1` to `next - 1` stays held as a message or inside a gap marker (I7).

use super::alloc::free_or_defer;
use super::producer::OutboundReservation;
use super::report::MessageRef;
use super::{Inner, OutEntry, Result, Shared, SlotId, Store};
use crate::error::StoreError;
use crate::failpoint;
use crate::layout::KIND_OUT_LOST;
use crate::sync::lock;

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

/// Most messages an [`OutboundRun`] reads under one lock.
pub const OUTBOUND_RUN: usize = 32;

const EMPTY_ENTRY: OutEntry = OutEntry {
    seq: 0,
    last: 0,
    lost: false,
    slot: SlotId { seg: 0, idx: 0 },
    len: 0,
    crc: 0,
    flags: 0,
};

/// Reads pending outbound messages of one peer, in runs of up to [`OUTBOUND_RUN`] copied
/// under one lock ([`Store::outbound_run`]). The copies stay valid while it lives: it borrows
/// the [`Store`], and only `&mut Store` frees or replaces a pending message (I4); producers
/// only append.
#[derive(Debug)]
pub struct OutboundRun<'a> {
    shared: &'a Shared,
    peer: u32,
    /// Payload bytes the reader expects to take (how many messages a refill copies).
    room: usize,
    /// Seq of `entries[0]`; `entries[..n]` are the messages `first..first + n`.
    first: u64,
    n: usize,
    entries: [OutEntry; OUTBOUND_RUN],
}

impl<'a> OutboundRun<'a> {
    /// The pending outbound message `seq` (or the gap marker that holds it), as
    /// [`Store::outbound_message`] returns it.
    pub fn message(&mut self, seq: u64) -> Option<MessageRef<'a>> {
        if let Some(i) = seq.checked_sub(self.first)
            && i < self.n as u64
        {
            let e = self.entries[i as usize];
            return self
                .shared
                .message_ref(seq, None, e.slot, e.len, e.crc, e.flags);
        }
        let inner = lock(&self.shared.inner);
        let st = &inner.states[*inner.peers.get(&self.peer)? as usize];
        let at = st.find_out(seq)?;
        let e = st.out[at];
        if e.lost {
            drop(inner);
            return self
                .shared
                .message_ref(seq, Some(e.last), e.slot, e.len, e.crc, 0);
        }
        // Messages (not markers) from `seq` on, one seq each: cache as many as `room` takes
        // if they are the size of this one, and one more.
        let want = (self.room / (e.len as usize).max(1)).saturating_add(1);
        self.first = seq;
        self.n = 0;
        for (k, e) in st.out.range(at..).take(want.min(OUTBOUND_RUN)).enumerate() {
            if e.lost || e.seq != seq + k as u64 {
                break;
            }
            self.entries[k] = *e;
            self.n = k + 1;
        }
        drop(inner);
        self.shared
            .message_ref(seq, None, e.slot, e.len, e.crc, e.flags)
    }
}

impl Store {
    /// Reserves an outbound slot (same as `self.producer().reserve(..)`).
    pub fn reserve(&self, peer: u32, len: usize) -> Result<OutboundReservation<'_>> {
        self.producer.reserve(peer, len)
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
        let lost = e.lost.then_some(e.last);
        self.shared
            .message_ref(seq, lost, e.slot, e.len, e.crc, e.flags)
    }

    /// A reader of the pending outbound messages to `peer` that takes the store lock once per
    /// run of consecutive messages instead of once per message: for the poll thread's
    /// transmit loop. A run is about as many messages as fit in `room` payload bytes (a
    /// datagram's), at least one and at most [`OUTBOUND_RUN`]. What it returns is what
    /// [`Store::outbound_message`] would.
    pub fn outbound_run(&self, peer: u32, room: usize) -> OutboundRun<'_> {
        OutboundRun {
            shared: &self.shared,
            peer,
            room,
            first: 0,
            n: 0,
            entries: [EMPTY_ENTRY; OUTBOUND_RUN],
        }
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
}
