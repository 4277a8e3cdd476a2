//! Outstanding calls: the caller's side of request/response.
//!
//! A call is a request message plus a call slot (kind 5) that outlives the request's
//! acknowledgement: its header seq is the call id, its peer the callee, its payload the
//! deadline (milliseconds since the Unix epoch). Both are published under one store lock by
//! [`OutboundReservation::commit_request`](super::OutboundReservation::commit_request), the
//! call slot first, so no request is ever on the wire without its call. The call ends — its
//! slot is freed — when the application has taken its response or its timeout
//! ([`Store::finish_call`]); a response that finds no call is a repeat, or came after the
//! timeout, and is dropped by the node. Recovery rebuilds the table from the call slots.
//!
//! Call ids are unique per store: a random 63-bit start drawn at each open, plus one per call,
//! so a late response to a call of an earlier session cannot match a new call.

use std::collections::{BTreeMap, BTreeSet};

use super::{Inner, OutboundProducer, Result, Shared, SlotId, Store};
use crate::layout::{CALL_LEN, KIND_CALL, SLOT_HDR, SlotHeader, class_for};
use crate::sync::lock;

/// An outstanding call, as the store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCall {
    /// The call id (nonzero, unique in this store).
    pub id: u64,
    /// The callee.
    pub peer: u32,
    /// When the caller stops waiting, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct CallEntry {
    peer: u32,
    deadline_ms: u64,
    slot: SlotId,
}

/// The outstanding calls, by id and by deadline.
#[derive(Debug, Default)]
pub(super) struct CallTable {
    by_id: BTreeMap<u64, CallEntry>,
    by_deadline: BTreeSet<(u64, u64)>,
    /// Next id to hand out.
    next_id: u64,
}

impl CallTable {
    /// An empty table whose ids start at a random point drawn from `seed`.
    pub(super) fn new(seed: u64) -> CallTable {
        CallTable {
            next_id: (seed >> 1).max(1),
            ..CallTable::default()
        }
    }

    /// Adds a call found by recovery (or just published).
    pub(super) fn insert(&mut self, id: u64, peer: u32, deadline_ms: u64, slot: SlotId) {
        if let Some(old) = self.by_id.insert(
            id,
            CallEntry {
                peer,
                deadline_ms,
                slot,
            },
        ) {
            self.by_deadline.remove(&(old.deadline_ms, id));
        }
        self.by_deadline.insert((deadline_ms, id));
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        // 2^63 calls per store would be needed to wrap; never reuse 0.
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Whether call `id` is outstanding.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    fn remove(&mut self, id: u64) -> Option<CallEntry> {
        let e = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(e.deadline_ms, id));
        Some(e)
    }

    fn get(&self, id: u64) -> Option<PendingCall> {
        self.by_id.get(&id).map(|e| PendingCall {
            id,
            peer: e.peer,
            deadline_ms: e.deadline_ms,
        })
    }
}

impl Inner {
    /// Claims a call slot and publishes in it the call `id` to `peer` with `deadline_ms`;
    /// records it in the table. Under the store lock, before the request it belongs to.
    pub(super) fn publish_call(
        &mut self,
        sh: &Shared,
        id: u64,
        peer: u32,
        deadline_ms: u64,
    ) -> Result<()> {
        let class = class_for(CALL_LEN as usize + SLOT_HDR);
        let slot = self.claim(sh, class)?;
        let hdr = SlotHeader {
            seq: id,
            peer,
            len: CALL_LEN,
            kind: KIND_CALL,
            ..SlotHeader::default()
        };
        self.publish_word(sh, slot, class, deadline_ms, hdr)?;
        self.calls.insert(id, peer, deadline_ms, slot);
        Ok(())
    }
}

impl OutboundProducer {
    /// A new call id for [`OutboundReservation::commit_request`](super::OutboundReservation::commit_request):
    /// nonzero, never handed out before by this store while open, and drawn from a random
    /// start at each open.
    pub fn new_call_id(&self) -> u64 {
        lock(&self.shared.inner).calls.take_id()
    }
}

impl Store {
    /// The outstanding call `id`, if the store holds it.
    pub fn call(&self, id: u64) -> Option<PendingCall> {
        lock(&self.shared.inner).calls.get(id)
    }

    /// The peers with outstanding calls, ascending.
    pub fn call_peers(&self) -> Vec<u32> {
        let inner = lock(&self.shared.inner);
        let mut peers: Vec<u32> = inner.calls.by_id.values().map(|e| e.peer).collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// How many calls are outstanding.
    pub fn calls_pending(&self) -> usize {
        lock(&self.shared.inner).calls.by_id.len()
    }

    /// The earliest deadline of an outstanding call (ms since the Unix epoch).
    pub fn next_call_deadline(&self) -> Option<u64> {
        let inner = lock(&self.shared.inner);
        inner.calls.by_deadline.first().map(|&(d, _)| d)
    }

    /// The earliest deadline among the outstanding calls for which `wanted(id)` holds.
    pub fn next_call_deadline_where(&self, mut wanted: impl FnMut(u64) -> bool) -> Option<u64> {
        let inner = lock(&self.shared.inner);
        inner
            .calls
            .by_deadline
            .iter()
            .find(|&&(_, id)| wanted(id))
            .map(|&(d, _)| d)
    }

    /// Up to `max` outstanding calls whose deadline is at or before `now_ms`, earliest first.
    /// They stay outstanding until [`Store::finish_call`].
    pub fn expired_calls(&self, now_ms: u64, max: usize) -> Vec<PendingCall> {
        let inner = lock(&self.shared.inner);
        inner
            .calls
            .by_deadline
            .iter()
            .take_while(|&&(d, _)| d <= now_ms)
            .take(max)
            .filter_map(|&(_, id)| inner.calls.get(id))
            .collect()
    }

    /// Ends call `id`: its response or its timeout was taken by the application. Frees its
    /// slot at once, in both modes: no cursor has to reach the disk first (in Sync mode the
    /// free is made durable by the next sync's segment flush, which comes before the flush of
    /// the peer records, so a power loss keeps the end of a call rather than the consumption
    /// of its response that follows it). Returns whether the call was outstanding.
    pub fn finish_call(&mut self, id: u64) -> Result<bool> {
        let sh = &*self.shared;
        sh.check_stopped()?;
        let mut inner = lock(&sh.inner);
        let Some(e) = inner.calls.remove(id) else {
            return Ok(false);
        };
        inner.free_slot(sh, e.slot);
        Ok(true)
    }
}
