//! What a node tells about itself and its peers: its id and socket, counters
//! ([`NodeStats`]), peer state and events, how far each peer has acknowledged, and the store.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use hrpc_store::Store;

use super::Node;
use crate::driver::udp::{UdpCaps, UdpStats};
use crate::proto::{Event, PeerInfo, PeerState, Stats};

/// Driver-level counters, with the core's and the socket's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// The protocol core's counters (messages, retransmissions, drops by reason).
    pub core: Stats,
    /// The socket's counters (syscalls, datagrams, bytes, send errors).
    pub udp: UdpStats,
    /// Calls to [`Node::poll`].
    pub polls: u64,
    /// Messages delivered to handlers (the core's `messages_delivered`).
    pub delivered: u64,
    /// Wake-ups from other threads' sends that the poll loop took.
    pub wakeups: u64,
    /// Events dropped because nobody called [`Node::next_event`] (the core's
    /// `events_dropped`).
    pub events_dropped: u64,
    /// Bytes of half-assembled inbound messages held now (bounded by
    /// [`CoreConfig::max_reassembly_bytes`](crate::proto::CoreConfig::max_reassembly_bytes)).
    pub reassembly_bytes: usize,
}

impl Node {
    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.shared.node_id
    }

    /// The UDP socket's own fd, for programs that wait on the socket directly (the original C
    /// API's `hrpc_init` returned it). Readable when datagrams arrive; a program that waits on
    /// it alone must also honour [`Node::poll_timeout`] and wakes only for socket input, not for
    /// sends from other threads (use the [`AsRawFd`] epoll fd for those).
    pub fn socket_fd(&self) -> RawFd {
        self.io.as_fd().as_raw_fd()
    }

    /// The socket's bound address (the ephemeral port filled in).
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr()
    }

    /// What the socket supports (GSO/GRO segments, buffer sizes).
    pub fn udp_caps(&self) -> UdpCaps {
        self.io.caps()
    }

    /// Marks `peer` as one to contact: resolves its address and starts heartbeats (the seed's
    /// `hrpc_touch_connect`).
    pub fn touch(&mut self, peer: u32) {
        self.dirty = true;
        self.core.touch(peer, Instant::now());
    }

    /// Liveness of `peer` (the seed's `hrpc_is_connected` is `== PeerState::Active`).
    pub fn peer_state(&self, peer: u32) -> PeerState {
        self.core.peer_state(peer)
    }

    /// Per-peer figures (address, epoch, RTT, window, queued messages), if the peer is known.
    pub fn peer_info(&self, peer: u32) -> Option<PeerInfo> {
        self.core.peer_info(peer)
    }

    /// The next peer event (state changes, resets), oldest first.
    pub fn next_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            core: self.core.stats().clone(),
            udp: self.io.stats(),
            polls: self.polls,
            delivered: self.core.stats().messages_delivered,
            wakeups: self.wakeups,
            events_dropped: self.core.stats().events_dropped,
            reassembly_bytes: self.core.reassembly_bytes(),
        }
    }

    /// The seq the next message to `peer` will get (1 for a peer never sent to): every seq
    /// below it was handed out by a send that returned `Ok`. It never goes back, across
    /// restarts too (a store damaged while stopped is refused, or, with
    /// [`NodeConfig::recover_damaged`], keeps its numbering and reports the loss). It says
    /// nothing about delivery: see [`Node::is_acked`] and [`Node::flush`].
    ///
    /// [`NodeConfig::recover_damaged`]: crate::driver::NodeConfig::recover_damaged
    pub fn next_outbound_seq(&self, peer: u32) -> u64 {
        self.core
            .store()
            .outbound_pending(peer)
            .map_or(1, |(_, next)| next)
    }

    /// Every message to `peer` with a seq at or below the returned one was persisted by the
    /// peer (it acknowledged it, or it was discarded and the peer told); they are gone from
    /// this node's store. 0 if none.
    pub fn acked_through(&self, peer: u32) -> u64 {
        match self.core.store().outbound_pending(peer) {
            Some((lowest, _)) => lowest - 1,
            None => 0,
        }
    }

    /// Whether message `seq` to `peer` (a seq a send returned) was persisted by the peer.
    pub fn is_acked(&self, peer: u32, seq: u64) -> bool {
        seq != 0 && seq <= self.acked_through(peer)
    }

    /// Messages committed to any peer and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        let store = self.core.store();
        store
            .peers()
            .into_iter()
            .filter_map(|p| store.outbound_pending(p))
            .map(|(lowest, next)| next - lowest)
            .sum()
    }

    /// What opening the store found: damage (with [`NodeConfig::recover_damaged`]), the
    /// outbound ranges lost with it, and the slots recovery freed.
    ///
    /// [`NodeConfig::recover_damaged`]: crate::driver::NodeConfig::recover_damaged
    pub fn open_report(&self) -> &hrpc_store::OpenReport {
        self.core.store().open_report()
    }

    /// The store (inspection: usage, per-peer report).
    pub fn store(&self) -> &Store {
        self.core.store()
    }
}
