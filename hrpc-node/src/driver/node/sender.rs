//! Sending: [`Sender`], the cloneable thread-safe handle that commits messages to the
//! node's store and wakes the poll loop; [`SendReservation`], a slot being filled in place;
//! and the node's own send API on the poll thread.
//!
//! A send returns once the message is committed to the store, never waiting for the network;
//! once the node is closed no send commits anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{Node, core_error};
use crate::driver::config::{NodeError, SendError};
use crate::driver::waker::Waker;

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) producer: hrpc_store::OutboundProducer,
    pub(super) waker: Waker,
    pub(super) closed: AtomicBool,
    pub(super) node_id: u32,
    pub(super) max_unacked: hrpc_store::SendWindow,
}

/// A cloneable, `Send + Sync` handle that commits messages to the node's store from any
/// thread and wakes the poll loop. Also what a [`Node::poll`] handler sends replies with.
///
/// A send returns once the message is committed to the store (it survives this process being
/// killed from then on; in [`Durability::Sync`](hrpc_store::Durability::Sync) mode, an OS
/// crash after the node's next poll). It never waits for the network.
///
/// Worker threads send while one thread polls:
///
/// ```
/// use std::time::{Duration, Instant};
/// use hrpc_node::NodeConfig;
///
/// let dir = tempfile::tempdir()?;
/// let mut server = NodeConfig::new(dir.path().join("server"), 1).open()?;
/// let mut client = NodeConfig::new(dir.path().join("client"), 2)
///     .peer(1, server.local_addr())
///     .open()?;
///
/// let workers: Vec<_> = (0..3)
///     .map(|i| {
///         let sender = client.sender();
///         std::thread::spawn(move || sender.send(1, format!("job {i}").as_bytes()))
///     })
///     .collect();
/// for w in workers {
///     w.join().expect("worker panicked")?;
/// }
///
/// let mut got = Vec::new();
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while got.len() < 3 && Instant::now() < deadline {
///     client.poll(&mut |_, _| {})?;
///     server.poll(&mut |_, d| got.push(String::from_utf8_lossy(d.payload).into_owned()))?;
///     server.wait(Some(Duration::from_millis(1)))?;
/// }
/// got.sort(); // in commit order, whichever worker committed first
/// assert_eq!(got, ["job 0", "job 1", "job 2"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sender {
    pub(super) shared: Arc<Shared>,
    /// Whether sends must wake the poll thread (false for the handle the poll thread itself
    /// hands to handlers: it transmits right after delivering).
    pub(super) wake: bool,
}

impl Sender {
    /// Commits a copy of `payload` for `peer`; returns its sequence number.
    pub fn send(&self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        self.send_with(peer, payload.len(), |buf| buf.copy_from_slice(payload))
    }

