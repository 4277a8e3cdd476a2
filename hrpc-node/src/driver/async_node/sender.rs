//! [`AsyncSender`]: the cloneable send handle whose sends wait out backpressure.

use std::sync::Arc;

use tokio::sync::Notify;

#[cfg(doc)]
use super::AsyncNode;
#[cfg(doc)]
use crate::driver::config::NodeConfig;
use crate::driver::config::SendError;
use crate::driver::node::{SendReservation, Sender};

/// A cloneable send handle of an [`AsyncNode`]: [`Sender`] with a send that waits out
/// backpressure.
#[derive(Debug, Clone)]
pub struct AsyncSender {
    pub(super) inner: Sender,
    /// Signalled by the driver task after a poll that may have freed room (it received
    /// datagrams, so acknowledgements, or consumed messages), and when it stops.
    pub(super) room: Arc<Notify>,
}

impl AsyncSender {
    /// Commits a copy of `payload` for `peer` and returns its seq, as [`Sender::send`]; on
    /// backpressure ([`SendError::is_backpressure`]) waits until the driver task has received
    /// acknowledgements or freed store space, and tries again. Other errors (and
    /// [`SendError::Closed`] once the node is closed) return at once. A peer that never
    /// acknowledges makes it wait for ever: bound it with `tokio::time::timeout` if needed.
    /// Cancel-safe: a send dropped while waiting committed nothing.
    pub async fn send(&self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        loop {
            let mut room = std::pin::pin!(self.room.notified());
            // Registered before trying, so a signal between the try and the wait is not lost.
            room.as_mut().enable();
            match self.inner.send(peer, payload) {
                Err(e) if e.is_backpressure() => room.await,
                r => return r,
            }
        }
    }

    /// Commits a copy of `payload` for `peer` without waiting: backpressure is returned as an
    /// error ([`Sender::send`]).
    pub fn try_send(&self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        self.inner.send(peer, payload)
    }

    /// Zero-copy send: reserves `len` bytes in the store for `peer` ([`Sender::reserve`]),
    /// waiting out backpressure as [`AsyncSender::send`] does (same errors, same caveat about a
    /// peer that never acknowledges). Fill [`SendReservation::payload_mut`] in place, then
    /// [`SendReservation::commit`]: the commit wakes the driver task, which transmits at once,
    /// as after a send. Dropping the reservation sends nothing and gives the slot back (a
    /// sender waiting for room then sees it once the driver next receives or consumes
    /// something). The reservation counts toward
    /// [`NodeConfig::max_unacked_per_peer`] from now on. Cancel-safe: a reserve dropped while
    /// waiting reserved nothing.
    ///
    /// ```no_run
    /// # async fn run(sender: hrpc_node::AsyncSender) -> Result<(), hrpc_node::SendError> {
    /// let mut r = sender.reserve(2, 5).await?;
    /// r.payload_mut().copy_from_slice(b"hello");
    /// let seq = r.commit()?;
    /// # let _ = seq; Ok(()) }
    /// ```
    pub async fn reserve(&self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        loop {
            let mut room = std::pin::pin!(self.room.notified());
            // Registered before trying, as in `send`.
            room.as_mut().enable();
            match self.inner.reserve(peer, len) {
                Err(e) if e.is_backpressure() => room.await,
                r => return r,
            }
        }
    }

    /// Reserves `len` bytes for `peer` without waiting ([`Sender::reserve`]): backpressure is
    /// returned as an error.
    pub fn try_reserve(&self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        self.inner.reserve(peer, len)
    }

    /// The synchronous handle underneath (zero-copy [`Sender::send_with`] and
    /// [`Sender::reserve`]).
    pub fn sync_sender(&self) -> &Sender {
        &self.inner
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.inner.node_id()
    }
}
