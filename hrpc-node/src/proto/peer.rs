//! The peer table: the per-peer record the core keeps ([`Peer`]: session tokens, address,
//! liveness, heartbeat and resolver timers, and the send and receive state), how a record is
//! built from the store the first time a peer is met, and what the core reports about a peer.
//!
//! The store is the source of truth: a record is an index of what the store holds for the
//! peer, rebuilt from it (outbound cursor, inbound seqs past the consumed cursor) when the
//! record is created. At most `max_peers` records exist.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::congestion::Congestion;
use super::recv::RecvState;
use super::rtt::RttEstimator;
use super::send::{SendState, SentState};
use super::{Core, CoreConfig, PeerInfo, PeerState};

/// One peer's state in the core.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) id: u32,
    /// The peer's session token for this node (what it sends as `src_epoch`); 0 until a
    /// handshake validated it.
    pub(super) epoch: u64,
    /// This node's session token for the peer (sent as `src_epoch`, expected as `dst_epoch`).
    pub(super) token: u64,
    /// A validated restart of the peer (its new session token), applied once the old
    /// session's messages are delivered.
    pub(super) pending_epoch: Option<u64>,
    /// Where datagrams for the peer go: from the resolver, or validated by a handshake. Only
    /// datagrams from here are processed.
    pub(super) addr: Option<SocketAddr>,
    /// Since when a restart claimed from another address waits for the current session to
    /// answer; cleared when it does.
    pub(super) restart_probe: Option<Instant>,
    pub(super) state: PeerState,
    pub(super) last_heard: Option<Instant>,
    /// The application asked for liveness (`touch`).
    pub(super) touched: bool,
    pub(super) hb_pending: bool,
    pub(super) hb_reply_requested: bool,
    pub(super) hb_at: Instant,
    pub(super) hb_interval: Duration,
    /// Newest timestamp the peer sent, echoed back in heartbeats.
    pub(super) peer_timestamp: u64,
    /// No address: when to ask the resolver again.
    pub(super) resolve_at: Option<Instant>,
    /// The current step of the resolver backoff (zero until a failure).
    pub(super) resolve_backoff: Duration,
    /// When to probe a peer whose flow window is closed (its window update
    /// may have been lost), like TCP's persist timer.
    pub(super) probe_at: Option<Instant>,
    pub(super) send: SendState,
    pub(super) recv: RecvState,
}

impl Peer {
    /// Whether the peer deserves heartbeats.
    pub(super) fn engaged(&self, now: Instant, cfg: &CoreConfig, committed_next: u64) -> bool {
        self.touched
            || self.send.base < committed_next
            || self.last_heard.is_some_and(|t| {
                now.saturating_duration_since(t) < cfg.unreachable_after.saturating_mul(3)
            })
    }
}

impl Core {
    /// Liveness of `peer` as this node sees it.
    pub fn peer_state(&self, peer: u32) -> PeerState {
        self.peers
            .get(&peer)
            .map_or(PeerState::Unknown, |p| p.state)
    }

    /// The peers this node has state for (each has [`Core::peer_info`]), in the order they
    /// became known.
    pub fn peer_ids(&self) -> &[u32] {
        &self.order
    }

    /// Figures for `peer`, if this node has state for it.
    pub fn peer_info(&self, peer: u32) -> Option<PeerInfo> {
        let p = self.peers.get(&peer)?;
        let committed = self.committed_next(peer);
        Some(PeerInfo {
            peer,
            state: p.state,
            addr: p.addr,
            epoch: (p.epoch != 0).then_some(p.epoch),
            srtt: p.send.rtt.has_sample().then(|| p.send.rtt.srtt()),
            cwnd: p.send.cc.window(),
            loss_per_mille: p.send.cc.loss_rate(),
            unacked_messages: committed.saturating_sub(p.send.base),
            in_flight_messages: p
                .send
                .sent
                .iter()
                .filter(|e| e.state == SentState::InFlight)
                .count() as u64,
            in_flight_bytes: p.send.in_flight_bytes,
            undelivered_messages: p.recv.deliverable(),
        })
    }

    /// Starts heartbeats to `peer` now (with a reply requested), so its
    /// liveness is known before there is anything to send.
    pub fn touch(&mut self, peer: u32, now: Instant) {
        if peer == self.id {
            return;
        }
        if let Some(p) = self.peer_entry(peer, now) {
            p.touched = true;
            p.hb_pending = true;
            p.hb_reply_requested = true;
        }
    }

    pub(super) fn committed_next(&self, peer: u32) -> u64 {
        self.store
            .outbound_pending(peer)
            .map_or(1, |(_, next)| next)
    }

    /// The state for `peer`, created from the store if needed (bounded by
    /// `max_peers`).
    pub(super) fn peer_entry(&mut self, peer: u32, now: Instant) -> Option<&mut Peer> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.cfg.max_peers {
                return None;
            }
            let (base, _) = self.store.outbound_pending(peer).unwrap_or((1, 1));
            let consumed = self.store.inbound_consumed(peer);
            let mut recv = RecvState::new(consumed);
            for (seq, last) in self.persisted_inbound(peer) {
                recv.insert_range(seq, last);
            }
            let rtt = RttEstimator::new(self.cfg.initial_rtt, self.cfg.min_rto, self.cfg.max_rto);
            let min_cwnd = 2 * self.cfg.mtu;
            let mut cc = Congestion::new(
                self.cfg.initial_cwnd,
                min_cwnd,
                self.cfg.max_cwnd,
                self.cfg.loss_tolerance_per_mille,
            );
            if self.durable {
                cc = cc.without_delay_signal();
            }
            let mut send = SendState::new(
                base,
                self.cfg.initial_window_msgs,
                self.datagram_room(),
                rtt,
                cc,
            );
            send.sent_limit = self.sent_before.get(&peer).copied().unwrap_or(1);
            let p = Peer {
                id: peer,
                epoch: self.store.peer_epoch(peer).unwrap_or(0),
                token: self.secrets.token(peer),
                pending_epoch: None,
                addr: None,
                restart_probe: None,
                state: PeerState::Unknown,
                last_heard: None,
                touched: false,
                hb_pending: false,
                hb_reply_requested: false,
                hb_at: now,
                hb_interval: self.cfg.heartbeat_interval,
                peer_timestamp: 0,
                probe_at: None,
                resolve_at: None,
                resolve_backoff: Duration::ZERO,
                send,
                recv,
            };
            self.peers.insert(peer, p);
            self.order.push(peer);
        }
        self.peers.get_mut(&peer)
    }
}
