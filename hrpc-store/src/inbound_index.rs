//! The in-memory index of persisted, unconsumed inbound messages: peer → seq → slot.
//!
//! The receiver looks a message up when it arrives (is it a duplicate?), when it is stored,
//! when it is delivered and when it is consumed, so every lookup has to be constant time and
//! allocation-free in the steady state. Inbound seqs from one peer are dense and arrive nearly
//! in order, so each peer gets a ring indexed by `seq - base` that spans from the oldest to the
//! newest held seq. A seq too far from the others to fit in [`RING_SPAN`] (only a forged or
//! badly out-of-window datagram can ask for that) goes into an ordered side map instead, so a
//! hostile seq cannot make the ring allocate.

use std::collections::{BTreeMap, VecDeque};

use crate::store::SlotId;

/// Widest seq span one peer's ring covers (entries of 32 bytes: 4 MiB at most per peer).
pub(crate) const RING_SPAN: u64 = 1 << 17;

/// One persisted inbound message, or a gap marker standing for `seq..=last`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InEntry {
    /// `seq` for a message; the end of the range for a gap marker.
    pub(crate) last: u64,
    /// A gap marker, not a message.
    pub(crate) lost: bool,
    pub(crate) slot: SlotId,
    pub(crate) len: u32,
    pub(crate) crc: u32,
    /// The message's flags ([`FLAG_CALL`](crate::FLAG_CALL) or 0).
    pub(crate) flags: u8,
}

/// One peer's entries: a ring for `base .. base + ring.len()` and a side map for the rest.
#[derive(Debug, Default)]
struct PeerEntries {
    /// Seq of `ring[0]`; meaningless while the ring is empty.
    base: u64,
    /// `None` for a seq not held. Both ends are always `Some` (trimmed after every removal).
    ring: VecDeque<Option<InEntry>>,
    /// Entries whose seq did not fit in the ring's span when they were inserted.
    far: BTreeMap<u64, InEntry>,
}

impl PeerEntries {
    fn slot(&self, seq: u64) -> Option<usize> {
        let i = seq.checked_sub(self.base)?;
        (i < self.ring.len() as u64).then_some(i as usize)
    }

    fn get(&self, seq: u64) -> Option<InEntry> {
        if let Some(i) = self.slot(seq)
            && let Some(e) = self.ring[i]
        {
            return Some(e);
        }
        if self.far.is_empty() {
            None
        } else {
            self.far.get(&seq).copied()
        }
    }

    /// Inserts or replaces the entry for `seq`. Inlined (with [`InboundIndex::insert`]) into
    /// the store's persist path, so the entry is written from registers, not copied from a
    /// stack temporary just written field by field (a store-forwarding stall per message).
    #[inline(always)]
    fn insert(&mut self, seq: u64, e: InEntry) {
        if !self.far.is_empty() {
            self.far.remove(&seq);
        }
        if let Some(i) = self.slot(seq) {
            self.ring[i] = Some(e);
            return;
        }
        let len = self.ring.len() as u64;
        if len == 0 {
            self.base = seq;
            self.ring.push_back(Some(e));
        } else if seq >= self.base && seq - self.base < RING_SPAN {
            for _ in len..seq - self.base {
                self.ring.push_back(None);
            }
            self.ring.push_back(Some(e));
        } else if seq < self.base && self.base - seq + len <= RING_SPAN {
            for _ in seq + 1..self.base {
                self.ring.push_front(None);
            }
            self.ring.push_front(Some(e));
            self.base = seq;
        } else {
            self.far.insert(seq, e);
        }
    }

    fn remove(&mut self, seq: u64) -> Option<InEntry> {
        if let Some(i) = self.slot(seq)
            && let Some(e) = self.ring[i].take()
        {
            self.trim();
            return Some(e);
        }
        if self.far.is_empty() {
            None
        } else {
            self.far.remove(&seq)
        }
    }

    /// Drops empty entries from both ends, so `ring[0]` is the oldest entry held.
    fn trim(&mut self) {
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.base += 1;
        }
        while let Some(None) = self.ring.back() {
            self.ring.pop_back();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.iter().flatten().count() + self.far.len()
    }

    fn entries(&self) -> impl Iterator<Item = (u64, &InEntry)> {
        (self.base..)
            .zip(&self.ring)
            .filter_map(|(s, e)| e.as_ref().map(|e| (s, e)))
            .chain(self.far.iter().map(|(&s, e)| (s, e)))
    }

    fn remove_through(&mut self, through: u64) -> Vec<InEntry> {
        let mut out = Vec::new();
        while !self.ring.is_empty() && self.base <= through {
            out.extend(self.ring.pop_front().flatten());
            self.base += 1;
        }
        self.trim();
        let keep = match through.checked_add(1) {
            Some(next) => self.far.split_off(&next),
            None => BTreeMap::new(),
        };
        out.extend(std::mem::replace(&mut self.far, keep).into_values());
        out
    }

    fn seqs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.entries().map(|(s, _)| s).collect();
        v.sort_unstable();
        v
    }

    fn into_entries(self) -> impl Iterator<Item = InEntry> {
        self.ring
            .into_iter()
            .flatten()
            .chain(self.far.into_values())
    }
}

/// Persisted, unconsumed inbound messages of every peer.
#[derive(Debug, Default)]
pub(crate) struct InboundIndex {
    peers: rustc_hash::FxHashMap<u32, PeerEntries>,
}

impl InboundIndex {
    /// The entry for `seq` from `peer`.
    #[inline]
    pub(crate) fn get(&self, peer: u32, seq: u64) -> Option<InEntry> {
        self.peers.get(&peer)?.get(seq)
    }

    /// True if `seq` from `peer` is held.
    pub(crate) fn contains(&self, peer: u32, seq: u64) -> bool {
        self.get(peer, seq).is_some()
    }

