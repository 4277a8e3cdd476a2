//! The hrpc protocol as a state machine with no sockets, no clock and no
//! randomness of its own (the style of quinn-proto).
//!
//! A [`Core`] owns the node's [`Store`]. The driver feeds it datagrams with
//! [`Core::handle_datagram`], calls [`Core::sync`] (the group commit),
//! [`Core::deliver`] (hands persisted messages to the application in order),
//! drains [`Core::poll_transmit`] into the socket, and sleeps until
//! [`Core::poll_timeout`], then calls [`Core::handle_timeout`]. Time is always
//! passed in, so tests drive it in virtual time.
//!
//! The state machine is written up in `docs/design.md` ("Protocol").

mod config;
mod congestion;
mod event;
mod recv;
mod resolver;
mod rtt;
mod send;
mod stats;
#[doc(hidden)]
pub mod testing;

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hrpc_store::{Durability, MessageRef, OutboundOnReset, OutboundProducer, Store, StoreError};
use hrpc_wire::{
    AckFrame, DATA_OVERHEAD, DataFrame, Datagram, DatagramWriter, EncodeError, FragAckFrame, Frame,
    HEADER_LEN, HeaderFields, HeartbeatFrame, MAX_SACK_RANGES, ResetFrame, ResetReason, SackRange,
    SackRanges, WireError,
};

pub use config::CoreConfig;
pub use event::{Event, PeerState};
pub use resolver::{NoResolver, Resolver, StaticResolver};
pub use stats::{DROP_REASONS, DropReason, PeerInfo, Stats};

use congestion::Congestion;
use recv::{Reassembly, RecvState};
use rtt::RttEstimator;
use send::{FragCursor, SendState, SentState};

/// Errors the core returns. Bad input from the network is never an error:
/// it is dropped and counted in [`Stats`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The store failed (disk full, sync failure, …); see the source.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A persisted message no longer matches its checksum (memory or disk corruption).
    #[error("inbound message {seq} from peer {peer} failed its checksum before delivery")]
    CorruptDelivery {
        /// Peer node id.
        peer: u32,
        /// Message seq.
        seq: u64,
    },
    /// The configuration is inconsistent.
    #[error("bad configuration: {0}")]
    Config(&'static str),
}

/// One or more datagrams for one destination, written by [`Core::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send.
    pub dst: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// With several datagrams: each is this long except the last, which may
    /// be shorter (UDP GSO's rule). `None`: the buffer holds one datagram.
    pub segment_size: Option<usize>,
}

/// A message handed to the application by [`Core::deliver`].
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Sending node id.
    pub peer: u32,
    /// Its per-peer sequence number (1, 2, 3, … for each peer session).
    pub seq: u64,
    /// The message, borrowed from the store until the handler returns.
    pub payload: &'a [u8],
}

/// Smallest window for the fragment stream of one long message, whatever
/// the congestion window (which a timeout can shrink to two datagrams).
const FRAGMENT_WINDOW_FLOOR: usize = 256 << 10;
/// A half-assembled message with no new bytes for this long may be evicted
/// when another needs the room.
const REASSEMBLY_IDLE: Duration = Duration::from_secs(5);
/// Smallest fragment worth starting in a datagram that already holds frames.
const MIN_FRAGMENT: usize = 256;
/// Most unsolicited answers queued at once.
const MAX_QUEUED_REPLIES: usize = 64;
/// Most events queued before the oldest are dropped.
const MAX_EVENTS: usize = 4096;

#[derive(Debug)]
struct Peer {
    id: u32,
    /// The peer's session epoch; 0 until learned.
    epoch: u64,
    /// A newer epoch seen, applied once the old session's messages are delivered.
    pending_epoch: Option<u64>,
    addr: Option<SocketAddr>,
    state: PeerState,
    last_heard: Option<Instant>,
    /// The application asked for liveness (`touch`).
    touched: bool,
    hb_pending: bool,
    hb_reply_requested: bool,
    hb_at: Instant,
    hb_interval: Duration,
    /// Newest timestamp the peer sent, echoed back in heartbeats.
    peer_timestamp: u64,
    /// When to probe a peer whose flow window is closed (its window update
    /// may have been lost), like TCP's persist timer.
    probe_at: Option<Instant>,
    send: SendState,
    recv: RecvState,
}

impl Peer {
    /// Whether the peer deserves heartbeats.
    fn engaged(&self, now: Instant, cfg: &CoreConfig, committed_next: u64) -> bool {
        self.touched
            || self.send.base < committed_next
            || self
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < cfg.unreachable_after * 3)
    }
}

/// An answer to a datagram from a sender that does not know this node's
/// epoch; sent without creating any per-peer state.
#[derive(Debug, Clone, Copy)]
struct Reply {
    to: SocketAddr,
    header: HeaderFields,
    frame: ReplyFrame,
}

#[derive(Debug, Clone, Copy)]
enum ReplyFrame {
    Heartbeat(HeartbeatFrame),
    Reset(ResetFrame),
}

