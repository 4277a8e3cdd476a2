//! hrpc-node: persistent, connectionless messaging between nodes over UDP.
//!
//! A node is a small integer id with a store directory. `send(peer, bytes)`
//! needs no connect: the message is committed to the node's memory-mapped
//! store ([`hrpc_store`]) before `send` returns, then sent, retransmitted
//! until the peer has persisted it, and delivered to the peer's handler in
//! order, once. Killing either process loses nothing: on restart, sending
//! and delivery resume where they stopped.
//!
//! Two layers:
//!
//! - [`proto`]: the protocol as a state machine with no sockets, no clock
//!   and no randomness ([`proto::Core`]): acks, retransmission, flow and
//!   congestion control, fragmentation, session tokens and the address-validating
//!   handshake, liveness. The
//!   deterministic simulation tests drive it in virtual time.
//! - [`driver`]: the [`Node`] users run on real UDP sockets: one thread
//!   polls, any thread sends through a [`Sender`]. Its docs state the
//!   delivery contract.
//!
//! With the `tokio` feature, `AsyncNode` (module `driver::async_node`) drives a node from a
//! tokio task: `AsyncSender::send` waits out backpressure, and `AsyncNode::recv` hands out
//! owned deliveries that are consumed only when committed.
//!
//! The design (wire format, store layout, crash model, protocol state
//! machine) is in `docs/design.md`.
#![forbid(unsafe_code)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod driver;
pub mod proto;

// Every type in a public signature of this crate, nameable from its root (so users need not
// depend on hrpc-store themselves to name an error or a report).
#[cfg(feature = "tokio")]
pub use driver::{AsyncDelivery, AsyncNode, AsyncSender};
pub use driver::{
    CallError, Node, NodeConfig, NodeError, NodeStats, PollReport, Readiness, SendError,
    SendReservation, Sender, UdpCaps, UdpConfig, UdpIo, UdpStats, WakeFlag, Waker,
};
pub use hrpc_store::{
    Damage, Durability, FileReport, InboundSlot, LostRange, MIN_CAPACITY, MessageRef, OpenReport,
    OutboundOnReset, OutboundProducer, OutboundReservation, PeerReport, PendingCall, ResetReport,
    Store, StoreConfig, StoreError, StoreReport,
};
pub use proto::{
    CALL_ENVELOPE_LEN, CallId, ClusterKey, ConfigError, Core, CoreConfig, CoreError, DROP_REASONS,
    Delivery, DropReason, Event, MessageKind, NoResolver, PeerInfo, PeerState, Resolver,
    StaticResolver, Stats, Transmit,
};
