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

mod auth;
mod call;
mod config;
mod congestion;
mod delivery;
mod event;
mod handshake;
mod inbound;
mod input;
mod output;
mod peer;
mod recv;
mod resolver;
mod rtt;
mod send;
mod stats;
#[doc(hidden)]
pub mod testing;
mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hrpc_store::{Durability, OutboundProducer, Store, StoreError};
use hrpc_wire::HeaderFields;

use handshake::Secrets;
use rustc_hash::FxHashMap;

pub use auth::ClusterKey;
pub(crate) use call::write_call;
pub use call::{CALL_ENVELOPE_LEN, CallId, MessageKind, unix_ms_now};
pub(crate) use config::number_in as config_number_in;
pub use config::{ConfigError, CoreConfig, MAX_CONFIG_DURATION, MAX_CWND, MIN_TIMER};
pub use event::{Event, PeerState};
pub use resolver::{NoResolver, Resolver, StaticResolver};
pub use stats::{DROP_REASONS, DropReason, PeerInfo, Stats};

use peer::Peer;

/// Errors the core returns. Bad input from the network is never an error:
/// it is dropped and counted in [`Stats`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The store failed (disk full, sync failure, …); see the source.
    #[error("store failed")]
    Store(#[from] StoreError),
    /// The next message to deliver is not in the store although it was
    /// recorded as persisted (an internal inconsistency; nothing is skipped).
    #[error("inbound message {seq} from peer {peer} is missing from the store")]
    MissingDelivery {
        /// Peer node id.
        peer: u32,
        /// Message seq.
        seq: u64,
    },
    /// The configuration is out of bounds or inconsistent.
    #[error("bad configuration")]
    Config(#[source] ConfigError),
    /// The operating system's random source failed (needed for nonces when enciphering).
    #[error("no randomness from the operating system")]
    Entropy(#[source] std::io::Error),
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
    /// The message, borrowed from the store until the handler returns (for a request or a
    /// response: what the caller or callee wrote, without the call envelope).
    pub payload: &'a [u8],
    /// A plain message, a request, a response, or a call's timeout.
    pub kind: MessageKind,
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
/// Highest seq the receive side accepts from the network (in a DATA frame, a
/// LOST range or a heartbeat's skip point): far beyond any real stream, and
/// low enough that `seq + window` never overflows.
const MAX_SEQ: u64 = 1 << 62;
/// First wait before asking the resolver again about a peer it did not know.
const RESOLVE_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between two resolver attempts.
const RESOLVE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most events queued before the oldest are dropped.
const MAX_EVENTS: usize = 4096;

/// `now + d` for a timer: never panics. If that instant cannot be represented, a far-future
/// one (or, failing that, `now`) instead; with a validated configuration every timer is at
/// most hours away, so this only guards against arithmetic on a clock near its limit.
#[inline]
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// Where [`later`] saturates: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Sorts inclusive ranges and merges those that overlap or touch.
fn merge_ranges(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Queues an event for [`Core::poll_event`], dropping (and counting) the
/// oldest beyond [`MAX_EVENTS`].
fn queue_event(events: &mut VecDeque<Event>, stats: &mut Stats, e: Event) {
    tracing::debug!(peer = e.peer(), event = ?e, "peer event");
    if events.len() >= MAX_EVENTS {
        events.pop_front();
        stats.events_dropped += 1;
    }
    events.push_back(e);
}

/// An answer sent without creating any per-peer state: a challenge to an unvalidated
/// claimant, or the response to a peer's challenge.
#[derive(Debug, Clone, Copy)]
struct Reply {
    to: SocketAddr,
    header: HeaderFields,
    frame: ReplyFrame,
}

#[derive(Debug, Clone, Copy)]
enum ReplyFrame {
    Challenge(u64),
    Response(u64),
}

/// The protocol state machine of one node. See the [module docs](self).
pub struct Core {
    cfg: CoreConfig,
    store: Store,
    id: u32,
    epoch: u64,
    /// Keys derived from the store's secret epoch: session tokens and cookies.
    secrets: Secrets,
    /// With a cluster key: deciphers enciphered datagrams, and enciphers outgoing ones when
    /// `CoreConfig::encrypt` is on.
    cipher: Option<auth::DatagramCipher>,
    /// Where an enciphered datagram is deciphered before it is parsed.
    scratch: Vec<u8>,
    durable: bool,
    /// Sync mode: something was persisted since the last group commit, so
    /// nothing may be acknowledged, sent or delivered until [`Core::sync`].
    unsynced: bool,
    /// Per peer, the outbound seqs below this existed when the store was
    /// opened: an earlier process may have sent them.
    sent_before: FxHashMap<u32, u64>,
    /// A store failure met where it could not be returned (acknowledgement
    /// processing, transmission); returned by the next [`Core::sync`] or
    /// [`Core::deliver`], so the application sees it.
    fatal: Option<StoreError>,
    resolver: Box<dyn Resolver>,
    peers: FxHashMap<u32, Peer>,
    /// Peer ids in a stable order for round-robin transmission.
    order: Vec<u32>,
    /// Round-robin position for transmission.
    rr: usize,
    /// Round-robin position for delivery.
    deliver_rr: usize,
    /// Calls whose timeout was handed out without being ended (deferred delivery): not
    /// handed again until [`Core::finish_call`] or [`Core::rehand_call`].
    timeouts_handed: std::collections::BTreeSet<u64>,
    /// Calls whose response was handed out by deferred delivery and not yet consumed (call
    /// id → callee): their deadline no longer counts.
    responses_handed: std::collections::BTreeMap<u64, u32>,
    replies: VecDeque<Reply>,
    /// Answers left this second: challenges, responses.
    reply_tokens: [u32; 2],
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
        let cipher = match &cfg.cluster_key {
            Some(key) => Some(auth::DatagramCipher::new(key).map_err(CoreError::Entropy)?),
            None => None,
        };
        let mut core = Core {
            cipher,
            scratch: Vec::new(),
            id: store.node_id(),
            epoch: store.epoch(),
            secrets: Secrets::new(store.epoch(), store.node_id()),
            durable: store.durability() == Durability::Sync,
            unsynced: false,
            fatal: None,
            sent_before: FxHashMap::default(),
            store,
            resolver,
            peers: FxHashMap::default(),
            order: Vec::new(),
            rr: 0,
            deliver_rr: 0,
            timeouts_handed: std::collections::BTreeSet::new(),
            responses_handed: std::collections::BTreeMap::new(),
            replies: VecDeque::new(),
            reply_tokens: [cfg.max_unsolicited_per_sec; 2],
            reply_refill_at: now,
            reassembly_bytes: 0,
            events: VecDeque::new(),
            stats: Stats::default(),
            start: now,
            cfg,
        };
        for peer in core.store.peers() {
            let next = core.committed_next(peer);
            core.sent_before.insert(peer, next);
            core.peer_entry(peer, now);
        }
        // A callee owes this node responses, possibly to an address this node no longer
        // has: speak to it first, so that it learns where to send them.
        for peer in core.store.call_peers() {
            core.touch(peer, now);
        }
        for r in core.store.open_report().lost.clone() {
            core.push_event(Event::OutboundLost {
                peer: r.peer,
                range: r.first..=r.last,
            });
        }
        Ok(core)
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.id
    }

    /// This node's store epoch: a random secret that never goes on the wire (peers see only
    /// [`Core::session_token`]s derived from it).
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

    /// Closes the store to producers ([`Store::close_producers`]): every later commit through
    /// an [`OutboundProducer`] fails with `StoreError::Closed`. The core itself keeps working
    /// (sync, acknowledgements, transmission), for a graceful close.
    pub fn close_producers(&mut self) {
        self.store.close_producers();
    }

    /// Waits, at most `timeout`, until no producer holds a reservation
    /// ([`Store::wait_producers`]); after [`Core::close_producers`], `true` means dropping the
    /// core releases the store at once.
    pub fn wait_producers(&mut self, timeout: Duration) -> bool {
        self.store.wait_producers(timeout)
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Gives up on the messages to `peer` not yet acknowledged with seq ≤
    /// `through`: they are freed from the store, and one gap marker, sent
    /// first, tells the peer they will never come (it reports
    /// [`Event::Lost`] for those it had not received). Returns the range given
    /// up, or `None` if nothing was pending at or below `through`.
    pub fn discard(
        &mut self,
        peer: u32,
        through: u64,
        now: Instant,
    ) -> Result<Option<std::ops::RangeInclusive<u64>>, CoreError> {
        self.take_fatal()?;
        let Some(range) = self.store.discard_outbound(peer, through)? else {
            return Ok(None);
        };
        if let Some(p) = self.peer_entry(peer, now) {
            // Everything unacknowledged goes out again from the marker on; the
            // peer drops what it already holds.
            p.send.restart();
        }
        tracing::info!(peer, ?range, "outbound messages discarded");
        Ok(Some(range))
    }

    /// Checks that the core's view of every peer's receive stream agrees
    /// with the store's (the store is the source of truth; the core keeps an
    /// index of it): the consumed cursor (and the handed one between it and
    /// the last seq held in order), the seqs persisted past it
    /// (messages and gap markers), and the reassembly budget in use. For
    /// tests; `Err` names the first disagreement.
    #[doc(hidden)]
    pub fn check_receive_state(&self) -> Result<(), String> {
        let mut budget = 0usize;
        for (&peer, p) in &self.peers {
            let r = &p.recv;
            if !(r.consumed <= r.handed && r.handed <= r.cum) {
                return Err(format!(
                    "peer {peer}: consumed {} handed {} cum {} out of order",
                    r.consumed, r.handed, r.cum
                ));
            }
            let consumed = self.store.inbound_consumed(peer);
            if consumed != r.consumed {
                return Err(format!(
                    "peer {peer}: consumed {} vs store {consumed}",
                    r.consumed
                ));
            }
            // Compared as merged ranges, so a long gap marker costs nothing.
            let stored = merge_ranges(self.persisted_inbound(peer));
            let mut held = Vec::new();
            if r.cum > r.consumed {
                held.push((r.consumed + 1, r.cum));
            }
            held.extend(r.held_past_gap());
            let core = merge_ranges(held);
            if stored != core {
                return Err(format!(
                    "peer {peer}: persisted seqs differ: store {stored:?}, core {core:?}"
                ));
            }
            budget += r
                .reassembly
                .values()
                .map(|a| a.msg_len as usize)
                .sum::<usize>();
        }
        if budget != self.reassembly_bytes {
            return Err(format!(
                "reassembly budget {} but {budget} bytes are being assembled",
                self.reassembly_bytes
            ));
        }
        Ok(())
    }

    /// The inbound seqs from `peer` the store holds past the consumed
    /// cursor, as ranges: `(seq, seq)` for a message, `(first, last)` for a
    /// gap marker.
    pub(super) fn persisted_inbound(&self, peer: u32) -> Vec<(u64, u64)> {
        self.store
            .inbound_seqs(peer)
            .into_iter()
            .map(|seq| {
                let last = self
                    .store
                    .inbound_message(peer, seq)
                    .and_then(|m| m.lost_through())
                    .unwrap_or(seq);
                (seq, last)
            })
            .collect()
    }

    /// Bytes of half-assembled messages held against `max_reassembly_bytes`.
    pub fn reassembly_bytes(&self) -> usize {
        self.reassembly_bytes
    }

    fn timestamp(&self, now: Instant) -> u64 {
        // +1 so that 0 keeps meaning "no timestamp".
        now.saturating_duration_since(self.start).as_micros() as u64 + 1
    }

    /// Bytes of a datagram left for the header and frames once the authentication trailer
    /// and (when enciphering) the nonce are taken off the MTU.
    fn datagram_room(&self) -> usize {
        let mut room = self.cfg.mtu;
        if self.cfg.cluster_key.is_some() {
            room -= hrpc_wire::AUTH_TAG_LEN;
        }
        if self.cfg.encrypt {
            room -= hrpc_wire::NONCE_LEN;
        }
        room
    }

    fn push_event(&mut self, e: Event) {
        queue_event(&mut self.events, &mut self.stats, e);
    }
}
