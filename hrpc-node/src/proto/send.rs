//! Send side of one peer's stream: what is in flight, what was lost, and
//! how much more the peer and the path allow.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use super::congestion::Congestion;
use super::rtt::RttEstimator;

mod fragments;

/// What became of a message this node has sent at least once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentState {
    /// Sent; counted in flight; awaiting acknowledgement.
    InFlight,
    /// Selectively acknowledged (persisted by the peer, freed here).
    Acked,
    /// Declared lost; queued for retransmission; not counted in flight.
    Lost,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) sent_at: Instant,
    pub(crate) len: u32,
    /// Fragmented messages: every byte below this is written at the peer.
    pub(crate) peer_has: u32,
    /// Bytes this entry counts in [`SendState::in_flight_bytes`] while in flight: its
    /// length, less what the peer reported holding of it (a fragmented message stuck on
    /// one hole weighs the hole, not the whole message).
    pub(crate) flight: u32,
    /// FRAG_ACKs in a row that reported no progress.
    pub(crate) frag_dups: u8,
    pub(crate) transmissions: u32,
    pub(crate) state: SentState,
}

/// FRAG_ACKs in a row without progress after which a fragmented message's missing bytes
/// count as lost (the fast-retransmit threshold of fragments).
pub(crate) const REORDER_THRESHOLD: u64 = 3;

/// Bytes a datagram spends besides a message's payload (header and DATA
/// frame header): a message larger than the MTU less this is fragmented.
const FRAGMENT_MARGIN: usize = hrpc_wire::HEADER_LEN + hrpc_wire::DATA_OVERHEAD;

/// Most entries one ack may scan for losses (bounds work per ack).
const LOSS_SCAN_LIMIT: usize = 4096;

/// Most fragmented messages sent to a peer and not yet acknowledged: half the
/// half-assembled messages a receiver with default limits keeps per peer (256), so a
/// window larger than that (a fast path, or reordering that leaves most long messages
/// waiting for one fragment) does not send fragments the receiver would refuse.
pub(crate) const MAX_FRAGMENTED_OPEN: usize = 128;

/// Most bytes of fragmented messages sent to a peer and not yet acknowledged (but always
/// one message): half of one peer's share of a receiver's default assembly budget.
pub(crate) const MAX_FRAGMENTED_OPEN_BYTES: usize = 16 << 20;

/// Most smoothed RTTs the measured reordering adds to RACK's loss delay.
const MAX_REORDER_RTTS: u32 = 8;

/// An acknowledgement that shows no reordering takes this share off the measured
/// reordering window (1/256: a path that stops reordering is back to the RFC's quarter RTT
/// after about a thousand acks).
const REORDER_DECAY: u32 = 256;

/// Probe timeouts in a row, with no acknowledgement between them, that count as persistent
/// congestion (with backoff: 1 + 2 + 4 probe timeouts of silence).
pub(crate) const PERSISTENT_CONGESTION: u32 = 3;

/// What a probe timeout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutAction {
    /// The oldest messages were queued to go again.
    Probe,
    /// A fragmented message is outstanding: the peer should be asked for its progress (a
    /// heartbeat that requests a reply).
    AskPeer,
    /// Persistent congestion: a probe went, and the window collapsed.
    Persistent,
}

/// A message partly written into datagrams (larger than one datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragCursor {
    pub(crate) seq: u64,
    pub(crate) next_offset: u32,
}

#[derive(Debug)]
pub(crate) struct SendState {
    /// Datagram size: a message longer than this less [`FRAGMENT_MARGIN`] goes in fragments.
    mtu: usize,
    /// Lowest seq not cumulatively acknowledged.
    pub(crate) base: u64,
    /// `sent[i]` is seq `base + i`; every seq below `base + sent.len()` was sent once.
    pub(crate) sent: VecDeque<Sent>,
    /// Seqs declared lost, in the order to resend them.
    pub(crate) retransmit: VecDeque<u64>,
    /// Every transmission (a message, a retransmission, a fragment) as (seq, when), in the
    /// order they went out: RACK walks it from the oldest, so its work per ack is the
    /// messages it declares lost or finds already done, wherever they sit in the window.
    /// A record is stale once its seq was acknowledged, declared lost or sent again.
    send_order: VecDeque<(u64, Instant)>,
    /// `send_order` is rid of its stale records when it grows to this length.
    compact_at: usize,
    /// Sweeps of `send_order` so far.
    #[cfg(test)]
    sweeps: usize,
    /// A fragmented message in the middle of being written.
    pub(crate) frag: Option<FragCursor>,
    /// Fragmented messages: byte ranges `[start, end)` the peer reported
    /// written past its contiguous prefix (`Sent::peer_has`), from its newest
    /// FRAG_ACK. Those bytes are not sent again.
    pub(crate) frag_held: FxHashMap<u64, Vec<(u32, u32)>>,
    /// Fragmented messages: the furthest byte written so far, and when. Bytes past the
    /// peer's newest held range and below this, written less than a loss delay ago, may
    /// still be on their way: a resend of the holes before them does not resend them.
    pub(crate) frag_high: FxHashMap<u64, (u32, Instant)>,
    /// Fragmented messages whose peer reported a prefix short of what this side has
    /// written: that prefix, and when it was first reported. No progress for a loss delay
    /// after that, and the bytes past it count as lost (RACK's reordering window, applied to
    /// fragments: a hole, or a lost last fragment, is found without a probe timeout).
    pub(crate) frag_hole: FxHashMap<u64, (u32, Instant)>,
    /// Whose turn it is to start the next datagram while a fragment stream
    /// runs: the fragments (`true`) or the messages behind them.
    pub(crate) frag_turn: bool,
    pub(crate) in_flight_bytes: usize,
    /// Entries in flight (zero-length messages and gap markers count too, so
    /// the retransmission timer runs for them).
    pub(crate) in_flight: usize,
    /// Fragmented messages sent and not yet acknowledged, and their bytes.
    frag_open: usize,
    frag_open_bytes: usize,
    /// The peer accepts seqs up to here.
    pub(crate) peer_limit: u64,
    /// Payload bytes the peer accepts in flight.
    pub(crate) peer_window_bytes: usize,
    pub(crate) rtt: RttEstimator,
    pub(crate) cc: Congestion,
    /// Consecutive retransmission timeouts.
    pub(crate) backoff: u32,
    pub(crate) rto_at: Option<Instant>,
    /// When a message sent before the newest acknowledged one counts as lost, if no ack
    /// comes first (the RACK timer).
    pub(crate) loss_at: Option<Instant>,
    /// Send time of the most recently sent message that was acknowledged.
    pub(crate) rack_sent_at: Option<Instant>,
    /// The selective-ack ranges of the last acknowledgement applied, as far as this
    /// process had sent them: every seq in them is acknowledged here already, so the next
    /// acknowledgement (which names most of them again) skips them.
    known_sacks: Vec<(u64, u64)>,
    /// The ranges of the acknowledgement being applied (kept to reuse its allocation).
    fresh_sacks: Vec<(u64, u64)>,
    /// `rack_sent_at` as it was before the acknowledgement being applied.
    rack_before_ack: Option<Instant>,
    /// Reordering the acks showed lately: twice the furthest a message was acknowledged
    /// behind the newest one acknowledged before it (in send time). RACK's reordering
    /// window is at least this, within [`MAX_REORDER_RTTS`] smoothed RTTs.
    reorder: Duration,
    /// The acknowledgement being applied showed reordering.
    reorder_seen: bool,
    /// Highest seq acknowledged (cumulatively or selectively).
    pub(crate) largest_acked: u64,
    /// Every seq the peer can have received is below this: sent by this
    /// process, or possibly by an earlier one (committed before this process
    /// opened the store). An acknowledgement beyond it is bogus.
    pub(crate) sent_limit: u64,
}

