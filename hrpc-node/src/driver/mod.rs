//! The UDP driver: the [`Node`] users run, around the sans-IO [protocol core](crate::proto).
//!
//! One thread owns the [`Node`] and drives it: [`Node::poll`] does all ready work without
//! blocking and [`Node::wait`] sleeps until there is more. Any thread may send through a
//! cloneable [`Sender`], which commits to the store and wakes the poll thread.
//!
//! ```no_run
//! use hrpc_node::driver::NodeConfig;
//! use std::time::Duration;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut node = NodeConfig::new("./store.client", 2)
//!     .peer(1, "127.0.0.1:5670".parse()?)
//!     .open()?;
//! node.send(1, b"hello")?;                       // committed to the store when this returns
//! let sender = node.sender();                    // Clone + Send + Sync
//! std::thread::spawn(move || sender.send(1, b"from another thread"));
//! for _ in 0..100 {
//!     node.poll(&mut |reply, d| {
//!         println!("{} #{}: {} bytes", d.peer, d.seq, d.payload.len());
//!         let _ = reply.send(d.peer, b"thanks");  // handlers may send
//!     })?;
//!     node.wait(Some(Duration::from_millis(10)))?;
//! }
//! node.close(Duration::from_millis(100))?;
//! # Ok(()) }
//! ```
//!
//! # Delivery contract
//!
//! - A message is **committed** when [`Sender::send`] (or [`Node::send`], or the zero-copy
//!   [`Sender::send_with`]) returns `Ok(seq)`: it is in the store and survives this process
//!   being killed (in [`Durability::Sync`](hrpc_store::Durability::Sync) mode, also an OS crash
//!   once the node's next poll has group-committed). It is retransmitted until the peer has
//!   persisted it, across restarts of either side. A full store or a peer with too many
//!   unacknowledged messages gives a backpressure error ([`SendError::is_backpressure`]);
//!   nothing is ever dropped silently.
//! - Each message is delivered to the receiver's handler **exactly once, in order per peer**,
//!   with `(peer, seq)`; seqs count 1, 2, 3, … per peer (a new numbering starts only if the
//!   sender lost its store: see [`Event::PeerReset`](crate::proto::Event::PeerReset)).
//! - A message counts as consumed when the handler **returns**. If the receiving process dies
//!   inside the handler, that one message is delivered again after restart (at most one
//!   redelivery per crash, always the message that was being handled). Handlers that must not
//!   repeat an effect can record the last `(peer, seq)` they completed.
//! - A handler that finishes with a message later uses [`Node::poll_deferred`]: messages are
//!   handed without being consumed, and [`Node::consume`] consumes them later, in order per
//!   peer; everything handed and not consumed is delivered again after a restart (or after
//!   [`Node::redeliver`]). The tokio handle (`AsyncNode`, feature `tokio`) is built on it.
//! - In Sync mode, one group commit per poll iteration happens after receiving and before
//!   anything is acknowledged, delivered or transmitted.
//! - **Closing** ([`Node::close`] or drop) is seen by every [`Sender`] at once: a send that
//!   had not committed returns [`SendError::Closed`], even if its fill callback was running.
//!   The store stays locked while such a fill runs (a new open of the directory gets
//!   [`NodeError::StoreLocked`]); `close` waits for them up to its `linger`.
//!
//! # Fast I/O
//!
//! [`udp::UdpIo`] receives with `recvmmsg(2)` into a ring allocated once, with UDP GRO where
//! the kernel has it, and sends each transmit of up to
//! [`UdpCaps::max_transmit_segments`] datagrams with one GSO `sendmsg(2)` (or `sendmmsg(2)`
//! batches without GSO). Socket buffers are raised (the force variants when root). Sends from
//! other threads cost one atomic swap each and at most one `eventfd` write per poll iteration
//! ([`waker`]). Nothing allocates per message on the hot path.
//!
//! Debug-level `tracing` events report opens, peer events, dropped transmits and closes;
//! each [`Node::poll`] runs in a debug-level `poll` span with the node id.
//!
//! # Metrics
//!
//! With the `metrics` feature the node publishes its counters and gauges through the
//! [`metrics`](https://docs.rs/metrics) facade from [`Node::poll`], at most once per
//! `NodeConfig::metrics_interval` (every series labelled with the node id); without it
//! none of that is compiled in. The metric list is in the crate's README.

#[cfg(feature = "tokio")]
pub mod async_node;
mod config;
#[cfg(feature = "metrics")]
mod metrics;
mod node;
mod sync;
pub mod udp;
pub mod wait;
pub mod waker;

#[cfg(feature = "metrics")]
pub use self::metrics::DEFAULT_METRICS_INTERVAL;
#[cfg(feature = "tokio")]
pub use async_node::{AsyncDelivery, AsyncNode, AsyncSender};
pub use config::{
    DEFAULT_BIND, MAX_SOCKET_BUFFER, MIN_SOCKET_BUFFER, NodeConfig, NodeError, SendError,
};
pub use node::{CallError, Node, NodeStats, PollReport, SendReservation, Sender};
pub use udp::{UdpCaps, UdpConfig, UdpIo, UdpStats};
pub use wait::{Readiness, wait_fds};
pub use waker::{WakeFlag, Waker};
