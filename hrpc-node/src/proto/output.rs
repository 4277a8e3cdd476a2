//! Output: datagrams written for the socket, round-robin over peers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hrpc_store::{MessageRef, Store};
use hrpc_wire::{
    AckFrame, DATA_OVERHEAD, DataFrame, DatagramWriter, EncodeError, FragAckFrame, FragRange,
    FragRanges, HEADER_LEN, HeaderFields, HeartbeatFrame, LostFrame, MAX_FRAG_RANGES,
    MAX_SACK_RANGES, SackRange, SackRanges,
};

use super::send::{FragCursor, SentState};
use super::{
    Core, Event, FRAGMENT_WINDOW_FLOOR, MIN_FRAGMENT, Peer, PeerState, RESOLVE_BACKOFF_MAX,
    RESOLVE_BACKOFF_MIN, Reply, ReplyFrame, Transmit, later, queue_event,
};

impl Core {
    /// Writes the next datagram(s) to send into `buf` (at least `mtu` bytes;
    /// room for `max_segments` datagrams to let several go out at once).
    /// Call until it returns `None` after handling input, after
    /// [`Core::sync`] and [`Core::deliver`], and after timeouts.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.unsynced || buf.len() < self.cfg.mtu {
            return None;
        }
        if !self.durable {
            // Process mode: messages committed since the last sync (by a
            // handler, or another thread) become sendable once their floor is
            // recorded; no flush is involved, so this is cheap.
            if let Err(e) = self.store.sync() {
                self.record_fatal(e);
                return None;
            }
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
            let Some(dst) = self.address(now, peer) else {
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

    /// The peer's address: learned from its datagrams, or asked of the
    /// resolver — at once the first time, then on a backoff while it has
    /// none (so an unknown peer costs no CPU while its messages wait).
    fn address(&mut self, now: Instant, peer: u32) -> Option<SocketAddr> {
        let p = self.peers.get_mut(&peer)?;
        if p.addr.is_some() {
            return p.addr;
        }
        if p.resolve_at.is_some_and(|t| now < t) {
            return None;
        }
        p.addr = self.resolver.resolve(peer);
        if p.addr.is_some() {
            p.resolve_at = None;
            p.resolve_backoff = Duration::ZERO;
            if p.state == PeerState::Unresolved {
                p.state = PeerState::Unknown;
                let e = Event::PeerState {
                    peer,
                    state: PeerState::Unknown,
                };
                queue_event(&mut self.events, &mut self.stats, e);
            }
            return p.addr;
        }
        p.resolve_backoff = (p.resolve_backoff * 2).clamp(RESOLVE_BACKOFF_MIN, RESOLVE_BACKOFF_MAX);
        p.resolve_at = Some(later(now, p.resolve_backoff));
        self.stats.resolve_failures += 1;
        if p.state != PeerState::Unresolved {
            p.state = PeerState::Unresolved;
            tracing::info!(
                peer,
                "no address for peer; retrying the resolver on a backoff"
            );
            let e = Event::PeerState {
                peer,
                state: PeerState::Unresolved,
            };
            queue_event(&mut self.events, &mut self.stats, e);
        }
        None
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
    pub(super) fn send_limit(&self, peer: u32) -> u64 {
        self.store.sendable_next(peer)
    }

    fn write_reply(&mut self, r: &Reply, buf: &mut [u8]) -> Option<Transmit> {
        let mtu = self.cfg.mtu;
        let mut w = if self.cfg.encrypt {
            DatagramWriter::new_encrypted(&mut buf[..mtu], &r.header).ok()?
        } else {
            DatagramWriter::new(&mut buf[..mtu], &r.header).ok()?
        };
        let pushed = match r.frame {
            ReplyFrame::Challenge(c) => w.push_challenge(c),
            ReplyFrame::Response(c) => w.push_response(c),
        };
        pushed.ok()?;
        let len = w.finish();
        if !self.seal(&mut buf[..len]) {
            return None;
        }
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += len as u64;
        Some(Transmit {
            dst: r.to,
            len,
            segment_size: None,
        })
    }

    /// Fills the authentication trailer of a finished datagram (enciphering it first when
    /// `encrypt` is on). False if it could not be sealed (then it must not be sent).
    fn seal(&mut self, datagram: &mut [u8]) -> bool {
        if self.cfg.encrypt {
            return self.cipher.as_mut().is_some_and(|c| c.seal(datagram));
        }
        if let Some(key) = &self.cfg.cluster_key {
            key.seal(datagram);
        }
        true
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
            if !self.seal(&mut buf[total..total + len]) {
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
        let auth = self.cfg.cluster_key.is_some();
        let encrypt = self.cfg.encrypt;
        let Core {
            peers,
            store,
            stats,
            id,
            ..
        } = self;
        let Some(p) = peers.get_mut(&peer) else {
            return (0, false);
        };
        let header = HeaderFields {
            src: *id,
            dst: peer,
            src_epoch: p.token,
            dst_epoch: p.epoch,
            auth,
        };
        let writer = if encrypt {
            DatagramWriter::new_encrypted(buf, &header)
        } else {
            DatagramWriter::new(buf, &header)
        };
        let Ok(mut w) = writer else {
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
                .ack_delay_from
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
                p.recv.advertised_window = window;
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
                // Every half-assembled message is reported with each heartbeat, once: the
                // reports that do not fit this datagram go in the next ones.
                for asm in p.recv.reassembly.values_mut() {
                    asm.report_due = true;
                }
            }
        }
        // Progress of half-assembled messages: when it changed or a duplicate
        // came (`report_due`), and with every heartbeat while one is open (the
        // heartbeat, pushed first, marks them all due), so a sender with a stale
        // view (lost reports, a restart) catches up. Each report goes once: one
        // that does not fit waits for the next datagram.
        if streams_open && !p.recv.reassembly.is_empty() {
            for (&seq, asm) in p.recv.reassembly.iter_mut() {
                if !asm.report_due {
                    continue;
                }
                let mut ranges = [FragRange::default(); MAX_FRAG_RANGES];
                let mut n = 0;
                for (slot, (start, end)) in ranges.iter_mut().zip(asm.held()) {
                    *slot = FragRange { start, end };
                    n += 1;
                }
                let frame = FragAckFrame {
                    seq,
                    received: asm.contiguous(),
                    ranges: FragRanges::Native(&ranges[..n]),
                };
                if w.push_frag_ack(&frame).is_ok() {
                    asm.report_due = false;
                }
            }
        }
        if streams_open {
            let rto = p.send.rtt.rto_backoff(p.send.backoff);
            // While a fragmented message is being written, datagrams take
            // turns: one starts with it, the next with the messages behind
            // it, so neither holds the other hostage.
            let frag_first = p.send.frag.is_some() && {
                p.send.frag_turn = !p.send.frag_turn;
                p.send.frag_turn
            };
            if frag_first {
                full = write_fragments(&mut w, p, store, peer, now, rto);
            }
            // 2. Retransmissions. While a fragment stream waits for its
            // window, messages that fit a datagram still go: nothing queued
            // behind a large message is held hostage by it.
            while !full {
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
                if let Some(last) = m.lost_through() {
                    if w.push_lost(&LostFrame { first: seq, last }).is_err() {
                        full = true;
                        continue;
                    }
                    // One frame says it for the whole rest of the range.
                    while let Some(&s) = p.send.retransmit.front() {
                        if s < seq || s > last {
                            break;
                        }
                        p.send.retransmit.pop_front();
                        p.send.resent(s, now, rto);
                    }
                    stats.messages_retransmitted += 1;
                    continue;
                }
                if !fits_alone(&w, m.payload().len())
                    && let Some(fc) = p.send.frag
                    && fc.seq != seq
                {
                    if seq > fc.seq {
                        // One fragment stream at a time, oldest first: this
                        // one waits until the stream in progress is written.
                        break;
                    }
                    // An older message was lost: it goes first (the peer
                    // delivers in order). The stream in progress is resent
                    // later from where the peer's copy stops, skipping what
                    // it holds.
                    p.send.pause_fragments(fc.seq);
                }
                match write_message(&mut w, &m, start, p.send.held(seq)) {
                    Written::NoRoom => full = true,
                    written => {
                        p.send.retransmit.pop_front();
                        p.send.resent(seq, now, rto);
                        stats.messages_retransmitted += 1;
                        full = continues(&mut p.send.frag, seq, &written);
                    }
                }
            }
            // 3. New messages, as far as the windows allow (past a paused
            // fragment stream too, as above).
            let mut run = store.outbound_run(peer, w.data_capacity());
            while !full {
                let seq = p.send.next_new();
                if seq >= send_limit {
                    break;
                }
                let Some(m) = run.message(seq) else {
                    // Released already (acknowledged before a restart).
                    p.send.push_done(now);
                    continue;
                };
                if let Some(last) = m.lost_through() {
                    // A gap marker: one LOST frame, and every seq of the range
                    // is in flight until the peer acknowledges it.
                    if w.push_lost(&LostFrame { first: seq, last }).is_err() {
                        full = true;
                        break;
                    }
                    for _ in seq..=last {
                        p.send.push_sent(now, 0, rto);
                    }
                    continue;
                }
                if !p.send.window_allows(m.payload().len())
                    || !p.send.fragmented_open_allows(m.payload().len())
                {
                    break;
                }
                if p.send.frag.is_some() && !fits_alone(&w, m.payload().len()) {
                    break;
                }
                match write_message(&mut w, &m, 0, &[]) {
                    Written::NoRoom => full = true,
                    written => {
                        p.send.push_sent(now, m.payload().len() as u32, rto);
                        stats.messages_sent += 1;
                        full = continues(&mut p.send.frag, seq, &written);
                    }
                }
            }
            if !full && !frag_first && p.send.frag.is_some() {
                full = write_fragments(&mut w, p, store, peer, now, rto);
            }
        }
        if w.is_empty() {
            return (0, false);
        }
        (w.finish(), full)
    }
}

/// Continues the fragmented message in progress, as far as its window and the
/// datagram allow. Returns whether the datagram is full.
fn write_fragments(
    w: &mut DatagramWriter<'_>,
    p: &mut Peer,
    store: &Store,
    peer: u32,
    now: Instant,
    rto: Duration,
) -> bool {
    let mut full = false;
    // Bytes of a fragment stream past the peer's contiguous prefix: the congestion window,
    // but no more than loss at the measured rate leaves with the holes one FRAG_ACK can
    // describe (half its ranges), so what the peer holds is never sent again.
    let loss = p.send.cc.loss_rate().max(1) as usize;
    let hole_budget = hrpc_wire::MAX_FRAG_RANGES / 2 * 1000 / loss * w.limit();
    let frag_window = p
        .send
        .cc
        .window()
        .min(hole_budget)
        .max(FRAGMENT_WINDOW_FLOOR);
    if let Some(fc) = p.send.frag
        && p.send
            .fragment_window_open(fc.seq, fc.next_offset, frag_window)
    {
        match store.outbound_message(peer, fc.seq) {
            Some(m) => match write_message(w, &m, fc.next_offset, p.send.held(fc.seq)) {
                Written::Done => {
                    p.send.frag = None;
                    p.send
                        .fragment_sent(fc.seq, m.payload().len() as u32, now, rto);
                }
                Written::Partial(off) => {
                    p.send.frag = Some(FragCursor {
                        seq: fc.seq,
                        next_offset: off,
                    });
                    p.send.fragment_sent(fc.seq, off, now, rto);
                    full = true;
                }
                Written::NoRoom => full = true,
            },
            None => p.send.frag = None,
        }
    }
    full
}

enum Written {
    /// The message (or its last fragment) is in the datagram.
    Done,
    /// A fragment went in; the message continues at this offset.
    Partial(u32),
    /// Nothing went in: the datagram is too full.
    NoRoom,
}

/// After a message (or fragment) went into a datagram: a partial write
/// leaves a fragment stream to continue in the next one and means this
/// datagram is full. Returns whether it is.
fn continues(frag: &mut Option<FragCursor>, seq: u64, written: &Written) -> bool {
    match *written {
        Written::Partial(next_offset) => {
            *frag = Some(FragCursor { seq, next_offset });
            true
        }
        Written::Done | Written::NoRoom => false,
    }
}

/// Writes message `m` from `offset` into `w`: whole if it fits, else as
/// many fragments as this datagram takes, skipping the byte ranges `held`
/// (ascending `[start, end)`) that the peer already has.
fn write_message(
    w: &mut DatagramWriter<'_>,
    m: &MessageRef<'_>,
    offset: u32,
    held: &[(u32, u32)],
) -> Written {
    let payload = m.payload();
    let len = payload.len();
    let cap = w.data_capacity();
    let mut start = offset as usize;
    if start == 0 && len <= cap {
        let frame = DataFrame {
            flags: wire_flags(m),
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
    // Skip what the peer holds; stop before the next range it holds.
    let mut stop = len;
    for &(a, b) in held {
        let (a, b) = (a as usize, b as usize);
        if b <= start {
            continue;
        }
        if a <= start {
            start = b;
            continue;
        }
        stop = a.min(len);
        break;
    }
    if start >= len {
        // The peer has all of it past `offset`: nothing left to write.
        return Written::Done;
    }
    // A message that would fit an empty datagram waits for the next one
    // rather than being split; so does a tiny tail of space.
    if !w.is_empty() && (cap < MIN_FRAGMENT || (start == 0 && fits_alone(w, len))) {
        return Written::NoRoom;
    }
    if cap == 0 {
        return Written::NoRoom;
    }
    let end = (start + cap).min(stop);
    let frame = DataFrame {
        flags: wire_flags(m),
        seq: m.seq(),
        msg_len: len as u32,
        offset: start as u32,
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

/// The DATA flags of stored message `m`.
fn wire_flags(m: &MessageRef<'_>) -> u8 {
    if m.flags() & hrpc_store::FLAG_CALL != 0 {
        hrpc_wire::DATA_FLAG_CALL
    } else {
        0
    }
}

/// Whether a message of `len` bytes fits an otherwise empty datagram of this writer's size.
fn fits_alone(w: &DatagramWriter<'_>, len: usize) -> bool {
    len + DATA_OVERHEAD + HEADER_LEN <= w.limit()
}