/// The protocol state machine of one node. See the [module docs](self).
pub struct Core {
    cfg: CoreConfig,
    store: Store,
    id: u32,
    epoch: u64,
    durable: bool,
    /// Sync mode: something was persisted since the last group commit, so
    /// nothing may be acknowledged, sent or delivered until [`Core::sync`].
    unsynced: bool,
    /// Sync mode: per peer, seqs below this were committed before the last sync.
    synced_next: FxHashMap<u32, u64>,
    resolver: Box<dyn Resolver>,
    peers: FxHashMap<u32, Peer>,
    /// Peer ids in a stable order for round-robin transmission.
    order: Vec<u32>,
    /// Round-robin position for transmission.
    rr: usize,
    /// Round-robin position for delivery.
    deliver_rr: usize,
    replies: VecDeque<Reply>,
    reply_tokens: u32,
    reply_refill_at: Instant,
    reassembly_bytes: usize,
    events: VecDeque<Event>,
    stats: Stats,
    start: Instant,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("peers", &self.peers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Builds the core around an open store, resuming every peer stream the
    /// store holds.
    pub fn new(
        store: Store,
        cfg: CoreConfig,
        resolver: Box<dyn Resolver>,
        now: Instant,
    ) -> Result<Core, CoreError> {
        cfg.validate().map_err(CoreError::Config)?;
        let mut core = Core {
            id: store.node_id(),
            epoch: store.epoch(),
            durable: store.durability() == Durability::Sync,
            unsynced: false,
            synced_next: FxHashMap::default(),
            store,
            resolver,
            peers: FxHashMap::default(),
            order: Vec::new(),
            rr: 0,
            deliver_rr: 0,
            replies: VecDeque::new(),
            reply_tokens: cfg.max_unsolicited_per_sec,
            reply_refill_at: now,
            reassembly_bytes: 0,
            events: VecDeque::new(),
            stats: Stats::default(),
            start: now,
            cfg,
        };
        for peer in core.store.peers() {
            core.peer_entry(peer, now);
        }
        core.note_synced();
        Ok(core)
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.id
    }

    /// This node's session epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A handle that commits outbound messages from any thread. After a
    /// commit from another thread, wake the thread that drives the core so it
    /// calls [`Core::poll_transmit`].
    pub fn producer(&self) -> OutboundProducer {
        self.store.producer()
    }

    /// The store (read-only: inspection, usage).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Liveness of `peer` as this node sees it.
    pub fn peer_state(&self, peer: u32) -> PeerState {
        self.peers
            .get(&peer)
            .map_or(PeerState::Unknown, |p| p.state)
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

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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

    fn timestamp(&self, now: Instant) -> u64 {
        // +1 so that 0 keeps meaning "no timestamp".
        now.saturating_duration_since(self.start).as_micros() as u64 + 1
    }

    fn committed_next(&self, peer: u32) -> u64 {
        self.store
            .outbound_pending(peer)
            .map_or(1, |(_, next)| next)
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The state for `peer`, created from the store if needed (bounded by
    /// `max_peers`).
    fn peer_entry(&mut self, peer: u32, now: Instant) -> Option<&mut Peer> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.cfg.max_peers {
                return None;
            }
            let (base, _) = self.store.outbound_pending(peer).unwrap_or((1, 1));
            let consumed = self.store.inbound_consumed(peer);
            let mut recv = RecvState::new(consumed);
            for seq in self.store.inbound_seqs(peer) {
                recv.insert(seq);
            }
            let rtt = RttEstimator::new(self.cfg.initial_rtt, self.cfg.min_rto, self.cfg.max_rto);
            let min_cwnd = 2 * self.cfg.mtu;
            let cc = Congestion::new(self.cfg.initial_cwnd, min_cwnd, self.cfg.max_cwnd);
            let p = Peer {
                id: peer,
                epoch: self.store.peer_epoch(peer).unwrap_or(0),
                pending_epoch: None,
                addr: None,
                state: PeerState::Unknown,
                last_heard: None,
                touched: false,
                hb_pending: false,
                hb_reply_requested: false,
                hb_at: now,
                hb_interval: self.cfg.heartbeat_interval,
                peer_timestamp: 0,
                probe_at: None,
                send: SendState::new(base, self.cfg.initial_window_msgs, rtt, cc),
                recv,
            };
            self.peers.insert(peer, p);
            self.order.push(peer);
        }
        self.peers.get_mut(&peer)
    }

    // ------------------------------------------------------------------
    // Input
    // ------------------------------------------------------------------

    /// Processes one received datagram. Never fails: malformed, misdirected,
    /// stale or duplicate input is dropped and counted in [`Stats`], and
    /// changes no persisted state.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        let d = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(WireError::BadChecksum) => return self.stats.drop(DropReason::BadChecksum),
            Err(_) => return self.stats.drop(DropReason::Malformed),
        };
        let h = d.header();
        if h.auth {
            return self.stats.drop(DropReason::Unauthenticated);
        }
        if h.dst != self.id || h.src == self.id {
            return self.stats.drop(DropReason::WrongDestination);
        }
        if h.dst_epoch != self.epoch {
            // The sender does not know this session: tell it, but act on nothing.
            if h.dst_epoch == 0 {
                self.stats.drop(DropReason::UnknownEpoch);
                self.queue_hello_reply(now, from, &h);
            } else {
                self.stats.drop(DropReason::WrongEpoch);
                self.queue_reply(
                    now,
                    Reply {
                        to: from,
                        header: self.reply_header(&h),
                        frame: ReplyFrame::Reset(ResetFrame {
                            reason: ResetReason::EpochMismatch,
                            epoch: self.epoch,
                            seen_epoch: h.dst_epoch,
                        }),
                    },
                );
            }
            return;
        }
        // The sender knows this session's epoch: it has heard from this node.
        if self.peer_entry(h.src, now).is_none() {
            return self.stats.drop(DropReason::TooManyPeers);
        }
        if !self.check_peer_epoch(h.src, h.src_epoch) {
            return;
        }
        let Some(p) = self.peers.get_mut(&h.src) else {
            return;
        };
        if p.addr != Some(from) {
            tracing::debug!(peer = h.src, %from, "peer address learned");
        }
        p.addr = Some(from);
        p.last_heard = Some(now);
        p.hb_interval = self.cfg.heartbeat_interval;
        if p.state != PeerState::Active {
            p.state = PeerState::Active;
            self.push_event(Event::PeerState {
                peer: h.src,
                state: PeerState::Active,
            });
        }
        for frame in d.frames() {
            match frame {
                Frame::Data(f) => self.on_data(now, h.src, &f),
                Frame::Ack(a) => self.on_ack(now, h.src, &a),
                Frame::Heartbeat(hb) => self.on_heartbeat(now, h.src, &hb),
                Frame::FragAck(f) => self.on_frag_ack(now, h.src, f.seq, f.received),
                Frame::Reset(r) => {
                    tracing::debug!(peer = h.src, ?r, "reset notice");
                    if let Some(p) = self.peers.get_mut(&h.src) {
                        p.hb_pending = true;
                    }
                }
            }
        }
    }