    /// Inserts or replaces the entry for `seq` from `peer`.
    #[inline(always)]
    pub(crate) fn insert(&mut self, peer: u32, seq: u64, e: InEntry) {
        self.peers.entry(peer).or_default().insert(seq, e);
    }

    /// Removes and returns the entry for `seq` from `peer`.
    #[inline]
    pub(crate) fn remove(&mut self, peer: u32, seq: u64) -> Option<InEntry> {
        self.peers.get_mut(&peer)?.remove(seq)
    }

    /// Held seqs from `peer`, ascending.
    pub(crate) fn seqs(&self, peer: u32) -> Vec<u64> {
        self.peers
            .get(&peer)
            .map_or_else(Vec::new, PeerEntries::seqs)
    }

    /// Removes every entry of `peer` with a seq up to `through`; returns them.
    pub(crate) fn remove_through(&mut self, peer: u32, through: u64) -> Vec<InEntry> {
        self.peers
            .get_mut(&peer)
            .map_or_else(Vec::new, |p| p.remove_through(through))
    }

    /// `(count, payload bytes, oldest seq)` of the entries held for `peer`.
    pub(crate) fn summary(&self, peer: u32) -> (usize, u64, Option<u64>) {
        let Some(p) = self.peers.get(&peer) else {
            return (0, 0, None);
        };
        let (mut n, mut bytes, mut oldest) = (0, 0, None::<u64>);
        for (s, e) in p.entries() {
            n += 1;
            bytes += u64::from(e.len);
            oldest = Some(oldest.map_or(s, |o| o.min(s)));
        }
        (n, bytes, oldest)
    }

    /// Removes every entry of `peer`; returns them in no particular order.
    pub(crate) fn remove_peer(&mut self, peer: u32) -> Vec<InEntry> {
        self.peers
            .remove(&peer)
            .map_or_else(Vec::new, |p| p.into_entries().collect())
    }

    /// Number of entries held for `peer`.
    #[cfg(test)]
    fn len(&self, peer: u32) -> usize {
        self.peers.get(&peer).map_or(0, PeerEntries::len)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn entry(seq: u64) -> InEntry {
        InEntry {
            last: seq,
            lost: false,
            slot: SlotId {
                seg: 0,
                idx: seq as u32,
            },
            len: 0,
            crc: seq as u32,
            flags: 0,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(u64),
        RemoveThrough(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Mostly near seqs, some far ones on either side, so both the ring and the side map
        // (and moves between their ranges) are exercised.
        let seq = prop_oneof![
            8 => 1_000_000u64..1_000_200,
            1 => 1_000_000u64 - 2 * RING_SPAN..1_000_000 + 2 * RING_SPAN,
            1 => any::<u64>(),
        ];
        prop_oneof![
            10 => seq.clone().prop_map(Op::Insert),
            8 => seq.clone().prop_map(Op::Remove),
            1 => seq.prop_map(Op::RemoveThrough),
        ]
    }

    proptest! {
        /// Invariant: after any sequence of inserts, removes and cumulative removes, the index answers `get`,
        /// `contains`, `seqs` and `len` exactly as an ordered map given the same operations,
        /// and the ring never spans more than [`RING_SPAN`] seqs.
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut idx = InboundIndex::default();
            let mut model: BTreeMap<u64, InEntry> = BTreeMap::new();
            for o in &ops {
                match *o {
                    Op::Insert(s) => {
                        idx.insert(7, s, entry(s));
                        model.insert(s, entry(s));
                    }
                    Op::Remove(s) => {
                        let got = idx.remove(7, s).map(|e| e.crc);
                        prop_assert_eq!(got, model.remove(&s).map(|e| e.crc));
                    }
                    Op::RemoveThrough(s) => {
                        let mut got: Vec<u32> =
                            idx.remove_through(7, s).iter().map(|e| e.crc).collect();
                        got.sort_unstable();
                        let keep = s.checked_add(1).map_or_else(BTreeMap::new, |n| model.split_off(&n));
                        let mut want: Vec<u32> =
                            std::mem::replace(&mut model, keep).values().map(|e| e.crc).collect();
                        want.sort_unstable();
                        prop_assert_eq!(got, want);
                    }
                }
                if let Some(p) = idx.peers.get(&7) {
                    prop_assert!(p.ring.len() as u64 <= RING_SPAN);
                    prop_assert!(p.ring.front().is_none_or(Option::is_some));
                    prop_assert!(p.ring.back().is_none_or(Option::is_some));
                }
            }
            prop_assert_eq!(idx.seqs(7), model.keys().copied().collect::<Vec<_>>());
            prop_assert_eq!(idx.len(7), model.len());
            for &s in model.keys() {
                prop_assert!(idx.contains(7, s));
            }
            let mut all: Vec<u32> = idx.remove_peer(7).iter().map(|e| e.crc).collect();
            all.sort_unstable();
            let mut want: Vec<u32> = model.values().map(|e| e.crc).collect();
            want.sort_unstable();
            prop_assert_eq!(all, want);
        }
    }

    /// A hostile seq far from the others lands in the side map, not in a huge ring.
    #[test]
    fn far_seq_does_not_grow_the_ring() {
        let mut idx = InboundIndex::default();
        idx.insert(1, 10, entry(10));
        idx.insert(1, u64::MAX - 1, entry(5));
        idx.insert(1, 9, entry(9));
        let p = &idx.peers[&1];
        assert_eq!(p.ring.len(), 2);
        assert_eq!(p.far.len(), 1);
        assert!(idx.contains(1, u64::MAX - 1));
        assert_eq!(idx.seqs(1), vec![9, 10, u64::MAX - 1]);
    }
}
