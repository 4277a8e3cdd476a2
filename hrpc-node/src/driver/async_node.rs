//! An async handle for tokio programs (feature `tokio`): a thin layer over the synchronous
//! [`Node`].
//!
//! [`AsyncNode::open`] opens the node and spawns one driver task on the current tokio runtime
//! that owns it. The task registers the node's epoll fd ([`Node`]'s [`AsFd`](std::os::fd::AsFd))
//! with [`AsyncFd`], and loops: poll the node, then await the fd's readability (socket input,
//! a send's wake-up), the node's next timer ([`Node::poll_timeout`]), a commit, room for
//! deliveries, or a close. It never busy-polls: an idle node costs no CPU.
//!
//! - [`AsyncSender::send`] commits a message like [`Sender::send`]; on backpressure
//!   ([`SendError::is_backpressure`]) it waits until the driver has seen acknowledgements (or
//!   commits that free the store) and tries again. [`AsyncSender::try_send`] returns
//!   backpressure at once.
//! - [`AsyncNode::recv`] hands out owned [`AsyncDelivery`]s, in order per peer. A delivery is
//!   consumed in the store only when the application calls [`AsyncDelivery::commit`]; the
//!   driver hands messages with [`Node::poll_deferred`] and consumes them with
//!   [`Node::consume`], in order per peer.
//! - [`AsyncNode::next_event`] hands out the node's [`Event`]s (peer state, address changes,
//!   resets, messages reported lost) in order.
//! - [`AsyncNode::stats`], [`AsyncNode::peer_info`], [`AsyncNode::peer_state`] and
//!   [`AsyncNode::unacked`] (and [`AsyncNode::inspect`] for any other read of the [`Node`])
//!   ask the driver task, which answers between two polls: the figures are the node's own,
//!   current as of the driver's latest poll. Nothing is published while nobody asks.
//! - [`AsyncSender::reserve`] is the zero-copy send ([`Sender::reserve`]) that waits out
//!   backpressure like [`AsyncSender::send`].
//!
//! # Delivery contract
//!
//! Exactly once in order per peer, as for [`Node::poll`], with *commit* in place of the
//! handler's return:
//!
//! - A delivery the driver has not consumed when the process dies (or the node is closed) is
//!   delivered again after the store is reopened, with every later unconsumed one from that
//!   peer. The driver consumes a commit before its next poll, and every commit that returned
//!   `Ok` before the node closes; a process that dies between a commit and its consumption
//!   gets that message again, as a [`Node::poll`] handler that dies before returning does.
//! - A delivery dropped without commit comes again from [`AsyncNode::recv`], in this process:
//!   the peer's unconsumed messages are handed again from that one. Later deliveries from that
//!   peer received before the drop are void (their commit does nothing); they come again too.
//! - Commits may be made in any order; a message is consumed once it and every earlier one
//!   from the same peer are committed.
//!
//! At most [`DELIVERY_QUEUE`] deliveries wait in the node's queue; past that, and within the
//! node's receive window ([`NodeConfig::recv_window`]), messages wait in the store and
//! the peer is slowed down.
//!
//! ```no_run
//! use hrpc_node::NodeConfig;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut node = NodeConfig::new("./store.a", 1).open_async()?;
//! let sender = node.sender();
//! tokio::spawn(async move { sender.send(2, b"hello").await });
//! while let Some(d) = node.recv().await {
//!     println!("{} #{}: {} bytes", d.peer(), d.seq(), d.payload().len());
//!     d.commit()?;
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::{NodeConfig, NodeError, SendError};
use super::node::{Node, NodeStats, SendReservation, Sender};
use crate::proto::{Event, PeerInfo, PeerState};

/// The most events waiting between the driver task and [`AsyncNode::next_event`].
pub const EVENT_QUEUE: usize = 1024;

/// How many deliveries wait at most between the driver task and [`AsyncNode::recv`].
pub const DELIVERY_QUEUE: usize = 64;

/// A read of the node run by the driver task ([`AsyncNode::inspect`]); it sends its own answer.
type Inspection = Box<dyn FnOnce(&Node) + Send>;