impl SendState {
    pub(crate) fn new(
        base: u64,
        initial_window: u32,
        mtu: usize,
        rtt: RttEstimator,
        cc: Congestion,
    ) -> Self {
        SendState {
            mtu,
            base,
            sent: VecDeque::new(),
            retransmit: VecDeque::new(),
            send_order: VecDeque::new(),
            compact_at: 64,
            #[cfg(test)]
            sweeps: 0,
            frag: None,
            frag_held: FxHashMap::default(),
            frag_high: FxHashMap::default(),
            frag_hole: FxHashMap::default(),
            frag_turn: false,
            in_flight_bytes: 0,
            in_flight: 0,
            frag_open: 0,
            frag_open_bytes: 0,
            peer_limit: base.saturating_sub(1) + u64::from(initial_window),
            peer_window_bytes: usize::MAX,
            rtt,
            cc,
            backoff: 0,
            rto_at: None,
            loss_at: None,
            rack_sent_at: None,
            known_sacks: Vec::new(),
            fresh_sacks: Vec::new(),
            rack_before_ack: None,
            reorder: Duration::ZERO,
            reorder_seen: false,
            largest_acked: base.saturating_sub(1),
            sent_limit: base,
        }
    }

    /// The next seq never sent.
    pub(crate) fn next_new(&self) -> u64 {
        self.base + self.sent.len() as u64
    }

    /// Whether an acknowledgement may name `seq`: it was sent (now or by an
    /// earlier process).
    pub(crate) fn may_have_sent(&self, seq: u64) -> bool {
        seq < self.sent_limit.max(self.next_new())
    }

