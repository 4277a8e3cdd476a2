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

mod delivery;
mod driver;
mod sender;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

#[cfg(doc)]
use super::config::SendError;
use super::config::{NodeConfig, NodeError};
#[cfg(doc)]
use super::node::Sender;
use super::node::{Node, NodeStats};
use crate::proto::{Event, MessageKind, PeerInfo, PeerState};
use delivery::{Generations, generation_of};
use driver::{Control, Driver, EpollFd, Inspection, WakeOnExit};

pub use delivery::AsyncDelivery;
pub use sender::AsyncSender;
use sender::Waiters;

/// The most events waiting between the driver task and [`AsyncNode::next_event`].
pub const EVENT_QUEUE: usize = 1024;

/// How many deliveries wait at most between the driver task and [`AsyncNode::recv`].
pub const DELIVERY_QUEUE: usize = 64;

/// A node driven by a tokio task. See the [module docs](self).
///
/// Dropping it stops the driver task, which drops the node (see [`Node`]'s drop); prefer
/// [`AsyncNode::close`].
///
/// A delivery is consumed only when committed; one dropped uncommitted comes again:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use std::time::Duration;
/// use hrpc_node::NodeConfig;
///
/// let dir = tempfile::tempdir()?;
/// let mut server = NodeConfig::new(dir.path().join("server"), 1).open_async()?;
/// let client = NodeConfig::new(dir.path().join("client"), 2)
///     .peer(1, server.local_addr())
///     .open_async()?;
/// client.sender().send(1, b"hello").await?;
///
/// let limit = Duration::from_secs(10);
/// let d = tokio::time::timeout(limit, server.recv()).await?.ok_or("server stopped")?;
/// assert_eq!((d.peer(), d.seq(), d.payload()), (2, 1, &b"hello"[..]));
/// drop(d); // not committed: handed out again
///
/// let d = tokio::time::timeout(limit, server.recv()).await?.ok_or("server stopped")?;
/// assert_eq!((d.seq(), d.payload()), (1, &b"hello"[..]));
/// d.commit()?;
///
/// server.close(Duration::from_millis(10)).await?;
/// client.close(Duration::from_millis(10)).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
            waiters: Waiters::default(),
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
            replies: FxHashMap::default(),
            room: sender.room.clone(),
            sender: sender.clone(),
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
            // A call's timeout is not part of the peer's stream: never void.
            if matches!(d.kind, MessageKind::CallTimedOut { .. })
                || d.generation == generation_of(&self.gens, d.peer)
            {
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
