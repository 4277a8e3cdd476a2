//! [`AsyncSender`]: the cloneable send handle whose sends wait out backpressure.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{Notify, oneshot};

use super::AsyncDelivery;

#[cfg(doc)]
use super::AsyncNode;
#[cfg(doc)]
use crate::driver::config::NodeConfig;
use crate::driver::config::SendError;
use crate::driver::node::CallError;
use crate::driver::node::{SendReservation, Sender};
use crate::proto::{CallId, MessageKind};

/// A cloneable send handle of an [`AsyncNode`]: [`Sender`] with a send that waits out
/// backpressure.
///
/// A call awaited while the callee answers it, then backpressure: `try_send` reports it at
/// once, `send` waits it out:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use std::time::Duration;
/// use hrpc_node::{MessageKind, NodeConfig};
///
/// let dir = tempfile::tempdir()?;
/// let mut server = NodeConfig::new(dir.path().join("server"), 1).open_async()?;
/// let client = NodeConfig::new(dir.path().join("client"), 2)
///     .peer(1, server.local_addr())
///     .max_unacked_per_peer(1)
///     .open_async()?;
/// let sender = client.sender();
///
/// let serve_one = async {
///     let request = server.recv().await.ok_or("server stopped")?;
///     assert!(matches!(request.kind(), MessageKind::Request { .. }));
///     request.reply(b"4").await?; // also consumes the request
///     Ok::<_, Box<dyn std::error::Error>>(())
/// };
/// let call = sender.call(1, b"2+2", Duration::from_secs(5));
/// let (response, served) =
///     tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(call, serve_one) })
///         .await?;
/// served?;
/// let response = response?;
/// assert_eq!(response.payload(), b"4");
/// response.commit()?;
///
/// // Node 3 never acknowledges, and one unacknowledged message is the limit here.
/// sender.send(3, b"first").await?;
/// assert!(sender.try_send(3, b"second").unwrap_err().is_backpressure());
/// let waited = tokio::time::timeout(Duration::from_millis(20), sender.send(3, b"second")).await;
/// assert!(waited.is_err(), "still waiting for an acknowledgement");
///
/// server.close(Duration::from_millis(10)).await?;
/// client.close(Duration::from_millis(10)).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AsyncSender {
    pub(super) inner: Sender,
    /// Signalled by the driver task after a poll that may have freed room (it received
    /// datagrams, so acknowledgements, or consumed messages), and when it stops.
    pub(super) room: Arc<Notify>,
    /// Calls awaited by [`AsyncSender::call`], by id: the driver hands their outcome here.
    pub(super) waiters: Waiters,
}

/// Takes a call's waiter back out when dropped armed: its request was never committed.
struct Unregister<'a> {
    sender: &'a AsyncSender,
    id: Option<u64>,
}

impl Unregister<'_> {
    /// The request is committed: the waiter stays, for the driver to hand the outcome to.
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.sender.waiters().remove(&id);
        }
    }
}

/// Who awaits the outcome of which call.
pub(super) type Waiters = Arc<Mutex<FxHashMap<u64, oneshot::Sender<AsyncDelivery>>>>;

impl AsyncSender {
    /// Commits a copy of `payload` for `peer` and returns its seq, as [`Sender::send`]; on
    /// backpressure ([`SendError::is_backpressure`]) waits until the driver task has received
    /// acknowledgements or freed store space, and tries again. Other errors (and
    /// [`SendError::Closed`] once the node is closed) return at once. A peer that never
    /// acknowledges makes it wait for ever: bound it with `tokio::time::timeout` if needed.
    /// Cancel-safe: a send dropped while waiting committed nothing.
    pub async fn send(&self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        self.until_room(|| self.inner.send(peer, payload)).await
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
        self.until_room(|| self.inner.reserve(peer, len)).await
    }

    /// Reserves `len` bytes for `peer` without waiting ([`Sender::reserve`]): backpressure is
    /// returned as an error.
    pub fn try_reserve(&self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        self.inner.reserve(peer, len)
    }

    /// Calls `peer` and waits for the outcome: the response, as an [`AsyncDelivery`] of kind
    /// [`MessageKind::Response`] to commit like any delivery (dropped uncommitted, it comes
    /// again from [`AsyncNode::recv`]), or [`CallError::TimedOut`] once `timeout` passed
    /// without one. The request is committed as [`Sender::call`] does, waiting out
    /// backpressure first as [`AsyncSender::send`] does.
    ///
    /// The call is persistent, the waiting is not: if this future is dropped, or the process
    /// dies, the outcome is handed by [`AsyncNode::recv`] instead (after the restart, for a
    /// call made before it), naming the call.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(sender: hrpc_node::AsyncSender) -> Result<(), Box<dyn std::error::Error>> {
    /// let response = sender.call(2, b"score?", Duration::from_secs(5)).await?;
    /// println!("peer 2 says {:?}", response.payload());
    /// response.commit()?;
    /// # Ok(()) }
    /// ```
    pub async fn call(
        &self,
        peer: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<AsyncDelivery, CallError> {
        let id = self.inner.new_call_id();
        let (tx, rx) = oneshot::channel();
        // Registered before the request can leave, so the response cannot come first; taken
        // back if the commit fails or this future is dropped before it is made.
        self.waiters().insert(id.0, tx);
        let unregister = Unregister {
            sender: self,
            id: Some(id.0),
        };
        self.until_room(|| self.inner.call_as(id, peer, payload, timeout))
            .await?;
        unregister.disarm();
        let outcome = rx.await.map_err(|_| CallError::Closed(id))?;
        match outcome.kind {
            MessageKind::CallTimedOut { call } => {
                // Taken: the call is over. If the node is closing the timeout comes again
                // after the reopen.
                let _ = outcome.commit();
                Err(CallError::TimedOut(call))
            }
            _ => Ok(outcome),
        }
    }

    /// Calls `peer` without waiting for the outcome, which [`AsyncNode::recv`] hands out (a
    /// delivery of kind [`MessageKind::Response`] or [`MessageKind::CallTimedOut`] naming the
    /// returned id). Waits out backpressure as [`AsyncSender::send`] does.
    pub async fn start_call(
        &self,
        peer: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<CallId, SendError> {
        let id = self.inner.new_call_id();
        self.until_room(|| self.inner.call_as(id, peer, payload, timeout))
            .await?;
        Ok(id)
    }

    /// Runs `attempt` until it returns anything but backpressure
    /// ([`SendError::is_backpressure`]), waiting between tries until the driver task has seen
    /// acknowledgements or freed store space. Cancel-safe if `attempt` commits nothing when
    /// it fails.
    async fn until_room<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        loop {
            let mut room = std::pin::pin!(self.room.notified());
            // Registered before trying, so a signal between the try and the wait is not lost.
            room.as_mut().enable();
            match attempt() {
                Err(e) if e.is_backpressure() => room.await,
                r => return r,
            }
        }
    }

    /// Who awaits the outcome of `kind`, if it is a call's outcome someone awaits (taken out).
    pub(super) fn waiter(&self, kind: MessageKind) -> Option<oneshot::Sender<AsyncDelivery>> {
        match kind {
            MessageKind::Response { call } | MessageKind::CallTimedOut { call } => {
                self.waiters().remove(&call.0)
            }
            _ => None,
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, oneshot::Sender<AsyncDelivery>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
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
