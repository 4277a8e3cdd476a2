//! Peer records: the per-peer cursors (acked, consumed, next-seq floor, epoch, incarnations)
//! kept in `COPIES` checksummed copies in the meta file. [`Inner::write_record`] is the one
//! place a record is written: always to a copy that is neither the latest nor the durable
//! one, so a torn write falls back to the latest value and a power loss to the synced one.
//! The next-seq floor (I6) is captured here, by [`Inner::record_floors`].

use super::config::Durability;
use super::{Inner, PeerState, Result, Shared, write_words};
use crate::error::StoreError;
use crate::failpoint;
use crate::layout::{COPIES, ENTRY_LEN, REC_INBOUND_STARTED, RECORD_LEN, Record, SUPER_LEN};
use std::collections::VecDeque;

impl Inner {
    /// Index of `peer`'s state, creating a peer table entry if needed.
    pub(super) fn peer_idx(&mut self, sh: &Shared, peer: u32) -> Result<usize> {
        if let Some(&i) = self.peers.get(&peer) {
            return Ok(i as usize);
        }
        let Some(entry) = self.free_entries.pop() else {
            return Err(StoreError::TooManyPeers { max: sh.max_peers });
        };
        let i = self.states.len();
        let rec = Record {
            peer,
            next_out: 1,
            ..Record::default()
        };
        self.states.push(new_state(rec, entry, 0));
        self.peers.insert(peer, i as u32);
        self.write_record(sh, i);
        Ok(i)
    }

    /// Writes `states[i].rec` to a copy that is neither the latest nor the durable one, so a torn
    /// write (process death) falls back to the latest value and a power loss to the synced one.
    pub(super) fn write_record(&mut self, sh: &Shared, i: usize) {
        let st = &mut self.states[i];
        let target = (0..COPIES as u8)
            .find(|&c| c != st.latest && c != st.durable)
            .unwrap_or((st.latest + 1) % COPIES as u8);
        st.rec.generation += 1;
        let words = st.rec.encode_words();
        let off = SUPER_LEN + st.entry as usize * ENTRY_LEN + target as usize * RECORD_LEN;
        if failpoint::fires("record.torn") {
            write_words(&self.meta, off, &words[..RECORD_LEN / 16]);
            failpoint::die("record.torn");
        }
        write_words(&self.meta, off, &words);
        st.latest = target;
        if sh.durability == Durability::Process {
            st.durable = target;
        } else if !st.dirty {
            st.dirty = true;
            self.dirty_entries.push(i as u32);
        }
    }

    /// Records (once per inbound incarnation) that the peer's inbound stream has started.
    pub(super) fn mark_inbound_started(&mut self, sh: &Shared, pidx: usize) {
        if self.states[pidx].rec.flags & REC_INBOUND_STARTED == 0 {
            self.states[pidx].rec.flags |= REC_INBOUND_STARTED;
            self.write_record(sh, pidx);
        }
    }

    /// Captures the next seq of every peer committed to since the last call,
    /// appending `(peer index, next seq)` to `out`, and (if `write`) records
    /// it as the peer's next-seq floor.
    pub(super) fn record_floors(&mut self, sh: &Shared, out: &mut Vec<(u32, u64)>, write: bool) {
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
}

pub(super) fn new_state(rec: Record, entry: u32, copy: u8) -> PeerState {
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