    fn reply_header(&self, h: &HeaderFields) -> HeaderFields {
        HeaderFields {
            src: self.id,
            dst: h.src,
            src_epoch: self.epoch,
            dst_epoch: h.src_epoch,
            auth: false,
        }
    }

    fn queue_hello_reply(&mut self, now: Instant, from: SocketAddr, h: &HeaderFields) {
        let (next_seq, first_pending, expected) = match self.peers.get(&h.src) {
            Some(p) => (p.send.next_new(), p.send.base, p.recv.cum + 1),
            None => (1, 1, 1),
        };
        let hb = HeartbeatFrame {
            reply_requested: false,
            next_seq,
            first_pending,
            expected,
            timestamp_us: self.timestamp(now),
            echo_us: 0,
        };
        let reply = Reply {
            to: from,
            header: self.reply_header(h),
            frame: ReplyFrame::Heartbeat(hb),
        };
        self.queue_reply(now, reply);
    }

    fn queue_reply(&mut self, now: Instant, reply: Reply) {
        if now >= self.reply_refill_at {
            self.reply_tokens = self.cfg.max_unsolicited_per_sec;
            self.reply_refill_at = now + Duration::from_secs(1);
        }
        if self.reply_tokens == 0 || self.replies.len() >= MAX_QUEUED_REPLIES {
            return;
        }
        self.reply_tokens -= 1;
        self.replies.push_back(reply);
    }

