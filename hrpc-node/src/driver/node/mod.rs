//! [`Node`]: the poll loop around the protocol core, and [`Sender`], the thread-safe send
//! handle.
//!
//! The node's methods are grouped by concern: opening, flushing and closing in `lifecycle`,
//! the poll loop in `poll`, sending in `sender`, calls and replies in `calls`, and inspection
//! in `inspect`.

mod calls;
mod inspect;
mod lifecycle;
mod poll;
mod sender;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use hrpc_store::StoreError;
use nix::sys::epoll::Epoll;

use super::config::NodeError;
use super::udp::UdpIo;
use super::waker::Waker;
use crate::proto::{Core, CoreError};
use poll::PendingTx;
use sender::Shared;

pub use calls::CallError;
pub use inspect::NodeStats;
pub use poll::PollReport;
pub use sender::{SendReservation, Sender};

/// A node: the store, the socket and the protocol core, driven by one thread.
///
/// See the [module docs](super) for the loop and the delivery contract.
///
/// Two nodes in one process, each polled in turn; a real program gives each node its own
/// thread and loop:
///
/// ```
/// use std::time::{Duration, Instant};
/// use hrpc_node::NodeConfig;
///
/// let dir = tempfile::tempdir()?;
/// // Without `bind`, a node listens on an ephemeral loopback port.
/// let mut server = NodeConfig::new(dir.path().join("server"), 1).open()?;
/// let mut client = NodeConfig::new(dir.path().join("client"), 2)
///     .peer(1, server.local_addr())
///     .open()?;
/// let seq = client.send(1, b"ping")?;
///
/// let mut got = Vec::new();
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while (got.is_empty() || !client.is_acked(1, seq)) && Instant::now() < deadline {
///     client.poll(&mut |_, _| {})?;
///     server.poll(&mut |_, d| got.push((d.peer, d.seq, d.payload.to_vec())))?;
///     // Sleeps until socket input, a send from another thread, or the next timer.
///     server.wait(Some(Duration::from_millis(1)))?;
/// }
/// assert_eq!(got, vec![(2, seq, b"ping".to_vec())]);
/// assert_eq!(client.unacked(), 0); // the server has it persisted
/// assert_eq!(server.stats().delivered, 1);
///
/// client.close(Duration::from_millis(10))?;
/// server.close(Duration::from_millis(10))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Node {
    core: Core,
    io: UdpIo,
    waker: Waker,
    epoll: Epoll,
    shared: Arc<Shared>,
    local_sender: Sender,
    tx_buf: Vec<u8>,
    pending_tx: Option<PendingTx>,
    epoll_wants_write: bool,
    /// Sends from the poll thread (or leftover budgets) since the last poll: do not block.
    dirty: bool,
    fd_drained: bool,
    deliveries_per_poll: usize,
    recv_batches_per_poll: usize,
    transmits_per_poll: usize,
    polls: u64,
    wakeups: u64,
    closed: bool,
    #[cfg(feature = "metrics")]
    metrics: super::metrics::Metrics,
}

impl AsRawFd for Node {
    /// An epoll fd that is readable when the node has socket input or a wake-up (and, while a
    /// transmit waits for buffer space, when the socket is writable). For users who run their
    /// own epoll/mio loop: call [`Node::poll`] when it is readable or [`Node::poll_timeout`]
    /// has passed.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

fn core_error(e: CoreError) -> NodeError {
    match e {
        CoreError::Store(StoreError::Locked { path }) => NodeError::StoreLocked { path },
        CoreError::Store(s) => NodeError::Store(s),
        CoreError::Config(e) => NodeError::Config(e),
        e => NodeError::Core(e),
    }
}