    pub(crate) fn entry(&self, seq: u64) -> Option<&Sent> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.sent.get(i)
    }

    pub(crate) fn entry_mut(&mut self, seq: u64) -> Option<&mut Sent> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.sent.get_mut(i)
    }

    /// Whether a new message of `len` bytes may go out now. A fragmented
    /// message being written is paced by its own window (see
    /// `fragment_window_open`), so it does not count here: messages behind it
    /// still go.
    pub(crate) fn window_allows(&self, len: usize) -> bool {
        if self.next_new() > self.peer_limit {
            return false;
        }
        let mut in_flight = self.in_flight_bytes;
        if let Some(fc) = self.frag
            && let Some(e) = self.entry(fc.seq)
            && e.state == SentState::InFlight
        {
            in_flight -= e.flight as usize;
        }
        if in_flight == 0 {
            return true;
        }
        in_flight + len <= self.cc.window().min(self.peer_window_bytes)
    }

    /// Whether a message of `len` bytes goes in fragments (does not fit one datagram).
    pub(crate) fn fragmented(&self, len: u32) -> bool {
        fragmented_at(len, self.mtu)
    }

    /// An RTT sample from an ack that names a message sent once, `rtt` after it went (its
    /// last fragment, for a long one), the peer having held the ack for `ack_delay`: feeds
    /// the RTT estimate and, unless the message was `fragmented`, the congestion
    /// controller's queueing-delay signal. A fragmented message's round trip ends with its
    /// slowest fragment: on a path that reorders, nearly every long message has one held
    /// back. That is reordering, not a queue.
    pub(crate) fn rtt_sample(&mut self, rtt: Duration, ack_delay: Duration, fragmented: bool) {
        self.rtt.sample(rtt, ack_delay);
        if !fragmented
            && let Some(min) = self.rtt.min_rtt()
            && let Some(fresh) = self
                .cc
                .on_rtt(rtt.checked_sub(ack_delay).unwrap_or(rtt).max(min), min)
        {
            self.rtt.reset_min_rtt(fresh);
        }
    }

    /// Whether a new message of `len` bytes may start now as far as fragmented messages go:
    /// one that fits a datagram always may; a fragmented one while fewer than
    /// [`MAX_FRAGMENTED_OPEN`] of them, and at most [`MAX_FRAGMENTED_OPEN_BYTES`] with it, are
    /// unacknowledged (or none is).
    pub(crate) fn fragmented_open_allows(&self, len: usize) -> bool {
        !self.fragmented(u32::try_from(len).unwrap_or(u32::MAX))
            || self.frag_open == 0
            || (self.frag_open < MAX_FRAGMENTED_OPEN
                && self.frag_open_bytes + len <= MAX_FRAGMENTED_OPEN_BYTES)
    }

    /// A message of `len` bytes is acknowledged: if fragmented, it leaves the open count.
    fn close_fragmented(&mut self, len: u32) {
        if self.fragmented(len) {
            self.frag_open = self.frag_open.saturating_sub(1);
            self.frag_open_bytes = self.frag_open_bytes.saturating_sub(len as usize);
        }
    }

    /// Records a first transmission of the next new seq.
    pub(crate) fn push_sent(&mut self, now: Instant, len: u32, rto: Duration) {
        self.sent.push_back(Sent {
            sent_at: now,
            len,
            peer_has: 0,
            flight: len,
            frag_dups: 0,
            transmissions: 1,
            state: SentState::InFlight,
        });
        self.in_flight_bytes += len as usize;
        self.in_flight += 1;
        if self.fragmented(len) {
            self.frag_open += 1;
            self.frag_open_bytes += len as usize;
        }
        self.rto_at.get_or_insert(super::later(now, rto));
        self.record_send(self.next_new() - 1, now);
    }

    /// Notes a transmission of `seq` at `now` for [`SendState::detect_losses`]. Stale
    /// records leave from the front as RACK passes them; should they pile up behind a
    /// message that stays in flight (each fragment of a long message is a record), they are
    /// dropped once the queue has doubled since the last time.
    pub(crate) fn record_send(&mut self, seq: u64, now: Instant) {
        if self.send_order.len() >= self.compact_at {
            let (base, sent) = (self.base, &self.sent);
            self.send_order
                .retain(|&(seq, at)| is_live(base, sent, seq, at));
            // Next time only once the queue has doubled: amortized O(1) per record.
            self.compact_at = (2 * self.send_order.len()).max(2 * self.sent.len() + 64);
            #[cfg(test)]
            {
                self.sweeps += 1;
            }
        }
        self.send_order.push_back((seq, now));
    }

    /// Records a seq that needs no transmission (already released in the store).
    pub(crate) fn push_done(&mut self, now: Instant) {
        self.sent.push_back(Sent {
            sent_at: now,
            len: 0,
            peer_has: 0,
            flight: 0,
            frag_dups: 0,
            transmissions: 0,
            state: SentState::Acked,
        });
    }

    /// Records a retransmission of `seq`: in flight again, counting what the peer lacks
    /// of it (what the retransmission writes).
    pub(crate) fn resent(&mut self, seq: u64, now: Instant, rto: Duration) {
        let held = span(self.held(seq));
        if let Some(e) = self.entry_mut(seq)
            && e.state == SentState::Lost
        {
            e.state = SentState::InFlight;
            e.sent_at = now;
            e.transmissions += 1;
            e.flight = u64::from(e.len.saturating_sub(e.peer_has)).saturating_sub(held) as u32;
            let len = e.flight as usize;
            self.in_flight_bytes += len;
            self.in_flight += 1;
            self.rto_at.get_or_insert(super::later(now, rto));
            self.record_send(seq, now);
        }
    }

    /// Cumulative acknowledgement through `cum`. Returns (messages, bytes)
    /// newly acknowledged.
    pub(crate) fn ack_through(&mut self, cum: u64) -> (u64, usize) {
        let mut msgs = 0;
        let mut bytes = 0;
        while self.base <= cum {
            match self.sent.pop_front() {
                Some(e) => {
                    if e.state != SentState::Acked {
                        self.close_fragmented(e.len);
                        self.note_reordering(e.sent_at, e.transmissions);
                        self.rack_sent_at = self.rack_sent_at.max(Some(e.sent_at));
                        msgs += 1;
                        bytes += e.len as usize;
                        if e.state == SentState::InFlight {
                            self.in_flight_bytes -= e.flight as usize;
                            self.in_flight -= 1;
                        }
                    }
                    self.base += 1;
                }
                None => {
                    // Acknowledged before this process sent it (sent before a restart).
                    self.base = cum + 1;
                    break;
                }
            }
        }
        if self.frag.is_some_and(|f| f.seq <= cum) {
            self.frag = None;
        }
        if !self.frag_high.is_empty() {
            self.frag_high.retain(|&seq, _| seq > cum);
        }
        if !self.frag_hole.is_empty() {
            self.frag_hole.retain(|&seq, _| seq > cum);
        }
        if !self.frag_held.is_empty() {
            self.frag_held.retain(|&seq, _| seq > cum);
        }
        self.largest_acked = self.largest_acked.max(cum);
        (msgs, bytes)
    }

    /// Selective acknowledgement of `seq` (which is `>= base`). Returns the
    /// bytes newly acknowledged, or `None` if it was already acknowledged or
    /// never sent by this process.
    pub(crate) fn ack_one(&mut self, seq: u64) -> Option<usize> {
        let e = self.entry_mut(seq)?;
        if e.state == SentState::Acked {
            return None;
        }
        let was_in_flight = e.state == SentState::InFlight;
        e.state = SentState::Acked;
        let (sent_at, transmissions) = (e.sent_at, e.transmissions);
        let (len, flight) = (e.len as usize, e.flight as usize);
        self.close_fragmented(len as u32);
        self.note_reordering(sent_at, transmissions);
        if was_in_flight {
            self.in_flight_bytes -= flight;
            self.in_flight -= 1;
        }
        if self.frag.is_some_and(|f| f.seq == seq) {
            self.frag = None;
        }
        // Only fragmented messages have entries here: no lookups per selectively acked seq
        // of a stream of small ones.
        if !self.frag_held.is_empty() {
            self.frag_held.remove(&seq);
        }
        if !self.frag_high.is_empty() {
            self.frag_high.remove(&seq);
        }
        if !self.frag_hole.is_empty() {
            self.frag_hole.remove(&seq);
        }
        self.largest_acked = self.largest_acked.max(seq);
        self.rack_sent_at = self.rack_sent_at.max(Some(sent_at));
        Some(len)
    }

    /// Selective acknowledgement of `ranges` (ascending, disjoint). Returns (messages,
    /// bytes) newly acknowledged. Only the parts the last call did not name are walked: an
    /// ack names the same high ranges as the one before it, grown by what arrived since.
    pub(crate) fn ack_ranges(&mut self, ranges: impl Iterator<Item = (u64, u64)>) -> (u64, usize) {
        let known = std::mem::take(&mut self.known_sacks);
        let mut fresh = std::mem::take(&mut self.fresh_sacks);
        fresh.clear();
        let end = self.next_new().saturating_sub(1);
        let (mut msgs, mut bytes) = (0, 0);
        let mut j = 0;
        for (first, last) in ranges {
            let (first, last) = (first.max(self.base), last.min(end));
            if first > last {
                continue;
            }
            let mut seq = first;
            while seq <= last {
                // The next known range that ends at or after `seq`.
                while known.get(j).is_some_and(|&(_, kl)| kl < seq) {
                    j += 1;
                }
                let stop = match known.get(j) {
                    Some(&(kf, kl)) if kf <= seq => {
                        seq = kl.saturating_add(1);
                        continue;
                    }
                    Some(&(kf, _)) => last.min(kf - 1),
                    None => last,
                };
                while seq <= stop {
                    if let Some(len) = self.ack_one(seq) {
                        msgs += 1;
                        bytes += len;
                    }
                    seq += 1;
                }
            }
            fresh.push((first, last));
        }
        self.known_sacks = fresh;
        self.fresh_sacks = known;
        (msgs, bytes)
    }

    /// Call before applying an acknowledgement: reordering is judged against what was
    /// acknowledged before it.
    pub(crate) fn begin_ack(&mut self) {
        self.rack_before_ack = self.rack_sent_at;
        self.reorder_seen = false;
    }

    /// Call after applying an acknowledgement that acknowledged something new: one that
    /// showed no reordering lets the measured reordering window decay.
    pub(crate) fn end_ack(&mut self, newly_acked: bool) {
        if newly_acked && !self.reorder_seen {
            self.reorder -= self.reorder / REORDER_DECAY;
        }
    }

    /// A message sent once is acknowledged now although one sent after it was
    /// acknowledged before (RFC 8985 §6.2): it was reordered by about the difference.
    fn note_reordering(&mut self, sent_at: Instant, transmissions: u32) {
        if transmissions != 1 {
            return;
        }
        if let Some(newest) = self.rack_before_ack
            && newest > sent_at
        {
            self.reorder = self
                .reorder
                .max(newest.saturating_duration_since(sent_at).saturating_mul(2));
            self.reorder_seen = true;
        }
    }

    /// How long after a message was sent, with later ones already acknowledged, it counts as
    /// lost: the smoothed RTT and RACK's reordering window, which is a quarter of it
    /// (RFC 8985) or the reordering measured lately, whichever is larger, at most
    /// [`MAX_REORDER_RTTS`] smoothed RTTs.
    pub(crate) fn loss_delay(&self) -> Duration {
        let srtt = self.rtt.srtt();
        let measured = self.reorder.min(srtt.saturating_mul(MAX_REORDER_RTTS));
        self.rtt.loss_delay().max(srtt.saturating_add(measured))
    }

    /// Declares lost every in-flight message sent before the newest one acknowledged and at
    /// least [`SendState::loss_delay`] ago (RACK, RFC 8985: a reordered datagram
    /// arriving within that window is not lost). Sets `loss_at` to when the next of them
    /// would count as lost if nothing else arrives. Returns the lowest seq declared lost and
    /// the bytes lost as the congestion controller should count them.
    pub(crate) fn detect_losses(&mut self, now: Instant) -> Option<(u64, usize)> {
        self.loss_at = None;
        let holes = self.fragment_holes_due(now);
        let rack = self.rack_losses(now);
        match (holes, rack) {
            (Some((a, x)), Some((b, y))) => Some((a.min(b), x + y)),
            (h, r) => h.or(r),
        }
    }

    /// The RACK part of [`SendState::detect_losses`]: whole messages, oldest transmission
    /// first.
    fn rack_losses(&mut self, now: Instant) -> Option<(u64, usize)> {
        let rack = self.rack_sent_at?;
        let delay = self.loss_delay();
        let mut first: Option<u64> = None;
        let mut lost_bytes = 0;
        let mut congestion_bytes = 0;
        let mut lost = 0;
        while let Some(&(seq, at)) = self.send_order.front() {
            if !is_live(self.base, &self.sent, seq, at) {
                self.send_order.pop_front();
                continue;
            }
            // Every later record went out at or after this one: none of them is older
            // than the newest acknowledged message, or due sooner.
            if at >= rack {
                break;
            }
            let due = super::later(at, delay);
            if due > now {
                // The fragment hole timer may be due sooner.
                self.loss_at = Some(self.loss_at.map_or(due, |t| t.min(due)));
                break;
            }
            self.send_order.pop_front();
            let Some(e) = self.entry_mut(seq) else {
                continue;
            };
            e.state = SentState::Lost;
            lost_bytes += std::mem::take(&mut e.flight) as usize;
            // A fragmented message goes again only where the peer lacks it (from its
            // prefix, skipping what it holds): count one datagram's worth as lost, not
            // the whole message.
            congestion_bytes += (e.len - e.peer_has.min(e.len)).min(self.mtu as u32) as usize;
            lost += 1;
            self.retransmit.push_back(seq);
            first = Some(first.map_or(seq, |f| f.min(seq)));
        }
        self.in_flight_bytes -= lost_bytes;
        self.in_flight -= lost;
        first.map(|f| (f, congestion_bytes))
    }

    /// The probe timer fired (RFC 9002 §6.2): nothing was acknowledged for a probe timeout.
    /// The window stays, and the timer backs off. The first timeout of a fragmented message
    /// asks the peer where it stands instead ([`TimeoutAction::AskPeer`]: its FRAG_ACK
    /// answer, if it shows no progress, resends just the missing bytes); otherwise the oldest
    /// in-flight messages, up to one datagram of `mtu` bytes, go again as a probe. After
    /// [`PERSISTENT_CONGESTION`] timeouts in a row the window collapses. Nothing beyond the
    /// probe is declared lost: a timeout says no acknowledgement came, not that the window
    /// was lost (a paused receiver, a stalled return path). The acknowledgement of a probe
    /// shows what is missing, and RACK declares it lost then.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> TimeoutAction {
        let mtu = self.mtu;
        let first = self.backoff == 0;
        self.backoff = self.backoff.saturating_add(1);
        self.rto_at = None;
        self.loss_at = None;
        let persistent = self.backoff >= PERSISTENT_CONGESTION;
        if first
            && let Some(e) = self
                .sent
                .iter_mut()
                .take(LOSS_SCAN_LIMIT)
                .find(|e| e.state == SentState::InFlight)
            && fragmented_at(e.len, mtu)
        {
            // One more report without progress counts as the third.
            e.frag_dups = (REORDER_THRESHOLD as u8).saturating_sub(1);
            self.rto_at = Some(super::later(now, self.rtt.rto_backoff(self.backoff)));
            return TimeoutAction::AskPeer;
        }
        let mut probe_bytes = 0;
        let mut lost_bytes = 0;
        let mut lost = 0;
        for (seq, e) in (self.base..).zip(self.sent.iter_mut().take(LOSS_SCAN_LIMIT)) {
            if e.state != SentState::InFlight {
                continue;
            }
            if lost > 0 && probe_bytes + e.len as usize > mtu {
                break;
            }
            e.state = SentState::Lost;
            probe_bytes += e.len as usize;
            lost_bytes += std::mem::take(&mut e.flight) as usize;
            lost += 1;
            self.retransmit.push_back(seq);
        }
        self.in_flight_bytes -= lost_bytes;
        self.in_flight -= lost;
        self.frag = None;
        self.frag_high.clear();
        self.frag_hole.clear();
        if persistent {
            self.cc.on_persistent_congestion(self.next_new());
            TimeoutAction::Persistent
        } else {
            TimeoutAction::Probe
        }
    }

    /// Whether a retransmission can go out now: one is queued, and it is not
    /// a message to fragment that waits for the older fragment stream in
    /// progress (which `poll_transmit` would skip).
    pub(crate) fn retransmit_ready(&self) -> bool {
        let Some(&front) = self.retransmit.front() else {
            return false;
        };
        match self.frag {
            Some(fc) if front > fc.seq => self.entry(front).is_none_or(|e| !self.fragmented(e.len)),
            _ => true,
        }
    }

    /// Re-arms the retransmission timer after progress (or clears it when
    /// nothing is in flight).
    pub(crate) fn rearm(&mut self, now: Instant) {
        self.rto_at = (self.in_flight > 0 || self.frag.is_some())
            .then(|| super::later(now, self.rtt.rto_backoff(self.backoff)));
    }

    /// Forgets what was sent: everything unacknowledged goes out again from
    /// `base` (used when the peer lost its store).
    pub(crate) fn restart(&mut self) {
        self.sent.clear();
        self.retransmit.clear();
        self.send_order.clear();
        self.known_sacks.clear();
        self.frag = None;
        self.frag_held.clear();
        self.frag_high.clear();
        self.frag_hole.clear();
        self.in_flight_bytes = 0;
        self.in_flight = 0;
        self.frag_open = 0;
        self.frag_open_bytes = 0;
        self.rto_at = None;
        self.loss_at = None;
        self.rack_sent_at = None;
        self.backoff = 0;
        self.largest_acked = self.base.saturating_sub(1);
    }
}