    /// Applies the epoch rules; returns whether the datagram's frames may be
    /// processed. See "Session epochs" in `docs/design.md`.
    fn check_peer_epoch(&mut self, peer: u32, src_epoch: u64) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        if src_epoch == p.epoch && p.pending_epoch.is_none() {
            return true;
        }
        if src_epoch == 0 {
            self.stats.drop(DropReason::Malformed);
            return false;
        }
        if p.epoch == 0 {
            // First contact: remember the epoch before accepting anything.
            if let Err(e) = self.store.set_peer_epoch(peer, src_epoch) {
                tracing::warn!(peer, error = %e, "cannot record peer epoch");
                self.stats.drop(DropReason::NoSpace);
                return false;
            }
            p.epoch = src_epoch;
            tracing::debug!(peer, epoch = src_epoch, "peer epoch learned");
            return true;
        }
        if src_epoch < p.epoch || p.pending_epoch.is_some_and(|e| src_epoch < e) {
            self.stats.drop(DropReason::StaleEpoch);
            return false;
        }
        if src_epoch == p.epoch {
            // A newer epoch is pending; datagrams of the old session still count.
            return true;
        }
        // A newer session of the peer. Its old session's messages that this
        // node persisted are delivered first; until then new-session
        // datagrams are dropped (the peer retries).
        p.pending_epoch = Some(src_epoch);
        if p.recv.deliverable() == 0 {
            if let Err(e) = self.apply_reset(peer) {
                tracing::warn!(peer, error = %e, "peer reset failed");
                return false;
            }
            return true;
        }
        self.stats.drop(DropReason::ResetPending);
        false
    }

    /// The peer lost its store: restart both streams with its new session.
    fn apply_reset(&mut self, peer: u32) -> Result<(), CoreError> {
        let committed = self.committed_next(peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        let Some(new_epoch) = p.pending_epoch else {
            return Ok(());
        };
        self.store
            .reset_peer(peer, new_epoch, OutboundOnReset::Keep)?;
        let old_epoch = p.epoch;
        p.epoch = new_epoch;
        p.pending_epoch = None;
        for (_, r) in p.recv.reassembly.drain() {
            self.reassembly_bytes = self.reassembly_bytes.saturating_sub(r.msg_len as usize);
            self.store.abort_inbound(r.slot);
        }
        p.recv = RecvState::new(0);
        p.send.restart();
        p.hb_pending = true;
        let resent = p.send.base..committed;
        self.stats.peer_resets += 1;
        tracing::info!(peer, old_epoch, new_epoch, ?resent, "peer reset");
        self.push_event(Event::PeerReset {
            peer,
            old_epoch,
            new_epoch,
            resent,
        });
        Ok(())
    }

    fn on_data(&mut self, now: Instant, peer: u32, f: &DataFrame<'_>) {
        let window = u64::from(self.cfg.recv_window_msgs);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let r = &mut p.recv;
        if r.has(f.seq) {
            // Already persisted: the ack was lost or is late. Ack again.
            r.ack_pending = true;
            return self.stats.drop(DropReason::Duplicate);
        }
        if f.seq > r.consumed + window {
            return self.stats.drop(DropReason::BeyondWindow);
        }
        if f.is_whole() {
            // The store checks the payload against its checksum before it
            // takes a slot, so a corrupt message changes nothing.
            let stored = self
                .store
                .put_inbound_checked(peer, f.seq, f.payload, f.msg_crc);
            if let Err(e) = stored {
                return self.stats.drop(store_drop_reason(&e));
            }
        } else if !self.on_fragment(now, peer, f) {
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let r = &mut p.recv;
        r.insert(f.seq);
        r.ack_pending = true;
        r.unacked_since.get_or_insert(now);
        self.stats.messages_received += 1;
        if self.durable {
            self.unsynced = true;
        }
    }

    /// Writes one fragment into its message's slot; returns whether the
    /// message is now complete and persisted.
    fn on_fragment(&mut self, now: Instant, peer: u32, f: &DataFrame<'_>) -> bool {
        let starting = self
            .peers
            .get(&peer)
            .is_some_and(|p| !p.recv.reassembly.contains_key(&f.seq));
        if starting {
            if !self.reassembly_room(peer, f.msg_len) {
                // Make room from assemblies that stopped progressing (a
                // sender that went away, or a hostile one), then try again.
                self.evict_idle_reassemblies(now);
                if !self.reassembly_room(peer, f.msg_len) {
                    self.stats.drop(DropReason::NoSpace);
                    return false;
                }
            }
            let slot = match self.store.begin_inbound(peer, f.seq, f.msg_len, f.msg_crc) {
                Ok(s) => s,
                Err(e) => {
                    self.stats.drop(store_drop_reason(&e));
                    return false;
                }
            };
            self.reassembly_bytes += f.msg_len as usize;
            if let Some(p) = self.peers.get_mut(&peer) {
                let asm = Reassembly::new(slot, f.msg_len, f.msg_crc, now);
                p.recv.reassembly.insert(f.seq, asm);
            }
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let r = &mut p.recv;
        let Some(asm) = r.reassembly.get_mut(&f.seq) else {
            return false;
        };
        if asm.msg_len != f.msg_len || asm.crc != f.msg_crc {
            self.stats.drop(DropReason::CorruptMessage);
            return false;
        }
        if let Err(e) = self.store.write_inbound(&asm.slot, f.offset, f.payload) {
            self.stats.drop(store_drop_reason(&e));
            return false;
        }
        if !asm.add(f.offset, f.payload.len() as u32, now) {
            self.stats.drop(DropReason::Duplicate);
            return false;
        }
        // Report progress (or the gap) so the sender can pace and resume.
        r.ack_pending = true;
        if !asm.is_complete() {
            return false;
        }
        let Some(asm) = r.reassembly.remove(&f.seq) else {
            return false;
        };
        self.reassembly_bytes = self.reassembly_bytes.saturating_sub(asm.msg_len as usize);
        if let Err(e) = self.store.commit_inbound(asm.slot) {
            self.stats.drop(store_drop_reason(&e));
            return false;
        }
        true
    }

    /// Whether a new message of `len` bytes from `peer` may start assembling.
    fn reassembly_room(&self, peer: u32, len: u32) -> bool {
        let per_peer = self.peers.get(&peer).map_or(0, |p| p.recv.reassembly.len());
        per_peer < self.cfg.max_reassemblies_per_peer
            && self.reassembly_bytes + len as usize <= self.cfg.max_reassembly_bytes
    }

    /// Aborts every half-assembled message with no new bytes for
    /// [`REASSEMBLY_IDLE`]; the sender, if still there, starts it again.
    fn evict_idle_reassemblies(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            let idle: Vec<u64> = p
                .recv
                .reassembly
                .iter()
                .filter(|(_, a)| now.saturating_duration_since(a.last_progress) >= REASSEMBLY_IDLE)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in idle {
                if let Some(a) = p.recv.reassembly.remove(&seq) {
                    self.reassembly_bytes =
                        self.reassembly_bytes.saturating_sub(a.msg_len as usize);
                    self.store.abort_inbound(a.slot);
                }
            }
        }
    }

    fn on_ack(&mut self, now: Instant, peer: u32, a: &AckFrame<'_>) {
        let committed = self.committed_next(peer);
        // An ack may name only seqs this node committed.
        let bogus = a.cumulative >= committed || a.sacks.iter().any(|r| r.last >= committed);
        if bogus {
            return self.stats.drop(DropReason::BogusAck);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let s = &mut p.send;
        let mut acked_msgs = 0u64;
        let mut acked_bytes = 0usize;
        let mut newest_sample: Option<Instant> = None;
        let mut progressed = false;
        if a.cumulative >= s.base {
            let (m, b, sample) = s.ack_through(a.cumulative);
            acked_msgs += m;
            acked_bytes += b;
            newest_sample = newest_sample.max(sample);
            progressed = true;
            if let Err(e) = self.store.release_outbound_through(peer, a.cumulative) {
                tracing::warn!(peer, error = %e, "release failed");
            }
        }
        for r in a.sacks.iter() {
            let mut seq = r.first.max(s.base);
            while seq <= r.last {
                if let Some((len, sample)) = s.ack_one(seq) {
                    acked_msgs += 1;
                    acked_bytes += len;
                    newest_sample = newest_sample.max(sample);
                    progressed = true;
                    if let Err(e) = self.store.release_outbound(peer, seq) {
                        tracing::warn!(peer, error = %e, "release failed");
                    }
                } else if seq >= s.next_new() {
                    // Sent before a restart: the peer has it, free it now.
                    let _ = self.store.release_outbound(peer, seq);
                }
                seq += 1;
            }
        }
        // Flow control: the window only ever moves forward.
        s.peer_limit = s
            .peer_limit
            .max(a.cumulative.saturating_add(u64::from(a.window_msgs)));
        s.peer_window_bytes = a.window_bytes as usize;
        if let Some(sent_at) = newest_sample {
            let rtt = now.saturating_duration_since(sent_at);
            let delay = Duration::from_micros(u64::from(a.ack_delay_us));
            s.rtt.sample(if rtt > delay { rtt - delay } else { rtt });
        }
        if acked_bytes > 0 {
            s.cc.on_ack(acked_bytes);
        }
        if progressed {
            s.backoff = 0;
        }
        if let Some(first_lost) = s.detect_losses(now) {
            let next = s.next_new();
            s.cc.on_loss(first_lost, next);
        }
        if progressed {
            s.rearm(now);
        }
        self.stats.messages_acked += acked_msgs;
    }

    fn on_frag_ack(&mut self, now: Instant, peer: u32, seq: u64, received: u32) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let delta = p.send.fragment_progress(seq, received);
        if delta > 0 {
            p.send.cc.on_ack(delta as usize);
            p.send.backoff = 0;
            p.send.rearm(now);
        }
    }

    fn on_heartbeat(&mut self, now: Instant, peer: u32, hb: &HeartbeatFrame) {
        let committed = self.committed_next(peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.peer_timestamp = p.peer_timestamp.max(hb.timestamp_us);
        if hb.reply_requested {
            p.hb_pending = true;
        }
        if hb.echo_us != 0 && !p.send.rtt.has_sample() {
            let sent = self.start + Duration::from_micros(hb.echo_us - 1);
            p.send.rtt.sample(now.saturating_duration_since(sent));
        }
        // The sender freed everything below first_pending: stop waiting for it.
        let through = hb.first_pending.saturating_sub(1);
        if through > p.recv.cum && through <= p.recv.consumed + u64::from(self.cfg.recv_window_msgs)
        {
            if let Err(e) = self.store.skip_inbound_through(peer, through) {
                tracing::warn!(peer, error = %e, "cannot skip inbound");
            } else {
                p.recv.skip_through(through);
                p.recv.ack_pending = true;
            }
        }
        // It has something this node lacks: ack now so it learns our state.
        if hb.next_seq > p.recv.cum + 1 {
            p.recv.ack_pending = true;
        }
        // `expected` is a cumulative ack in disguise.
        let cum = hb.expected.saturating_sub(1);
        if cum >= p.send.base && cum < committed {
            let ack = AckFrame {
                cumulative: cum,
                ack_delay_us: 0,
                window_msgs: 0,
                window_bytes: u32::try_from(p.send.peer_window_bytes).unwrap_or(u32::MAX),
                sacks: SackRanges::Native(&[]),
            };
            self.on_ack(now, peer, &ack);
        }
    }

    // ------------------------------------------------------------------
    // Group commit and delivery
    // ------------------------------------------------------------------

    /// Group commit: in [`Durability::Sync`] mode makes everything persisted
    /// so far durable (one sync for the whole batch). Call once per loop
    /// iteration after handling received datagrams; until it succeeds, the
    /// core acknowledges, sends and delivers nothing new. No-op in
    /// [`Durability::Process`] mode.
    pub fn sync(&mut self) -> Result<(), CoreError> {
        if !self.durable {
            return Ok(());
        }
        self.store.sync()?;
        self.unsynced = false;
        self.note_synced();
        Ok(())
    }

    fn note_synced(&mut self) {
        if !self.durable {
            return;
        }
        for peer in self.store.peers() {
            if let Some((_, next)) = self.store.outbound_pending(peer) {
                self.synced_next.insert(peer, next);
            }
        }
    }

    /// Hands up to `max` persisted messages to `f`, in order per peer, and
    /// consumes each after `f` returns (so a crash inside `f` redelivers that
    /// one message on restart). Returns how many were delivered.
    pub fn deliver(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<usize, CoreError> {
        if self.unsynced {
            return Ok(0);
        }
        let mut delivered = 0;
        let n = self.order.len();
        // Start one peer further each call, so a small `max` serves every
        // peer in turn rather than the first ones only.
        self.deliver_rr = if n == 0 { 0 } else { (self.deliver_rr + 1) % n };
        for i in 0..n {
            let peer = self.order[(self.deliver_rr + i) % n];
            while let Some(p) = self.peers.get(&peer) {
                if p.recv.consumed >= p.recv.cum || delivered >= max {
                    break;
                }
                let seq = p.recv.consumed + 1;
                match self.store.inbound_message(peer, seq) {
                    Some(m) => {
                        if crc32c::crc32c(m.payload()) != m.crc() {
                            return Err(CoreError::CorruptDelivery { peer, seq });
                        }
                        f(Delivery {
                            peer,
                            seq,
                            payload: m.payload(),
                        });
                    }
                    None => {
                        // Skipped (the sender no longer holds it): nothing to deliver.
                        tracing::warn!(peer, seq, "persisted message missing");
                    }
                }
                self.store.consume_inbound(peer, seq).or_else(|e| match e {
                    StoreError::BadSeq { .. } => self.store.skip_inbound_through(peer, seq),
                    other => Err(other),
                })?;
                let window = self.cfg.recv_window_msgs;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.recv.consumed = seq;
                    // Window reopened well past what was advertised: tell the sender.
                    if p.recv.advertised_window < window / 2 {
                        p.recv.ack_pending = true;
                    }
                }
                delivered += 1;
                self.stats.messages_delivered += 1;
            }
            let pending_reset = self
                .peers
                .get(&peer)
                .is_some_and(|p| p.pending_epoch.is_some() && p.recv.deliverable() == 0);
            if pending_reset {
                self.apply_reset(peer)?;
            }
        }
        Ok(delivered)
    }

    // ------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------

    /// When [`Core::handle_timeout`] should next be called (or
    /// [`Core::poll_transmit`], if something is ready to go now).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.replies.is_empty() {
            at(self.start);
        }
        for p in self.peers.values() {
            if let Some(t) = p.send.rto_at {
                at(t);
            }
            if let Some(t) = p.probe_at {
                at(t);
            }
            if p.recv.ack_pending || p.hb_pending || !p.send.retransmit.is_empty() {
                at(self.start);
            }
            let committed = self.committed_next(p.id);
            if p.touched || p.send.base < committed || p.last_heard.is_some() {
                at(p.hb_at);
            }
        }
        next
    }

    /// Runs the timers that are due at `now`: retransmission timeouts,
    /// heartbeats and liveness.
    pub fn handle_timeout(&mut self, now: Instant) {
        let since_start = now.saturating_duration_since(self.start);
        for i in 0..self.order.len() {
            let peer = self.order[i];
            let committed = self.committed_next(peer);
            let send_limit = self.send_limit(peer);
            let cfg = &self.cfg;
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.send.rto_at.is_some_and(|t| t <= now) {
                p.send.on_timeout(now);
                self.stats.timeouts += 1;
                tracing::debug!(peer, backoff = p.send.backoff, "retransmission timeout");
            }
            // Flow window closed with nothing in flight: the ack that would
            // reopen it may be lost, so ask for one at the RTO.
            let blocked = p.epoch != 0
                && p.send.in_flight_bytes == 0
                && p.send.retransmit.is_empty()
                && p.send.next_new() < send_limit
                && p.send.next_new() > p.send.peer_limit;
            match (blocked, p.probe_at) {
                (false, _) => p.probe_at = None,
                (true, None) => p.probe_at = Some(now + p.send.rtt.rto()),
                (true, Some(t)) if t <= now => {
                    p.hb_pending = true;
                    p.hb_reply_requested = true;
                    p.probe_at = Some(now + p.send.rtt.rto_backoff(p.send.backoff));
                }
                (true, Some(_)) => {}
            }
            if p.hb_at <= now {
                if p.engaged(now, cfg, committed) {
                    p.hb_pending = true;
                    if p.epoch == 0 || p.touched {
                        p.hb_reply_requested = true;
                    }
                }
                // An unreachable peer is probed ever more slowly (up to 8x).
                if p.state == PeerState::Unreachable {
                    p.hb_interval = (p.hb_interval * 2).min(cfg.heartbeat_interval * 8);
                }
                // Until the peer's epoch is known, probe at the RTO rather than the heartbeat pace.
                let interval = if p.epoch == 0 {
                    p.hb_interval.min(p.send.rtt.rto())
                } else {
                    p.hb_interval
                };
                p.hb_at = now + interval;
            }
            let silent = p
                .last_heard
                .is_none_or(|t| now.saturating_duration_since(t) >= cfg.unreachable_after);
            let waiting = p.touched || p.send.base < committed;
            let grace_over = p.last_heard.is_some() || since_start >= cfg.unreachable_after;
            if silent && waiting && grace_over && p.state != PeerState::Unreachable {
                p.state = PeerState::Unreachable;
                // It may have moved: ask the resolver again.
                p.addr = None;
                tracing::debug!(peer, "peer unreachable");
                if self.events.len() >= MAX_EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(Event::PeerState {
                    peer,
                    state: PeerState::Unreachable,
                });
            }
        }
    }

    // ------------------------------------------------------------------
    // Output
    // ------------------------------------------------------------------

    /// Writes the next datagram(s) to send into `buf` (at least `mtu` bytes;
    /// room for `max_segments` datagrams to let several go out at once).
    /// Call until it returns `None` after handling input, after
    /// [`Core::sync`] and [`Core::deliver`], and after timeouts.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.unsynced || buf.len() < self.cfg.mtu {
            return None;
        }
        if let Some(r) = self.replies.pop_front() {
            return self.write_reply(&r, buf);
        }
        self.discover_peers(now);
        let n = self.order.len();
        for i in 0..n {
            let idx = (self.rr + i) % n;
            let peer = self.order[idx];
            if !self.wants_to_send(peer) {
                continue;
            }
            let Some(dst) = self.address(peer) else {
                continue;
            };
            if let Some(t) = self.write_peer(now, peer, dst, buf) {
                // Stay with this peer while it has more; the next call moves on
                // once it is drained.
                self.rr = idx;
                return Some(t);
            }
        }
        None
    }

    /// Creates state for peers that have outbound messages but no state yet.
    fn discover_peers(&mut self, now: Instant) {
        if self.store.peer_count() == self.peers.len() {
            return;
        }
        for peer in self.store.peers() {
            if !self.peers.contains_key(&peer) {
                self.peer_entry(peer, now);
            }
        }
    }

    fn address(&mut self, peer: u32) -> Option<SocketAddr> {
        let p = self.peers.get_mut(&peer)?;
        if p.addr.is_none() {
            p.addr = self.resolver.resolve(peer);
        }
        p.addr
    }

    fn wants_to_send(&self, peer: u32) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        if p.hb_pending {
            return true;
        }
        if p.epoch == 0 || p.pending_epoch.is_some() {
            return false;
        }
        if p.recv.ack_pending || !p.send.retransmit.is_empty() || p.send.frag.is_some() {
            return true;
        }
        let limit = self.send_limit(peer);
        p.send.next_new() < limit && p.send.window_allows(0)
    }

    /// Seqs below this exist (and, in Sync mode, are durable).
    fn send_limit(&self, peer: u32) -> u64 {
        if self.durable {
            self.synced_next.get(&peer).copied().unwrap_or(1)
        } else {
            self.committed_next(peer)
        }
    }

    fn write_reply(&mut self, r: &Reply, buf: &mut [u8]) -> Option<Transmit> {
        let mtu = self.cfg.mtu;
        let mut w = DatagramWriter::new(&mut buf[..mtu], &r.header).ok()?;
        let pushed = match &r.frame {
            ReplyFrame::Heartbeat(hb) => w.push_heartbeat(hb),
            ReplyFrame::Reset(rs) => w.push_reset(rs),
        };
        pushed.ok()?;
        let len = w.finish();
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += len as u64;
        Some(Transmit {
            dst: r.to,
            len,
            segment_size: None,
        })
    }

    /// Writes up to `max_segments` datagrams for `peer`.
    fn write_peer(
        &mut self,
        now: Instant,
        peer: u32,
        dst: SocketAddr,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let mtu = self.cfg.mtu;
        let mut total = 0;
        let mut seg = 0;
        let mut segments = 0;
        while segments < self.cfg.max_segments {
            let limit = if segments == 0 { mtu } else { seg };
            if total + limit > buf.len() {
                break;
            }
            let (len, full) = self.write_datagram(now, peer, &mut buf[total..total + limit]);
            if len == 0 {
                break;
            }
            segments += 1;
            total += len;
            if segments == 1 {
                seg = len;
            }
            // Only full datagrams of equal size can be followed by more.
            if !full || len < seg {
                break;
            }
        }
        if segments == 0 {
            return None;
        }
        self.stats.datagrams_sent += segments as u64;
        self.stats.bytes_sent += total as u64;
        Some(Transmit {
            dst,
            len: total,
            segment_size: (segments > 1).then_some(seg),
        })
    }

    /// Writes one datagram for `peer`; returns its length (0: nothing to
    /// send) and whether it stopped because it was full.
    fn write_datagram(&mut self, now: Instant, peer: u32, buf: &mut [u8]) -> (usize, bool) {
        let ts = self.timestamp(now);
        let send_limit = self.send_limit(peer);
        let window_msgs = self.cfg.recv_window_msgs;
        let (used, cap) = self.store.usage();
        let free_bytes = u32::try_from(cap.saturating_sub(used)).unwrap_or(u32::MAX);
        let Core {
            peers,
            store,
            stats,
            id,
            epoch,
            ..
        } = self;
        let Some(p) = peers.get_mut(&peer) else {
            return (0, false);
        };
        let header = HeaderFields {
            src: *id,
            dst: peer,
            src_epoch: *epoch,
            dst_epoch: p.epoch,
            auth: false,
        };
        let Ok(mut w) = DatagramWriter::new(buf, &header) else {
            return (0, false);
        };
        let mut full = false;
        let streams_open = p.epoch != 0 && p.pending_epoch.is_none();
        if streams_open && p.recv.ack_pending {
            let mut ranges = [SackRange { first: 0, last: 0 }; MAX_SACK_RANGES];
            let n = p.recv.sack_ranges(&mut ranges);
            let in_window = p.recv.cum - p.recv.consumed;
            let window = (u64::from(window_msgs)).saturating_sub(in_window) as u32;
            let delay = p
                .recv
                .unacked_since
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u32);
            let ack = AckFrame {
                cumulative: p.recv.cum,
                ack_delay_us: delay,
                window_msgs: window,
                window_bytes: free_bytes,
                sacks: SackRanges::Native(&ranges[..n]),
            };
            if w.push_ack(&ack).is_ok() {
                p.recv.ack_pending = false;
                p.recv.unacked_since = None;
                p.recv.advertised_window = window;
            }
            for (&seq, asm) in p.recv.reassembly.iter_mut() {
                let received = asm.contiguous();
                if asm.report_due && w.push_frag_ack(&FragAckFrame { seq, received }).is_ok() {
                    asm.report_due = false;
                }
            }
        }
        if p.hb_pending {
            let hb = HeartbeatFrame {
                reply_requested: p.hb_reply_requested || p.epoch == 0,
                next_seq: send_limit.max(p.send.base),
                first_pending: p.send.base,
                expected: p.recv.cum + 1,
                timestamp_us: ts,
                echo_us: p.peer_timestamp,
            };
            if w.push_heartbeat(&hb).is_ok() {
                p.hb_pending = false;
                p.hb_reply_requested = false;
            }
        }
        if streams_open {
            let rto = p.send.rtt.rto_backoff(p.send.backoff);
            // 1. A fragmented message in progress.
            let frag_window = p.send.cc.window().max(FRAGMENT_WINDOW_FLOOR);
            if let Some(fc) = p.send.frag
                && p.send
                    .fragment_window_open(fc.seq, fc.next_offset, frag_window)
            {
                match store.outbound_message(peer, fc.seq) {
                    Some(m) => match write_message(&mut w, &m, fc.next_offset) {
                        Written::Done => {
                            p.send.frag = None;
                            p.send.fragment_sent(fc.seq, now, rto);
                        }
                        Written::Partial(off) => {
                            p.send.frag = Some(FragCursor {
                                seq: fc.seq,
                                next_offset: off,
                            });
                            p.send.fragment_sent(fc.seq, now, rto);
                            full = true;
                        }
                        Written::NoRoom => full = true,
                    },
                    None => p.send.frag = None,
                }
            }
            // 2. Retransmissions.
            while !full && p.send.frag.is_none() {
                let Some(&seq) = p.send.retransmit.front() else {
                    break;
                };
                // Resume where the peer's partial copy stops (from the start
                // if it claims all of it: its copy failed the checksum).
                let resume_at = match p.send.entry_mut(seq) {
                    Some(e) if e.state == SentState::Lost && e.peer_has < e.len => Some(e.peer_has),
                    Some(e) if e.state == SentState::Lost => Some(0),
                    _ => None,
                };
                let msg = resume_at.and_then(|_| store.outbound_message(peer, seq));
                let (Some(m), Some(start)) = (msg, resume_at) else {
                    p.send.retransmit.pop_front();
                    continue;
                };
                match write_message(&mut w, &m, start) {
                    Written::NoRoom => full = true,
                    written => {
                        p.send.retransmit.pop_front();
                        p.send.resent(seq, now, rto);
                        stats.messages_retransmitted += 1;
                        if let Written::Partial(off) = written {
                            p.send.frag = Some(FragCursor {
                                seq,
                                next_offset: off,
                            });
                            full = true;
                        }
                    }
                }
            }
            // 3. New messages, as far as the windows allow.
            while !full && p.send.frag.is_none() {
                let seq = p.send.next_new();
                if seq >= send_limit {
                    break;
                }
                let Some(m) = store.outbound_message(peer, seq) else {
                    // Released already (acknowledged before a restart).
                    p.send.push_done(now);
                    continue;
                };
                if !p.send.window_allows(m.payload().len()) {
                    break;
                }
                match write_message(&mut w, &m, 0) {
                    Written::NoRoom => full = true,
                    written => {
                        p.send.push_sent(now, m.payload().len() as u32, rto);
                        stats.messages_sent += 1;
                        if let Written::Partial(off) = written {
                            p.send.frag = Some(FragCursor {
                                seq,
                                next_offset: off,
                            });
                            full = true;
                        }
                    }
                }
            }
        }
        if w.is_empty() {
            return (0, false);
        }
        (w.finish(), full)
    }
}

