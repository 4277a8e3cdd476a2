//! [`AsyncDelivery`]: a message handed out by [`AsyncNode::recv`](super::AsyncNode::recv),
//! owned, consumed when committed; and the per-peer generations that void what was handed
//! before a delivery was dropped without commit.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};

#[cfg(doc)]
use super::AsyncNode;
#[cfg(doc)]
use super::AsyncSender;
use super::driver::Control;
use crate::driver::config::{NodeError, SendError};
use crate::proto::MessageKind;

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
    pub(super) kind: MessageKind,
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
            .field("kind", &self.kind)
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

    /// The message (for a request or a response, without the call envelope; empty for a
    /// timeout).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// A plain message, a request, a response, or a call's timeout (whose `seq` is 0).
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Answers this request ([`MessageKind::Request`]) with `payload` and commits it: the
    /// reply is committed together with the request's consumption
    /// ([`Sender::reply`](crate::Sender::reply)), so once this returns `Ok` the request is never
    /// handed again, whatever happens to the process, and exactly one reply goes out. Returns
    /// the reply's seq.
    ///
    /// Replies to one peer are committed in the order its messages were delivered: this waits
    /// until every earlier delivery from the peer is committed (or answered), so requests may
    /// be handled concurrently and answered in any order, each reply leaving once its
    /// predecessors are done. It also waits out backpressure. [`SendError::NotARequest`] for
    /// another kind of delivery, and for a request that is void (an earlier delivery from the
    /// peer was dropped without commit: it comes again, with this one); on any error the
    /// request stays unconsumed and comes again.
    pub async fn reply(mut self, payload: &[u8]) -> Result<u64, SendError> {
        let MessageKind::Request { call } = self.kind else {
            // Dropped uncommitted: it comes again.
            return Err(SendError::NotARequest {
                peer: self.peer,
                seq: self.seq,
            });
        };
        let (answer, rx) = oneshot::channel();
        self.control
            .send(Control::Reply {
                peer: self.peer,
                seq: self.seq,
                generation: self.generation,
                call,
                payload: payload.to_vec(),
                answer,
            })
            .map_err(|_| SendError::Closed)?;
        let seq = rx.await.map_err(|_| SendError::Closed)??;
        // Committed and consumed by the driver. On an error the drop hands the request (and
        // what followed it from the peer) again.
        self.done = true;
        Ok(seq)
    }

    /// Marks the message done: the driver task consumes it in the store (in order per peer,
    /// once every earlier message from the peer is committed) before it next polls, and at
    /// the latest before the node closes; from then on it is never delivered again. A crash
    /// before that delivers it again after the restart. [`NodeError::Closed`] if the node is
    /// closing or its driver task has stopped (the message stays unconsumed).
    ///
    /// For a call's timeout ([`MessageKind::CallTimedOut`]), commit ends the call: its timeout
    /// is not handed again, even after a restart.
    pub fn commit(mut self) -> Result<(), NodeError> {
        self.done = true;
        let c = match self.kind {
            MessageKind::CallTimedOut { call } => Control::FinishCall(call),
            _ => Control::Commit {
                peer: self.peer,
                seq: self.seq,
                generation: self.generation,
            },
        };
        self.control.send(c).map_err(|_| NodeError::Closed)
    }
}

impl Drop for AsyncDelivery {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let MessageKind::CallTimedOut { call } = self.kind {
            // Handed again by the driver (or, if it is gone, after a reopen).
            let _ = self.control.send(Control::RehandCall(call));
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