/// Whether a message of `len` bytes needs fragments in datagrams of `mtu` bytes.
fn fragmented_at(len: u32, mtu: usize) -> bool {
    len as usize + FRAGMENT_MARGIN > mtu
}

/// Bytes covered by byte ranges `[start, end)` (summed as reported: a peer's ranges do not
/// overlap, and a forged overlap only makes the sum too large, which callers clip).
fn span(ranges: &[(u32, u32)]) -> u64 {
    ranges
        .iter()
        .map(|&(a, b)| u64::from(b.saturating_sub(a)))
        .sum()
}

/// Whether a record of [`SendState::send_order`] is the latest transmission of a message
/// still in flight.
fn is_live(base: u64, sent: &VecDeque<Sent>, seq: u64, at: Instant) -> bool {
    seq.checked_sub(base)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| sent.get(i))
        .is_some_and(|e| e.state == SentState::InFlight && e.sent_at == at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn state() -> SendState {
        let ms = Duration::from_millis;
        let rtt = RttEstimator::new(ms(1), ms(10), ms(1000));
        let cc = Congestion::new(1 << 30, 3000, 1 << 30, 100);
        SendState::new(1, 1 << 20, 1472, rtt, cc)
    }

    /// Invariant: a message counts in flight only the bytes the peer has not reported
    /// holding. A 64,000-byte message whose peer holds all but one fragment weighs one
    /// fragment, not the whole message, so it does not shut the window on the messages
    /// behind it while its hole waits; and `in_flight_bytes` stays the sum of what each
    /// entry counts, through acknowledgement, loss and retransmission.
    #[test]
    fn a_message_in_flight_counts_only_what_the_peer_lacks() {
        let ms = Duration::from_millis;
        let rtt = RttEstimator::new(ms(1), ms(10), ms(1000));
        // A 100,000-byte congestion window: one whole large message and a bit.
        let cc = Congestion::new(100_000, 3000, 1 << 30, 100);
        let mut s = SendState::new(1, 1 << 30, 1472, rtt, cc);
        let t0 = Instant::now();
        let rto = ms(100);
        s.push_sent(t0, 64_000, rto); // seq 1, written whole
        assert_eq!(s.in_flight_bytes, 64_000);
        assert!(
            !s.window_allows(64_000),
            "two whole messages exceed the window"
        );
        // The peer holds 0..1400 and 2800..64000: one 1,400-byte hole.
        s.fragment_progress(1, 1400, [(2800, 64_000)].into_iter(), t0 + ms(1));
        assert_eq!(s.in_flight_bytes, 1400, "only the hole is in flight");
        assert!(s.window_allows(64_000), "the next message may go");
        // A report that says less (the peer restarted) never adds to the flight here.
        s.fragment_progress(1, 1400, std::iter::empty(), t0 + ms(2));
        assert_eq!(s.in_flight_bytes, 1400);
        // Declared lost, then resent: what goes again is what the peer lacks.
        s.fragment_progress(1, 1400, [(2800, 64_000)].into_iter(), t0 + ms(3));
        s.fragment_progress(1, 1400, [(2800, 64_000)].into_iter(), t0 + ms(4));
        assert_eq!(s.entry(1).map(|e| e.state), Some(SentState::Lost));
        assert_eq!((s.in_flight, s.in_flight_bytes), (0, 0));
        s.resent(1, t0 + ms(5), rto);
        assert_eq!((s.in_flight, s.in_flight_bytes), (1, 1400));
        s.push_sent(t0 + ms(6), 64_000, rto); // seq 2
        assert_eq!(s.in_flight_bytes, 65_400);
        assert_eq!(s.ack_through(1), (1, 64_000));
        assert_eq!((s.in_flight, s.in_flight_bytes), (1, 64_000));
        assert_eq!(s.ack_one(2), Some(64_000));
        assert_eq!((s.in_flight, s.in_flight_bytes), (0, 0));
    }

    /// Invariant: the round trip of a fragmented message, which ends with its slowest
    /// fragment, never counts as queueing delay. On a path that holds one datagram in twenty
    /// back for 2 ms, nearly every 64 KB message has a fragment held: taking those round
    /// trips for a queue cut the window by 0.7 every round (here: 1 GiB to 1.2 MB in 20).
    #[test]
    fn a_long_message_held_back_is_not_a_queue() {
        let ms = Duration::from_millis;
        // Small messages show the path (100 µs round trips); then 20 rounds of one
        // message of `len` bytes each, acknowledged 2 ms after it went.
        let window_after = |len: u32| {
            let mut s = state();
            for _ in 0..8 {
                s.rtt_sample(Duration::from_micros(100), Duration::ZERO, false);
            }
            let t0 = Instant::now();
            for k in 1..=20u64 {
                s.push_sent(t0, len, ms(100));
                s.rtt_sample(ms(2), Duration::ZERO, s.fragmented(len));
                s.ack_through(k);
                let next = s.next_new();
                s.cc.on_ack(len as usize, k, next);
            }
            s.cc.window()
        };
        let before = state().cc.window();
        // Long messages whose last fragment waited behind a held one: no queue.
        let long = window_after(64_000);
        assert!(
            long >= before,
            "window {long} after 20 rounds, {before} before"
        );
        // The same round trips from messages that fit a datagram are a queue: they cut it.
        assert!(
            window_after(1000) < before,
            "queueing delay still cuts the window"
        );
    }

    /// Invariant: at most [`MAX_FRAGMENTED_OPEN`] fragmented messages, and at most
    /// [`MAX_FRAGMENTED_OPEN_BYTES`] of them (but always one), are sent and not yet
    /// acknowledged: what a receiver with default limits assembles at once. Messages that
    /// fit a datagram are not held back by it.
    #[test]
    fn fragmented_messages_in_flight_stay_within_what_a_receiver_assembles() {
        let rto = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut s = state();
        for _ in 0..MAX_FRAGMENTED_OPEN {
            assert!(s.fragmented_open_allows(64_000));
            s.push_sent(t0, 64_000, rto);
        }
        assert!(
            !s.fragmented_open_allows(64_000),
            "one more would be refused"
        );
        assert!(s.fragmented_open_allows(1000), "a small message still goes");
        s.push_sent(t0, 1000, rto);
        // Acknowledged, selectively or cumulatively, each makes room for one more.
        assert!(s.ack_one(5).is_some());
        assert!(s.fragmented_open_allows(64_000));
        s.push_sent(t0, 64_000, rto);
        assert!(!s.fragmented_open_allows(64_000));
        s.ack_through(2);
        assert!(s.fragmented_open_allows(64_000));
        // Bytes: one message larger than the whole allowance still goes alone.
        let mut b = state();
        assert!(b.fragmented_open_allows(MAX_FRAGMENTED_OPEN_BYTES + 1));
        b.push_sent(t0, (MAX_FRAGMENTED_OPEN_BYTES + 1) as u32, rto);
        assert!(!b.fragmented_open_allows(64_000));
        b.ack_through(1);
        assert!(b.fragmented_open_allows(64_000));
    }

    /// RACK (RFC 8985) declares lost every message in flight that was sent a loss delay
    /// before a message now acknowledged, wherever it sits in a window of any size: a hole
    /// tens of thousands of seqs above the oldest unacknowledged one is found as soon as a
    /// later message is acknowledged, not only once the cumulative ack comes near it.
    #[test]
    fn losses_are_found_anywhere_in_a_large_window() {
        let mut s = state();
        let t0 = Instant::now();
        let rto = Duration::from_millis(100);
        let n = 60_000u64;
        // Seq k goes out at t0 + k µs.
        for k in 1..=n {
            s.push_sent(t0 + Duration::from_micros(k), 100, rto);
        }
        // The peer holds everything but seq 1 (the oldest, still on its way) and seq 50,000.
        for seq in 2..=n {
            if seq != 50_000 {
                assert!(s.ack_one(seq).is_some());
            }
        }
        // A loss delay after the newest send, both are declared lost.
        let now = t0 + Duration::from_micros(n) + s.loss_delay();
        let lost = s.detect_losses(now);
        assert_eq!(lost.map(|l| l.0), Some(1));
        assert_eq!(
            s.entry(50_000).map(|e| e.state),
            Some(SentState::Lost),
            "a hole far above the base is found"
        );
        assert_eq!(
            s.retransmit.iter().copied().collect::<Vec<_>>(),
            [1, 50_000]
        );
        assert_eq!((s.in_flight, s.in_flight_bytes), (0, 0));
        // Its retransmission is judged afresh: not lost until a later-sent message is
        // acknowledged and a loss delay has passed since it went again.
        let resend_at = now + Duration::from_micros(10);
        s.resent(50_000, resend_at, rto);
        s.push_sent(resend_at + Duration::from_micros(1), 100, rto);
        assert!(s.ack_one(n + 1).is_some());
        assert_eq!(s.detect_losses(resend_at + Duration::from_micros(2)), None);
        assert!(
            s.loss_at.is_some(),
            "the RACK timer is armed for the retransmission"
        );
        let due = resend_at + s.loss_delay();
        assert_eq!(s.detect_losses(due).map(|l| l.0), Some(50_000));
    }

    /// Replays a stream of `n` messages sent 5 µs apart over a path with a 1 ms round
    /// trip, on which one message in twenty is held back by up to `max_hold` and
    /// `dropped` never arrives; every loss declared is resent at once. Returns the
    /// messages declared lost in the second half of the run (all but `dropped`'s are
    /// spurious: the original was on its way), and how long after its send `dropped` was
    /// declared lost.
    fn reordered_run(n: u64, max_hold: Duration, dropped: u64) -> (u64, Option<Duration>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let ms = Duration::from_millis;
        let mut s = state();
        s.rtt.sample(ms(1), Duration::ZERO);
        let t0 = Instant::now();
        let rto = ms(100);
        let gap = Duration::from_micros(5);
        let mut rng = StdRng::seed_from_u64(7);
        let mut next_rand = move || rng.random::<u64>();
        // Acks to arrive, as (when, seq): one per copy that reaches the peer.
        let mut arrivals = BinaryHeap::new();
        let mut spurious_late = 0;
        let mut found = None;
        let mut sent = 0u64;
        loop {
            let next_send = (sent < n).then(|| t0 + gap * sent as u32);
            let next_ack = arrivals.peek().map(|Reverse((at, _))| *at);
            let now = match (next_send, next_ack) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next_send == Some(now) {
                s.push_sent(now, 100, rto);
                sent += 1;
                let seq = sent;
                let hold = if next_rand() % 20 == 0 {
                    Duration::from_nanos(next_rand() % max_hold.as_nanos() as u64)
                } else {
                    Duration::ZERO
                };
                if seq != dropped {
                    arrivals.push(Reverse((now + ms(1) + hold, seq)));
                }
            } else if let Some(Reverse((_, seq))) = arrivals.pop() {
                s.begin_ack();
                let newly = s.ack_one(seq).is_some();
                s.end_ack(newly);
            }
            s.detect_losses(now);
            for seq in std::mem::take(&mut s.retransmit) {
                if seq == dropped {
                    found.get_or_insert(now - (t0 + gap * (seq as u32 - 1)));
                } else if seq > n / 2 {
                    spurious_late += 1;
                }
                s.resent(seq, now, rto);
                if seq != dropped {
                    arrivals.push(Reverse((now + ms(1), seq)));
                }
            }
        }
        (spurious_late, found)
    }

    /// RACK's reordering window follows the reordering the acks show (RFC 8985 §6.2, measured
    /// from acknowledgements that come for messages sent before the newest one acknowledged):
    /// on a path that holds one datagram in twenty back by up to three round trips, after a
    /// warm-up almost none of the held messages is declared lost (each would be a spurious
    /// retransmission, and a loss the congestion window pays for), while a message that is
    /// really lost is still found within a bounded time.
    #[test]
    fn the_reordering_window_follows_the_reordering_seen() {
        let ms = Duration::from_millis;
        let n = 40_000;
        let (spurious, found) = reordered_run(n, ms(3), n / 2 + 1000);
        let held = n / 2 / 20;
        assert!(
            spurious * 10 < held,
            "{spurious} of about {held} held messages in the second half declared lost"
        );
        let found = found.expect("the dropped message is declared lost");
        assert!(found <= ms(12), "found after {found:?}");
        // Without reordering the window stays a quarter of the RTT.
        let (spurious, found) = reordered_run(n, Duration::from_nanos(1), n / 2 + 1000);
        assert_eq!(spurious, 0);
        assert!(found.is_some_and(|f| f <= ms(2)), "{found:?}");
    }

    /// `ack_ranges` skips what the last acknowledgement named, and is exactly the per-seq
    /// walk all the same: for random acks (ranges growing, merging, repeating, reaching past
    /// what was sent, with cumulative acks between), both give the same counts and leave
    /// every entry in the same state.
    #[test]
    fn ack_ranges_match_a_walk_of_every_seq() {
        let t0 = Instant::now();
        let rto = Duration::from_millis(100);
        let mut rng = StdRng::seed_from_u64(11);
        let mut next = move |n: u64| rng.random_range(0..n);
        for _ in 0..50 {
            let (mut fast, mut slow) = (state(), state());
            for k in 0..2_000u32 {
                fast.push_sent(t0, 10 + k % 7, rto);
                slow.push_sent(t0, 10 + k % 7, rto);
            }
            for _ in 0..40 {
                for k in 0..next(30) as u32 {
                    fast.push_sent(t0, 10 + k % 7, rto);
                    slow.push_sent(t0, 10 + k % 7, rto);
                }
                if next(5) == 0 {
                    let cum = fast.base + next(50);
                    assert_eq!(fast.ack_through(cum), slow.ack_through(cum));
                }
                // Ascending disjoint ranges above the base, some past what was sent.
                let mut ranges = Vec::new();
                let mut at = if next(2) == 0 {
                    fast.base + 1 + next(20)
                } else {
                    fast.next_new().saturating_sub(250).max(fast.base + 1) + next(20)
                };
                while ranges.len() < 6 && at < fast.next_new() + 100 {
                    let last = at + next(60);
                    ranges.push((at, last));
                    at = last + 2 + next(80);
                }
                let got = fast.ack_ranges(ranges.iter().copied());
                let (mut m, mut b) = (0, 0);
                for &(first, last) in &ranges {
                    for seq in first.max(slow.base)..=last {
                        if let Some(len) = slow.ack_one(seq) {
                            m += 1;
                            b += len;
                        }
                    }
                }
                assert_eq!(got, (m, b), "{ranges:?}");
                let states = |s: &SendState| s.sent.iter().map(|e| e.state).collect::<Vec<_>>();
                assert_eq!(states(&fast), states(&slow));
                assert_eq!(fast.in_flight_bytes, slow.in_flight_bytes);
            }
        }
    }

    /// The loss timer is the earlier of RACK's and the fragment holes': a hole a FRAG_ACK
    /// reported is resent a loss delay after the report even while a whole message waits
    /// for its own, later, RACK deadline (the RACK walk used to overwrite the hole's timer,
    /// leaving the hole to a probe timeout).
    #[test]
    fn the_loss_timer_is_the_earliest_deadline() {
        let us = Duration::from_micros;
        let mut s = state();
        s.rtt.sample(Duration::from_millis(1), Duration::ZERO);
        let t0 = Instant::now();
        let rto = Duration::from_millis(100);
        // Seq 1 is fragmented: 2800 bytes written, the peer holds 1400 of them (a hole).
        s.push_sent(t0, 10_000, rto);
        s.fragment_sent(1, 2800, t0, rto);
        s.fragment_progress(1, 1400, std::iter::empty(), t0 + us(100));
        // Seq 2 goes, then seq 3, which is acknowledged: seq 2 waits for its RACK deadline.
        s.push_sent(t0 + us(200), 100, rto);
        s.push_sent(t0 + us(300), 100, rto);
        // More of seq 1 is written after seq 3.
        s.fragment_sent(1, 5600, t0 + us(400), rto);
        s.begin_ack();
        assert!(s.ack_one(3).is_some());
        s.end_ack(true);
        assert_eq!(s.detect_losses(t0 + us(500)), None);
        // The hole was reported at t0 + 100 µs; seq 2, sent at t0 + 200 µs, is due later.
        assert_eq!(s.loss_at, Some(t0 + us(100) + s.loss_delay()));
    }

    /// Each fragment of a long message is a record of the send order; while the message
    /// stays in flight its stale records are dropped in bulk, so the queue stays within a
    /// small multiple of the window however many fragments go out. Fragments written in one
    /// poll share its instant, so all their records look live and no sweep can shorten the
    /// queue: sweeps then come only each time it has doubled (a sweep on every record made
    /// `pair --size 64000` half as fast).
    #[test]
    fn fragment_records_stay_bounded() {
        let mut s = state();
        let t0 = Instant::now();
        let rto = Duration::from_millis(100);
        s.push_sent(t0, 1 << 30, rto);
        for k in 1..=100_000u32 {
            s.fragment_sent(1, k * 1400, t0 + Duration::from_nanos(u64::from(k)), rto);
            assert!(
                s.send_order.len() <= 2 * s.sent.len() + 64,
                "{}",
                s.send_order.len()
            );
        }
        let (records, sweeps) = (s.send_order.len(), s.sweeps);
        let same = t0 + Duration::from_secs(1);
        for k in 1..=10_000u32 {
            s.fragment_sent(1, k * 1400, same, rto);
        }
        let swept = s.sweeps - sweeps;
        assert!(s.send_order.len() >= records + 10_000 - 64);
        assert!(
            swept <= 10,
            "{swept} sweeps for 10,000 records of one instant"
        );
    }
}