fn store_drop_reason(e: &StoreError) -> DropReason {
    match e {
        StoreError::Full { .. } | StoreError::NoSpace | StoreError::TooManyPeers { .. } => {
            DropReason::NoSpace
        }
        StoreError::BadSeq { .. } => DropReason::Duplicate,
        _ => DropReason::CorruptMessage,
    }
}

enum Written {
    /// The message (or its last fragment) is in the datagram.
    Done,
    /// A fragment went in; the message continues at this offset.
    Partial(u32),
    /// Nothing went in: the datagram is too full.
    NoRoom,
}

/// Writes message `m` from `offset` into `w`: whole if it fits, else as
/// many fragments as this datagram takes.
fn write_message(w: &mut DatagramWriter<'_>, m: &MessageRef<'_>, offset: u32) -> Written {
    let payload = m.payload();
    let len = payload.len();
    let cap = w.data_capacity();
    let start = offset as usize;
    if start == 0 && len <= cap {
        let frame = DataFrame {
            seq: m.seq(),
            msg_len: len as u32,
            offset: 0,
            msg_crc: m.crc(),
            payload,
        };
        return match w.push_data(&frame) {
            Ok(()) => Written::Done,
            Err(_) => Written::NoRoom,
        };
    }
    // A message that would fit an empty datagram waits for the next one
    // rather than being split; so does a tiny tail of space.
    if !w.is_empty() && (cap < MIN_FRAGMENT || (start == 0 && fits_alone(w, len))) {
        return Written::NoRoom;
    }
    if cap == 0 {
        return Written::NoRoom;
    }
    let end = (start + cap).min(len);
    let frame = DataFrame {
        seq: m.seq(),
        msg_len: len as u32,
        offset,
        msg_crc: m.crc(),
        payload: &payload[start..end],
    };
    match w.push_data(&frame) {
        Ok(()) if end == len => Written::Done,
        Ok(()) => Written::Partial(end as u32),
        Err(EncodeError::Full) => Written::NoRoom,
        Err(EncodeError::Invalid(_)) => Written::NoRoom,
    }
}

/// Whether a message of `len` bytes fits an otherwise empty datagram of this writer's size.
fn fits_alone(w: &DatagramWriter<'_>, len: usize) -> bool {
    len + DATA_OVERHEAD + HEADER_LEN <= w.limit()
}