    /// Zero-copy send: reserves `len` bytes in the store, lets `fill` write the message in
    /// place, then commits it. If `fill` panics nothing is committed (the slot is released).
    ///
    /// A send racing [`Node::close`] (or the node's drop) either committed before the close
    /// (its message is in the store) or returns [`SendError::Closed`] with nothing committed,
    /// even if `fill` was already running: the store refuses the commit. While such a `fill`
    /// runs, the closed node's store stays locked (a new open of the directory gets
    /// [`NodeError::StoreLocked`]), because the slot being filled is in its files.
    /// [`NodeConfig::max_unacked_per_peer`](crate::driver::NodeConfig::max_unacked_per_peer) is
    /// checked and counted with the reservation, under the store lock, so concurrent senders
    /// never exceed it.
    pub fn send_with(
        &self,
        peer: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, SendError> {
        let sh = self.check_send(peer, len)?;
        let mut r = sh.producer.reserve_within(peer, len, sh.max_unacked)?;
        fill(r.payload_mut());
        let seq = r.commit()?;
        self.wake_poll();
        Ok(seq)
    }

    /// Batch zero-copy send: commits up to `count` messages of `len` bytes to `peer`, message
    /// `i` (from 0) written in place by `fill(i, buf)`. The same checks and guarantees as
    /// [`Sender::send_with`] for each message, at a fraction of the cost: the store lock is
    /// taken twice per [`hrpc_store::MAX_BATCH`] messages instead of twice per message, and
    /// the poll loop is woken once. Stops short (fewer seqs returned) where
    /// [`NodeConfig::max_unacked_per_peer`](crate::driver::NodeConfig::max_unacked_per_peer)
    /// or the store's capacity is reached; an error (backpressure included) means nothing was
    /// committed. Returns the seqs committed, `first..end`, in order. If `fill` panics, the
    /// messages not yet committed are not, and their slots are released.
    pub fn send_batch_with(
        &self,
        peer: u32,
        len: usize,
        count: usize,
        fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<std::ops::Range<u64>, SendError> {
        let sh = self.check_send(peer, len)?;
        let seqs = sh
            .producer
            .send_batch_within(peer, len, count, sh.max_unacked, fill)?;
        if !seqs.is_empty() {
            self.wake_poll();
        }
        Ok(seqs)
    }

    /// After a commit: wakes the poll loop, unless this is the poll thread's own handle.
    pub(super) fn wake_poll(&self) {
        if self.wake
            && let Err(e) = self.shared.waker.wake()
        {
            // The message is committed; the poll loop will still find it on its next timeout.
            tracing::debug!(error = %e, "wake-up write failed");
        }
    }

    /// Owned zero-copy send: reserves `len` bytes in the store for `peer` and returns them as
    /// a [`SendReservation`] that borrows nothing, so the caller can keep it (in a struct,
    /// across calls, on another thread) while it fills the payload, then
    /// [`commit`](SendReservation::commit) it or drop it to give the slot back. The same
    /// checks as [`Sender::send_with`]; the reservation counts toward
    /// [`NodeConfig::max_unacked_per_peer`](crate::driver::NodeConfig::max_unacked_per_peer) from
    /// now on. Committing through a handle from [`Node::sender`] wakes the poll loop, as a
    /// send would.
    pub fn reserve(&self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        let sh = self.check_send(peer, len)?;
        let slot = sh
            .producer
            .reserve_owned_within(peer, len, sh.max_unacked)?;
        Ok(SendReservation {
            slot,
            sender: self.clone(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.shared.node_id
    }

    /// What every send checks before it reserves: the node is open, the peer is another
    /// node, the message is not over the wire's limit.
    pub(super) fn check_send(&self, peer: u32, len: usize) -> Result<&Shared, SendError> {
        let sh = &*self.shared;
        if sh.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if peer == 0 || peer == sh.node_id {
            return Err(SendError::InvalidPeer(peer));
        }
        if len > hrpc_wire::MAX_MESSAGE_LEN {
            return Err(SendError::TooLarge {
                len,
                max: hrpc_wire::MAX_MESSAGE_LEN,
            });
        }
        Ok(sh)
    }
}

/// A message slot reserved in the store and being filled in place: the owned form of
/// [`Sender::send_with`], from [`Sender::reserve`] or [`Node::reserve`].
///
/// Nothing is in the store's sequence until [`SendReservation::commit`] (or
/// [`Node::commit`]) returns `Ok(seq)`: the message gets its seq then, and from then on it is
/// as safe as any sent message. Dropping the reservation, or the process dying while it is
/// held, gives the slot back and sends nothing. A close of the node refuses the commit
/// ([`SendError::Closed`]), and while a reservation is held after a close the store stays
/// locked (see [`Node::close`]).
///
/// ```
/// use hrpc_node::NodeConfig;
///
/// let dir = tempfile::tempdir()?;
/// let mut node = NodeConfig::new(dir.path().join("node1"), 1).open()?;
///
/// // Reserve room in the store, fill it in place (here on another thread), then commit.
/// let mut r = node.sender().reserve(2, 8)?;
/// let r = std::thread::spawn(move || {
///     r.payload_mut().copy_from_slice(&42u64.to_le_bytes());
///     r
/// })
/// .join()
/// .expect("filler panicked");
/// assert_eq!((r.peer(), r.len()), (2, 8));
/// assert_eq!(node.commit(r)?, 1);
///
/// // A reservation dropped uncommitted sends nothing: the next message is seq 2.
/// drop(node.reserve(2, 1024)?);
/// assert_eq!(node.send(2, b"next")?, 2);
/// assert_eq!(node.unacked(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SendReservation {
    slot: hrpc_store::OutboundReservation<'static>,
    sender: Sender,
}

impl SendReservation {
    /// The payload area, exactly the reserved length, inside the store's mapped file.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.slot.payload_mut()
    }

    /// The peer the message goes to.
    pub fn peer(&self) -> u32 {
        self.slot.peer()
    }

    /// The reserved length in bytes.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }

    /// Commits the message; returns its seq. Wakes the poll loop if the reservation came from
    /// a [`Node::sender`] handle. From the poll thread outside a handler, prefer
    /// [`Node::commit`], which also tells the node it has work (so [`Node::wait`] does not
    /// sleep on it); inside a [`Node::poll`] handler this is enough, as for a handler's sends.
    pub fn commit(self) -> Result<u64, SendError> {
        let seq = self.slot.commit()?;
        self.sender.wake_poll();
        Ok(seq)
    }
}

impl Node {
    /// A thread-safe send handle; sends through it wake this node's poll loop.
    pub fn sender(&self) -> Sender {
        Sender {
            shared: self.shared.clone(),
            wake: true,
        }
    }

    /// Commits a copy of `payload` for `peer` (see [`Sender::send`]). It is transmitted by the
    /// next [`Node::poll`].
    pub fn send(&mut self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        let seq = self.local_sender.send(peer, payload)?;
        self.dirty = true;
        Ok(seq)
    }

    /// Zero-copy send from the poll thread (see [`Sender::send_with`]).
    pub fn send_with(
        &mut self,
        peer: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, SendError> {
        // Only a committed message is work for the next poll: a refused send
        // (backpressure) must not make `wait` return at once.
        let seq = self.local_sender.send_with(peer, len, fill)?;
        self.dirty = true;
        Ok(seq)
    }

    /// Batch zero-copy send from the poll thread (see [`Sender::send_batch_with`]); the
    /// messages are transmitted by the next [`Node::poll`].
    pub fn send_batch_with(
        &mut self,
        peer: u32,
        len: usize,
        count: usize,
        fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<std::ops::Range<u64>, SendError> {
        let seqs = self.local_sender.send_batch_with(peer, len, count, fill)?;
        if !seqs.is_empty() {
            self.dirty = true;
        }
        Ok(seqs)
    }

    /// Owned zero-copy send from the poll thread (see [`Sender::reserve`]): the reservation
    /// can be kept across calls, even across [`Node::poll`]. Commit it with [`Node::commit`]
    /// (or, inside a poll handler, [`SendReservation::commit`]).
    pub fn reserve(&mut self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        self.local_sender.reserve(peer, len)
    }

    /// Commits a reservation (from this node or any of its senders) and marks the node as
    /// having work, so the next [`Node::wait`] returns at once and [`Node::poll`] transmits
    /// the message. Returns its seq.
    pub fn commit(&mut self, reservation: SendReservation) -> Result<u64, SendError> {
        let seq = reservation.commit()?;
        self.dirty = true;
        Ok(seq)
    }

    /// Gives up on the messages to `peer` that are not yet acknowledged, up to seq `through`:
    /// they are freed from the store, and the peer is told they will never come (it reports
    /// [`Event::Lost`](crate::Event::Lost) for those it had not received, then goes on with
    /// the later ones). Returns the range given up, `None` if nothing was pending at or below
    /// `through`. For a peer that is gone for good, or messages that lost their meaning.
    pub fn discard(
        &mut self,
        peer: u32,
        through: u64,
    ) -> Result<Option<std::ops::RangeInclusive<u64>>, NodeError> {
        self.dirty = true;
        self.core
            .discard(peer, through, Instant::now())
            .map_err(core_error)
    }
}