/// What deliveries and the [`AsyncNode`] tell the driver task.
enum Control {
    /// The application is done with `seq` from `peer`, handed in `generation`.
    Commit {
        peer: u32,
        seq: u64,
        generation: u64,
    },
    /// A delivery from `peer` was dropped without commit: hand the peer's unconsumed messages
    /// again, as `generation`.
    Release { peer: u32, generation: u64 },
    /// Run a read of the node and answer it ([`AsyncNode::inspect`]).
    Inspect(Inspection),
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Commit {
                peer,
                seq,
                generation,
            } => f
                .debug_struct("Commit")
                .field("peer", peer)
                .field("seq", seq)
                .field("generation", generation)
                .finish(),
            Control::Release { peer, generation } => f
                .debug_struct("Release")
                .field("peer", peer)
                .field("generation", generation)
                .finish(),
            Control::Inspect(_) => f.write_str("Inspect"),
        }
    }
}

/// Per peer, the generation of the deliveries [`AsyncNode::recv`] hands out: a drop without
/// commit starts a new one, and deliveries of an older one are void.
type Generations = Arc<Mutex<FxHashMap<u32, u64>>>;

fn generation_of(gens: &Generations, peer: u32) -> u64 {
    gens.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&peer)
        .copied()
        .unwrap_or(0)
}

/// A node driven by a tokio task. See the [module docs](self).
///
/// Dropping it stops the driver task, which drops the node (see [`Node`]'s drop); prefer
/// [`AsyncNode::close`].
pub struct AsyncNode {
    deliveries: mpsc::Receiver<AsyncDelivery>,
    events: mpsc::Receiver<Event>,
    sender: AsyncSender,
    gens: Generations,
    /// Inspection requests to the driver task.
    control: mpsc::UnboundedSender<Control>,
    close: Option<oneshot::Sender<Duration>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
    node_id: u32,
    local_addr: SocketAddr,
}

impl fmt::Debug for AsyncNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncNode")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// Opens the node ([`Node::open`]) and drives it from a task on the current tokio runtime:
    /// [`AsyncNode::open`].
    pub fn open_async(self) -> Result<AsyncNode, NodeError> {
        AsyncNode::open(self)
    }
}

