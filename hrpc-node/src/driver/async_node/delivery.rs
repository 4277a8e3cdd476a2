//! [`AsyncDelivery`]: a message handed out by [`AsyncNode::recv`](super::AsyncNode::recv),
//! owned, consumed when committed; and the per-peer generations that void what was handed
//! before a delivery was dropped without commit.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

#[cfg(doc)]
use super::AsyncNode;
use super::driver::Control;
use crate::driver::config::NodeError;

/// Per peer, the generation of the deliveries [`AsyncNode::recv`] hands out: a drop without
/// commit starts a new one, and deliveries of an older one are void.
pub(super) type Generations = Arc<Mutex<FxHashMap<u32, u64>>>;

pub(super) fn generation_of(gens: &Generations, peer: u32) -> u64 {
    gens.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&peer)
        .copied()
        .unwrap_or(0)
}

/// A message from [`AsyncNode::recv`], owned. It stays in the store until
/// [`AsyncDelivery::commit`]; dropped without commit, it comes again (see the
/// [module docs](super)).
pub struct AsyncDelivery {
    pub(super) peer: u32,
    pub(super) seq: u64,
    pub(super) payload: Vec<u8>,
    pub(super) generation: u64,
    /// Committed, or void: nothing to tell the driver on drop.
    pub(super) done: bool,
    pub(super) control: mpsc::UnboundedSender<Control>,
    pub(super) gens: Generations,
}

impl fmt::Debug for AsyncDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncDelivery")
            .field("peer", &self.peer)
            .field("seq", &self.seq)
            .field("len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl AsyncDelivery {
    /// Sending node id.
    pub fn peer(&self) -> u32 {
        self.peer
    }

    /// Its per-peer sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The message.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Marks the message done: the driver task consumes it in the store (in order per peer,
    /// once every earlier message from the peer is committed) before it next polls, and at
    /// the latest before the node closes; from then on it is never delivered again. A crash
    /// before that delivers it again after the restart. [`NodeError::Closed`] if the node is
    /// closing or its driver task has stopped (the message stays unconsumed).
    pub fn commit(mut self) -> Result<(), NodeError> {
        self.done = true;
        self.control
            .send(Control::Commit {
                peer: self.peer,
                seq: self.seq,
                generation: self.generation,
            })
            .map_err(|_| NodeError::Closed)
    }
}

impl Drop for AsyncDelivery {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut gens = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        let current = gens.entry(self.peer).or_insert(0);
        // Only the first drop of a generation starts a new one.
        if *current == self.generation {
            *current += 1;
            // The driver may be gone: then the store redelivers after a reopen.
            let _ = self.control.send(Control::Release {
                peer: self.peer,
                generation: *current,
            });
        }
    }
}
