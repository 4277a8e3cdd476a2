//! Events the core reports to the application.

use std::ops::{Range, RangeInclusive};

/// Liveness of a peer as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Never heard from (in this process's life).
    Unknown,
    /// Heard from recently.
    Active,
    /// Silent for longer than the configured limit while there was reason to hear from it.
    Unreachable,
    /// Something is queued for it, but its address is unknown: it has not
    /// spoken and the resolver does not know it. The resolver is asked again
    /// on a backoff (first after ≤ 100 ms, then at most every 5 s); queued
    /// messages wait in the store meanwhile.
    Unresolved,
}

/// Something the application may want to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer's liveness changed.
    PeerState {
        /// Peer node id.
        peer: u32,
        /// New state.
        state: PeerState,
    },
    /// A peer came back with a new session (epoch): it lost its store (or it is a new
    /// installation under the same id). Accepted only after a handshake validated it (see
    /// "Session tokens and the handshake" in `docs/design.md`).
    ///
    /// Inbound: every message its old session sent and this node persisted
    /// was delivered before the reset took effect; its new session numbers
    /// from 1. Outbound: messages to it that were never acknowledged are
    /// **kept** and sent to the new session, in order (`resent`). Messages
    /// its old session acknowledged went down with its store; hrpc cannot
    /// recover them.
    PeerReset {
        /// Peer node id.
        peer: u32,
        /// The session token for this node its old session used.
        old_epoch: u64,
        /// The session token for this node its new session uses.
        new_epoch: u64,
        /// Outbound seqs that are being sent again to the new session.
        resent: Range<u64>,
    },
    /// A peer now speaks from a new address: it proved, by a round trip, that it receives
    /// there and knows its session with this node. Datagrams to it go there from now on.
    PeerAddress {
        /// Peer node id.
        peer: u32,
        /// Its new address.
        addr: std::net::SocketAddr,
    },
    /// Messages from `peer` with these seqs will never be delivered: the sender
    /// gave up on them ([`Node::discard`](crate::Node::discard)) or lost them
    /// with a damaged store, or this node lost them after acknowledging them
    /// (its store was damaged). Reported in stream order: every message before
    /// the range was delivered first, and delivery continues after it.
    Lost {
        /// Sending node id.
        peer: u32,
        /// The seqs that will never arrive.
        range: RangeInclusive<u64>,
    },
    /// Messages this node committed to `peer` were lost from its damaged store
    /// (found when the store was opened with `recover_damaged`). The peer is
    /// told; it reports [`Event::Lost`] for those it had not received.
    OutboundLost {
        /// Destination node id.
        peer: u32,
        /// The seqs that are gone (some may have reached the peer already).
        range: RangeInclusive<u64>,
    },
}

impl Event {
    /// The peer the event is about.
    pub fn peer(&self) -> u32 {
        match self {
            Event::PeerState { peer, .. }
            | Event::PeerReset { peer, .. }
            | Event::PeerAddress { peer, .. }
            | Event::Lost { peer, .. }
            | Event::OutboundLost { peer, .. } => *peer,
        }
    }
}