impl AsyncNode {
    /// Opens the node ([`Node::open`]'s errors) and spawns its driver task on the current tokio
    /// runtime. Outside a runtime: [`NodeError::Io`]. The runtime must have I/O and time
    /// enabled (`enable_all`): like tokio's own I/O types, this panics on a runtime without
    /// I/O, and the driver task stops at once on one without time.
    pub fn open(cfg: NodeConfig) -> Result<AsyncNode, NodeError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| NodeError::Io(io::Error::other(e)))?;
        let node = Node::open(cfg)?;
        let node_id = node.node_id();
        let local_addr = node.local_addr();
        let sender = AsyncSender {
            inner: node.sender(),
            room: Arc::new(Notify::new()),
        };
        let fd = {
            let _entered = runtime.enter();
            // The registration needs the fd to stay open and the same while registered: the
            // node's epoll fd is created at open and closed only when the node drops, and the
            // driver drops this registration before the node. (The replacement constructor is
            // `unsafe`, which this crate forbids.)
            #[allow(deprecated)]
            AsyncFd::with_interest(EpollFd(node.as_raw_fd()), Interest::READABLE)?
        };
        let (tx, deliveries) = mpsc::channel(DELIVERY_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (control_tx, control) = mpsc::unbounded_channel();
        let (close, close_rx) = oneshot::channel();
        let gens = Generations::default();
        let driver = Driver {
            fd,
            node,
            tx,
            events: events_tx,
            control,
            control_tx: control_tx.clone(),
            gens: gens.clone(),
            own_gens: FxHashMap::default(),
            commits: FxHashMap::default(),
            room: sender.room.clone(),
            _wake: WakeOnExit(sender.room.clone()),
        };
        let task = runtime.spawn(driver.run(close_rx));
        Ok(AsyncNode {
            deliveries,
            events,
            sender,
            gens,
            control: control_tx,
            close: Some(close),
            task: Some(task),
            node_id,
            local_addr,
        })
    }

    /// A cloneable send handle.
    pub fn sender(&self) -> AsyncSender {
        self.sender.clone()
    }

    /// The next delivery, in order per peer; `None` once the driver task has stopped (after a
    /// close, or a fatal store or socket error, which [`AsyncNode::close`] returns).
    /// Cancel-safe: a `recv` dropped before it completes loses nothing.
    pub async fn recv(&mut self) -> Option<AsyncDelivery> {
        loop {
            let mut d = self.deliveries.recv().await?;
            if d.generation == generation_of(&self.gens, d.peer) {
                return Some(d);
            }
            // Handed before a drop without commit: it comes again.
            d.done = true;
        }
    }

    /// The next event ([`Node::next_event`]: peer state and address changes, resets,
    /// messages reported lost), in the order the node reported them; `None` once the driver
    /// task has stopped and every queued event was taken. At most [`EVENT_QUEUE`] wait here;
    /// past that, events wait in the node, whose bounded queue drops the oldest and counts
    /// them (`NodeStats::events_dropped`), as for a [`Node`] whose events are not read.
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs `f` on the node in the driver task, between two polls, and returns its result: any
    /// read of the [`Node`] ([`Node::acked_through`], [`Node::store`], ...) from the async
    /// side. [`AsyncNode::stats`] and the other inspection methods are made of it.
    ///
    /// The answer is as current as the driver's latest poll (the node's state when `f` runs,
    /// not a copy kept on the side); it waits at most for the poll under way. `f` runs on the
    /// driver task: it should be quick, as the node does nothing else while it runs. A panic in
    /// `f` is resumed here, in the caller; the driver goes on. [`NodeError::Closed`] once the
    /// driver task has stopped (after a close, or a fatal error). Cancel-safe: dropping the
    /// future drops the answer, nothing else.
    ///
    /// ```no_run
    /// # async fn run(node: &hrpc_node::AsyncNode) -> Result<(), hrpc_node::NodeError> {
    /// let acked = node.inspect(|n| n.acked_through(2)).await?;
    /// println!("peer 2 has persisted every message through #{acked}");
    /// # Ok(()) }
    /// ```
    pub async fn inspect<T, F>(&self, f: F) -> Result<T, NodeError>
    where
        F: FnOnce(&Node) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (answer, rx) = oneshot::channel();
        let run: Inspection = Box::new(move |node: &Node| {
            // The node is only read: a panic leaves nothing half-changed in it.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(node)));
            // The caller may have stopped waiting.
            let _ = answer.send(r);
        });
        self.control
            .send(Control::Inspect(run))
            .map_err(|_| NodeError::Closed)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The driver stopped before it got to the request.
            Err(_) => Err(NodeError::Closed),
        }
    }

    /// The node's counters ([`Node::stats`]), as of the driver's latest poll: messages sent,
    /// delivered, retransmitted, dropped, the socket's figures. Asked of the driver task (see
    /// [`AsyncNode::inspect`]); [`NodeError::Closed`] once it has stopped.
    ///
    /// ```no_run
    /// # async fn run(node: &hrpc_node::AsyncNode) -> Result<(), hrpc_node::NodeError> {
    /// let stats = node.stats().await?;
    /// println!(
    ///     "sent {} messages, delivered {}, retransmitted {}",
    ///     stats.core.messages_sent, stats.delivered, stats.core.messages_retransmitted
    /// );
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.inspect(Node::stats).await
    }

    /// Per-peer figures ([`Node::peer_info`]: address, epoch, RTT, window, queued messages),
    /// `None` for a peer the node does not know; as of the driver's latest poll (see
    /// [`AsyncNode::inspect`]). [`NodeError::Closed`] once the driver task has stopped.
    pub async fn peer_info(&self, peer: u32) -> Result<Option<PeerInfo>, NodeError> {
        self.inspect(move |n| n.peer_info(peer)).await
    }

    /// Liveness of `peer` ([`Node::peer_state`]), as of the driver's latest poll (see
    /// [`AsyncNode::inspect`]; [`AsyncNode::next_event`] reports the changes as they happen).
    /// [`NodeError::Closed`] once the driver task has stopped.
    pub async fn peer_state(&self, peer: u32) -> Result<PeerState, NodeError> {
        self.inspect(move |n| n.peer_state(peer)).await
    }

    /// Messages committed to any peer and not yet acknowledged ([`Node::unacked`]), as of the
    /// driver's latest poll (see [`AsyncNode::inspect`]). [`NodeError::Closed`] once the
    /// driver task has stopped.
    pub async fn unacked(&self) -> Result<u64, NodeError> {
        self.inspect(Node::unacked).await
    }

    /// Stops the driver task and closes the node ([`Node::close`] with `linger`, run on the
    /// blocking pool), after consuming what was committed. Returns the first fatal error the
    /// driver met, if any. When it returns the store can be opened again.
    pub async fn close(mut self, linger: Duration) -> Result<(), NodeError> {
        if let Some(c) = self.close.take() {
            // The task may have stopped already; its result says why.
            let _ = c.send(linger);
        }
        match self.task.take() {
            Some(t) => t.await.map_err(|e| NodeError::Io(io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

/// A cloneable send handle of an [`AsyncNode`]: [`Sender`] with a send that waits out
/// backpressure.
#[derive(Debug, Clone)]
pub struct AsyncSender {
    inner: Sender,
    /// Signalled by the driver task after a poll that may have freed room (it received
    /// datagrams, so acknowledgements, or consumed messages), and when it stops.
    room: Arc<Notify>,
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

/// A message from [`AsyncNode::recv`], owned. It stays in the store until
/// [`AsyncDelivery::commit`]; dropped without commit, it comes again (see the
/// [module docs](self)).
pub struct AsyncDelivery {
    peer: u32,
    seq: u64,
    payload: Vec<u8>,
    generation: u64,
    /// Committed, or void: nothing to tell the driver on drop.
    done: bool,
    control: mpsc::UnboundedSender<Control>,
    gens: Generations,
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

/// The node's epoll fd, as registered with tokio (the [`Node`] itself is not `Sync`, so the
/// driver cannot hold a borrow of it across an await).
#[derive(Debug)]
struct EpollFd(RawFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The driver task's state.
struct Driver {
    /// Declared before `node`: deregistered before the node closes its fd.
    fd: AsyncFd<EpollFd>,
    node: Node,
    tx: mpsc::Sender<AsyncDelivery>,
    /// The node's events, for [`AsyncNode::next_event`].
    events: mpsc::Sender<Event>,
    control: mpsc::UnboundedReceiver<Control>,
    /// Cloned into each delivery (and keeps `control` open).
    control_tx: mpsc::UnboundedSender<Control>,
    gens: Generations,
    /// Per peer, the generation the driver hands out now (it follows `gens` in the order of
    /// the releases it processes).
    own_gens: FxHashMap<u32, u64>,
    /// Per peer, committed seqs past the first unconsumed one.
    commits: FxHashMap<u32, BTreeSet<u64>>,
    room: Arc<Notify>,
    /// Last: dropped after the node, so the senders it wakes see the node closed.
    _wake: WakeOnExit,
}

/// Wakes the senders waiting for room when the driver task ends, however it ends (they then
/// see the node closed).
struct WakeOnExit(Arc<Notify>);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

impl Driver {
    async fn run(mut self, mut close: oneshot::Receiver<Duration>) -> Result<(), NodeError> {
        let linger = match self.drive(&mut close).await {
            Ok(linger) => linger,
            Err(e) => {
                tracing::debug!(error = %e, "async node driver failed");
                return Err(e);
            }
        };
        // Every commit that was accepted is consumed before the node closes; later ones are
        // refused (`NodeError::Closed`).
        self.control.close();
        self.apply_control()?;
        let Driver { fd, node, .. } = self;
        drop(fd);
        tokio::task::spawn_blocking(move || node.close(linger))
            .await
            .map_err(|e| NodeError::Io(io::Error::other(e)))?
    }

    /// Polls until a close is asked for (returns its linger) or the node fails.
    async fn drive(
        &mut self,
        close: &mut oneshot::Receiver<Duration>,
    ) -> Result<Duration, NodeError> {
        // A commit applied while waiting consumed messages: tell the senders after the poll.
        let mut freed = false;
        loop {
            let consumed = self.apply_control()? || std::mem::take(&mut freed);
            let room = self.tx.capacity();
            let gens = &self.own_gens;
            let tx = &self.tx;
            let control = &self.control_tx;
            let shared_gens = &self.gens;
            let report = self.node.poll_deferred(room, &mut |_, d| {
                let delivery = AsyncDelivery {
                    peer: d.peer,
                    seq: d.seq,
                    payload: d.payload.to_vec(),
                    generation: gens.get(&d.peer).copied().unwrap_or(0),
                    done: false,
                    control: control.clone(),
                    gens: shared_gens.clone(),
                };
                // Room was checked, and only this task sends. If the receiver is gone the
                // delivery is void and the message stays unconsumed in the store.
                if let Err(e) = tx.try_send(delivery) {
                    let mut d = e.into_inner();
                    d.done = true;
                }
            })?;
            if report.received > 0 || consumed {
                self.room.notify_waiters();
            }
            self.forward_events();
            if report.more {
                tokio::task::yield_now().await;
                continue;
            }
            // The queue was full, or filled up: more may be waiting in the store.
            let queue_full = report.delivered >= room;
            let deadline = self.node.poll_timeout();
            let woke = tokio::select! {
                biased;
                linger = &mut *close => {
                    // Dropped without close: no linger.
                    return Ok(linger.unwrap_or(Duration::ZERO));
                }
                // Never `None`: this task holds a sender.
                c = self.control.recv() => c,
                ready = self.fd.readable() => {
                    ready?.clear_ready();
                    None
                }
                () = sleep_until(deadline), if deadline.is_some() => None,
                permit = self.tx.reserve(), if queue_full => {
                    if permit.is_err() {
                        // `AsyncNode` dropped: its close signal is dropped too.
                        return Ok(Duration::ZERO);
                    }
                    None
                }
            };
            if let Some(c) = woke {
                freed = self.apply(c)?;
            }
        }
    }

    /// Moves the node's events to the event queue, as many as it has room for.
    fn forward_events(&mut self) {
        // Only as many as the queue takes: the rest wait in the node, whose own bounded
        // queue drops (and counts, `NodeStats::events_dropped`) what overflows it.
        while self.events.capacity() > 0
            && let Some(e) = self.node.next_event()
        {
            if self.events.try_send(e).is_err() {
                break;
            }
        }
    }

    /// Applies the commits and releases queued so far; returns whether anything was
    /// consumed.
    fn apply_control(&mut self) -> Result<bool, NodeError> {
        let mut consumed = false;
        while let Ok(c) = self.control.try_recv() {
            consumed |= self.apply(c)?;
        }
        Ok(consumed)
    }

    fn apply(&mut self, c: Control) -> Result<bool, NodeError> {
        match c {
            Control::Commit {
                peer,
                seq,
                generation,
            } => {
                if self.own_gens.get(&peer).copied().unwrap_or(0) != generation {
                    // Handed before a release: void, it comes again.
                    return Ok(false);
                }
                let node = &mut self.node;
                let set = self.commits.entry(peer).or_default();
                set.insert(seq);
                let mut through = node.consumed_through(peer);
                while set.remove(&(through + 1)) {
                    through += 1;
                }
                // Seqs at or below the cursor (consumed another way) are done with.
                *set = set.split_off(&(through + 1));
                Ok(node.consume(peer, through)? > 0)
            }
            Control::Release { peer, generation } => {
                self.own_gens.insert(peer, generation);
                self.commits.remove(&peer);
                self.node.redeliver(peer);
                Ok(false)
            }
            Control::Inspect(run) => {
                run(&self.node);
                Ok(false)
            }
        }
    }
}

/// Sleeps until `deadline` (`None`: for ever; only polled when `Some`).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
