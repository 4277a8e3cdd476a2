//! The one door through which a peer's messages become persisted.
//!
//! Each call here writes the store's inbound record and then updates the core's
//! [`RecvState`](super::recv::RecvState) for that peer, in the same function: the core's view
//! of what it holds from a peer (`cum`, the seqs past the gap, where a fresh stream starts)
//! is the store's, learned at the moment the store took it. Nothing else in the core writes
//! inbound records or moves that view forward (the `node_datagrams` fuzz target and
//! `tests/receive_state.rs` check the two agree). On reopen the view is rebuilt from the
//! store (`Core::peer_entry`); a peer's reset clears both in one function too
//! (`Core::apply_reset`).

use hrpc_store::{InboundSlot, StoreError};

use super::Core;

/// What a peer's stream gains.
#[derive(Debug)]
pub(super) enum Persist<'a> {
    /// A whole message from one DATA frame; the store checks `payload` against `crc` before
    /// it takes a slot.
    Whole {
        seq: u64,
        payload: &'a [u8],
        crc: u32,
        /// DATA flags.
        flags: u8,
    },
    /// A message assembled from fragments in `slot`, now complete.
    Assembled { seq: u64, slot: InboundSlot },
    /// `first..=last` (from `cum + 1`, none of it held) will never come: a gap marker.
    Lost { first: u64, last: u64 },
    /// A fresh stream starts after `through`: the sender holds nothing at or below it.
    StartAfter { through: u64 },
}

/// The store flags of a message that arrived with DATA flags `flags`.
pub(super) fn store_flags(flags: u8) -> u8 {
    if flags & hrpc_wire::DATA_FLAG_CALL != 0 {
        hrpc_store::FLAG_CALL
    } else {
        0
    }
}

impl Core {
    /// Persists `what` for `peer`, then records it in the peer's receive state. On a store
    /// error nothing changes on either side.
    pub(super) fn persist(&mut self, peer: u32, what: Persist<'_>) -> Result<(), StoreError> {
        let store = &mut self.store;
        let (first, last) = match what {
            Persist::Whole {
                seq,
                payload,
                crc,
                flags,
            } => {
                store.put_inbound_checked(peer, seq, payload, crc, store_flags(flags))?;
                (seq, seq)
            }
            Persist::Assembled { seq, slot } => {
                store.commit_inbound(slot)?;
                (seq, seq)
            }
            Persist::Lost { first, last } => {
                store.put_inbound_lost(peer, first, last)?;
                (first, last)
            }
            Persist::StartAfter { through } => {
                store.skip_inbound_through(peer, through)?;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.recv.skip_through(through);
                }
                return Ok(());
            }
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.recv.insert_range(first, last);
        }
        Ok(())
    }
}
