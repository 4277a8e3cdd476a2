//! Peer-level operations: listing peers, the peer's session epoch, and
//! [`Store::reset_peer`] when a peer comes back with a new epoch (one record write, so the
//! reset is atomic with respect to crashes).

use super::alloc::free_or_defer;
use super::report::{OutboundOnReset, ResetReport};
use super::{Result, Store};
use crate::failpoint;
use crate::layout::REC_INBOUND_STARTED;
use crate::sync::lock;

impl Store {
    /// Peers that have a record (any message or cursor ever stored), sorted.
    pub fn peers(&self) -> Vec<u32> {
        let inner = lock(&self.shared.inner);
        let mut v: Vec<u32> = inner.states.iter().map(|s| s.peer).collect();
        v.sort_unstable();
        v
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

    /// Number of peers with a record (cheap; no allocation).
    pub fn peer_count(&self) -> usize {
        lock(&self.shared.inner).states.len()
    }

    /// Size of the peer table: the most peers this store can hold a record for.
    pub fn max_peers(&self) -> u32 {
        self.shared.max_peers
    }
}
