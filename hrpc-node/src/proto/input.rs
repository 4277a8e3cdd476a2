//! Input: datagrams in, validated, and applied to the peer's streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hrpc_store::{InboundPut, InboundSlot, MAX_PUT_BATCH, OutboundOnReset, StoreError};
use hrpc_wire::{
    AckFrame, DataFrame, Datagram, FragAckFrame, Frame, HeartbeatFrame, SackRanges, WireError,
};

use super::inbound::{Persist, store_flags};
use super::recv::{Reassembly, RecvState};
use super::send::SentState;
use super::{
    Core, CoreError, DropReason, Event, MAX_QUEUED_REPLIES, MAX_SEQ, PeerState, REASSEMBLY_IDLE,
    Reply, ReplyFrame, later,
};

/// A placeholder for the arrays of whole DATA frames gathered from one datagram.
const EMPTY_DATA: DataFrame<'static> = DataFrame {
    flags: 0,
    seq: 0,
    msg_len: 0,
    offset: 0,
    msg_crc: 0,
    payload: &[],
};

impl Core {
    /// Processes one received datagram. Never fails: malformed, misdirected,
    /// stale or duplicate input is dropped and counted in [`Stats`](super::Stats), and
    /// changes no persisted state.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        if let Some(parts) = hrpc_wire::encrypted_parts(bytes) {
            // Enciphered: only a holder of the cluster key can read it, and its AEAD tag
            // authenticates it; what it deciphers to is handled as an authenticated datagram.
            let Some(cipher) = &self.cipher else {
                return self.stats.drop(DropReason::Unauthenticated);
            };
            let mut plain = std::mem::take(&mut self.scratch);
            let opened = cipher.open(&parts, &mut plain);
            if opened {
                self.handle_parsed(now, from, &plain, true);
            } else {
                self.stats.drop(DropReason::BadTag);
            }
            self.scratch = plain;
            return;
        }
        self.handle_parsed(now, from, bytes, false);
    }

    /// [`Core::handle_datagram`] for a datagram that is not enciphered (any more);
    /// `authenticated` if its AEAD tag was already verified.
    fn handle_parsed(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], authenticated: bool) {
        let d = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(WireError::BadChecksum) => return self.stats.drop(DropReason::BadChecksum),
            Err(_) => return self.stats.drop(DropReason::Malformed),
        };
        let h = d.header();
        match (&self.cfg.cluster_key, d.auth_tag()) {
            (None, None) => {}
            (Some(_), Some(_)) if authenticated => {}
            (Some(key), Some(tag)) => {
                if !key.verify(d.authenticated_bytes(), tag) {
                    return self.stats.drop(DropReason::BadTag);
                }
            }
            _ => return self.stats.drop(DropReason::Unauthenticated),
        }
        if h.dst != self.id || h.src == self.id {
            return self.stats.drop(DropReason::WrongDestination);
        }
        // The fast path: the peer's current session, with this node's token for it, from its
        // validated address. Anything else goes through the handshake.
        let known = self.peers.get(&h.src).is_some_and(|p| {
            p.epoch != 0
                && h.src_epoch == p.epoch
                && h.dst_epoch == p.token
                && p.addr == Some(from)
                && p.pending_epoch.is_none()
        });
        if !known && !self.handshake(now, from, &h, &d) {
            return;
        }
        let Some(p) = self.peers.get_mut(&h.src) else {
            return;
        };
        p.last_heard = Some(now);
        p.restart_probe = None;
        p.hb_interval = self.cfg.heartbeat_interval;
        if p.state != PeerState::Active {
            p.state = PeerState::Active;
            self.push_event(Event::PeerState {
                peer: h.src,
                state: PeerState::Active,
            });
        }
        // Whole DATA frames are gathered and persisted together; any other frame first
        // finishes those before it, so frames still take effect in datagram order. A lone
        // whole DATA frame (a large message) goes alone, without setting up a batch.
        let mut frames = d.frames();
        let mut first: Option<DataFrame<'_>> = None;
        while let Some(frame) = frames.next() {
            match frame {
                Frame::Data(f) if f.is_whole() => match first.take() {
                    None => first = Some(f),
                    Some(a) => return self.on_data_run(now, h.src, [a, f], frames),
                },
                other => {
                    if let Some(a) = first.take() {
                        self.on_data(now, h.src, &a);
                    }
                    self.on_frame(now, h.src, other);
                }
            }
        }
        if let Some(a) = first {
            self.on_data(now, h.src, &a);
        }
    }

    /// The rest of [`Core::handle_parsed`] once a datagram has shown two whole DATA frames in
    /// a row (`two`): gathers whole DATA frames into batches for [`Core::on_data_batch`].
    fn on_data_run<'a>(
        &mut self,
        now: Instant,
        src: u32,
        two: [DataFrame<'a>; 2],
        frames: impl Iterator<Item = Frame<'a>>,
    ) {
        let mut data = [EMPTY_DATA; MAX_PUT_BATCH];
        data[..2].copy_from_slice(&two);
        let mut nd = 2;
        for frame in frames {
            match frame {
                Frame::Data(f) if f.is_whole() => {
                    if nd == MAX_PUT_BATCH {
                        self.on_data_batch(now, src, &data[..nd]);
                        nd = 0;
                    }
                    data[nd] = f;
                    nd += 1;
                }
                other => {
                    if nd > 0 {
                        self.on_data_batch(now, src, &data[..nd]);
                        nd = 0;
                    }
                    self.on_frame(now, src, other);
                }
            }
        }
        if nd > 0 {
            self.on_data_batch(now, src, &data[..nd]);
        }
    }

    /// Applies one frame of a datagram from the fast path.
    fn on_frame(&mut self, now: Instant, src: u32, frame: Frame<'_>) {
        match frame {
            Frame::Data(f) => self.on_data(now, src, &f),
            Frame::Ack(a) => self.on_ack(now, src, &a),
            Frame::Heartbeat(hb) => self.on_heartbeat(now, src, &hb),
            Frame::FragAck(f) => self.on_frag_ack(now, src, &f),
            Frame::Lost(l) => self.on_lost(now, src, l.first, l.last),
            Frame::Reset(r) => {
                tracing::debug!(peer = src, ?r, "reset notice");
                if let Some(p) = self.peers.get_mut(&src) {
                    p.hb_pending = true;
                }
            }
            // Handled by the handshake; in a datagram of the session they say nothing new.
            Frame::Challenge(_) | Frame::Response(_) => {}
        }
    }

    /// Queues an answer to a datagram from a sender that does not know this node's token,
    /// within `max_unsolicited_per_sec`. Challenges and responses each have a budget of
    /// their own: when two nodes meet at the same instant each receives the other's hello
    /// and then its challenge, and a shared budget of one would be spent on the challenge
    /// every time, leaving no response for either side, forever.
    pub(super) fn queue_reply(&mut self, now: Instant, reply: Reply) {
        if now >= self.reply_refill_at {
            self.reply_tokens = [self.cfg.max_unsolicited_per_sec; 2];
            self.reply_refill_at = later(now, Duration::from_secs(1));
        }
        let kind = match reply.frame {
            ReplyFrame::Challenge(_) => 0,
            ReplyFrame::Response(_) => 1,
        };
        if self.reply_tokens[kind] == 0 || self.replies.len() >= MAX_QUEUED_REPLIES {
            return;
        }
        self.reply_tokens[kind] -= 1;
        self.replies.push_back(reply);
    }

    /// The peer lost its store: restart both streams with its new session.
    pub(super) fn apply_reset(&mut self, peer: u32) -> Result<(), CoreError> {
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
        if f.seq > r.consumed + window || f.seq > MAX_SEQ {
            return self.stats.drop(DropReason::BeyondWindow);
        }
        let persist = if f.is_whole() {
            // The store checks the payload against its checksum before it
            // takes a slot, so a corrupt message changes nothing.
            Persist::Whole {
                seq: f.seq,
                payload: f.payload,
                crc: f.msg_crc,
                flags: f.flags,
            }
        } else {
            match self.on_fragment(now, peer, f) {
                Some(slot) => Persist::Assembled { seq: f.seq, slot },
                None => return,
            }
        };
        if let Err(e) = self.persist(peer, persist) {
            return self.stats.drop(store_drop_reason(&e));
        }
        self.after_data_persisted(now, peer, f.seq);
    }

    /// The whole DATA frames of one datagram, in order: those that pass [`Core::on_data`]'s
    /// checks are persisted together ([`Store::put_inbound_batch`](hrpc_store::Store::put_inbound_batch),
    /// one store lock), then each frame is finished in order as `on_data` would, and any the
    /// batch did not persist goes through `on_data` itself (which drops and counts it, or
    /// persists it alone).
    fn on_data_batch(&mut self, now: Instant, peer: u32, frames: &[DataFrame<'_>]) {
        if frames.len() < 2 {
            for f in frames {
                self.on_data(now, peer, f);
            }
            return;
        }
        let window = u64::from(self.cfg.recv_window_msgs);
        let mut puts = [InboundPut {
            seq: 0,
            payload: &[],
            crc: 0,
            flags: 0,
        }; MAX_PUT_BATCH];
        // `picked` bit i: frames[i] is in `puts` (in frame order).
        let mut picked = 0u64;
        let mut n = 0;
        if let Some(p) = self.peers.get(&peer) {
            let r = &p.recv;
            for (i, f) in frames.iter().enumerate().take(MAX_PUT_BATCH) {
                if f.is_whole() && !r.has(f.seq) && f.seq <= r.consumed + window && f.seq <= MAX_SEQ
                {
                    puts[n] = InboundPut {
                        seq: f.seq,
                        payload: f.payload,
                        crc: f.msg_crc,
                        flags: store_flags(f.flags),
                    };
                    n += 1;
                    picked |= 1 << i;
                }
            }
        }
        let done = if n > 0 {
            self.store.put_inbound_batch(peer, &puts[..n])
        } else {
            0
        };
        let mut k = 0;
        // Consecutive seqs persisted by the batch, recorded as one range.
        let mut run: Option<(u64, u64)> = None;
        for (i, f) in frames.iter().enumerate() {
            let in_batch = i < MAX_PUT_BATCH && picked & (1 << i) != 0;
            if in_batch && done & (1 << k) != 0 {
                run = match run {
                    Some((first, last)) if last.checked_add(1) == Some(f.seq) => {
                        Some((first, f.seq))
                    }
                    Some((first, last)) => {
                        self.persisted_run(now, peer, first, last);
                        Some((f.seq, f.seq))
                    }
                    None => Some((f.seq, f.seq)),
                };
            } else {
                if let Some((first, last)) = run.take() {
                    self.persisted_run(now, peer, first, last);
                }
                self.on_data(now, peer, f);
            }
            if in_batch {
                k += 1;
            }
        }
        if let Some((first, last)) = run {
            self.persisted_run(now, peer, first, last);
        }
    }

    /// Whole messages `first..=last` from `peer` were persisted by one batch.
    fn persisted_run(&mut self, now: Instant, peer: u32, first: u64, last: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.recv.insert_range(first, last);
        }
        for seq in first..=last {
            self.after_data_persisted(now, peer, seq);
        }
    }

    /// What follows persisting message `seq` from `peer` (whole, or its last fragment).
    fn after_data_persisted(&mut self, now: Instant, peer: u32, seq: u64) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let r = &mut p.recv;
        // A sender restarted with a larger MTU sends whole what this node was
        // assembling from fragments: the half copy is not needed (one lookup,
        // nothing when no message is being assembled).
        if !r.reassembly.is_empty()
            && let Some(a) = r.reassembly.remove(&seq)
        {
            self.reassembly_bytes = self.reassembly_bytes.saturating_sub(a.msg_len as usize);
            self.store.abort_inbound(a.slot);
        }
        // It was not held before: it is the largest now only if nothing held was above it.
        if seq == r.largest() {
            r.ack_delay_from = Some(now);
        }
        r.ack_pending = true;
        self.stats.messages_received += 1;
        if self.durable {
            self.unsynced = true;
        }
    }

    /// Writes one fragment into its message's slot; returns the slot once the message is
    /// complete (for [`Core::persist`] to commit).
    fn on_fragment(&mut self, now: Instant, peer: u32, f: &DataFrame<'_>) -> Option<InboundSlot> {
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
                    return None;
                }
            }
            let slot = match self.store.begin_inbound(
                peer,
                f.seq,
                f.msg_len,
                f.msg_crc,
                store_flags(f.flags),
            ) {
                Ok(s) => s,
                Err(e) => {
                    self.stats.drop(store_drop_reason(&e));
                    return None;
                }
            };
            self.reassembly_bytes += f.msg_len as usize;
            if let Some(p) = self.peers.get_mut(&peer) {
                let asm = Reassembly::new(slot, f.msg_len, f.msg_crc, now);
                p.recv.reassembly.insert(f.seq, asm);
            }
        }
        let p = self.peers.get_mut(&peer)?;
        let r = &mut p.recv;
        let asm = r.reassembly.get_mut(&f.seq)?;
        if asm.msg_len != f.msg_len || asm.crc != f.msg_crc {
            self.stats.drop(DropReason::CorruptMessage);
            return None;
        }
        if let Err(e) = self.store.write_inbound(&asm.slot, f.offset, f.payload) {
            self.stats.drop(store_drop_reason(&e));
            return None;
        }
        // Report progress (or the gap) so the sender can pace and resume —
        // after a duplicate too: the sender is working from a stale view of
        // what this node holds (lost reports, or it restarted).
        asm.report_due = true;
        r.ack_pending = true;
        if !asm.add(f.offset, f.payload.len() as u32, now) {
            self.stats.drop(DropReason::Duplicate);
            return None;
        }
        if !asm.is_complete() {
            return None;
        }
        let asm = r.reassembly.remove(&f.seq)?;
        self.reassembly_bytes = self.reassembly_bytes.saturating_sub(asm.msg_len as usize);
        Some(asm.slot)
    }

    /// Whether a new message of `len` bytes from `peer` may start assembling: within the
    /// per-peer count, the budget, and the peer's share of the budget, so that one peer
    /// (or a forger on its path) whose messages never complete cannot hold all of it.
    fn reassembly_room(&self, peer: u32, len: u32) -> bool {
        let (count, held) = self.peers.get(&peer).map_or((0, 0), |p| {
            let held: usize = p.recv.reassembly.values().map(|a| a.msg_len as usize).sum();
            (p.recv.reassembly.len(), held)
        });
        let max = self.cfg.max_reassembly_bytes;
        // Half the budget, but at least one message of the largest size the budget can hold.
        let share = (max / 2).max(max.min(hrpc_wire::MAX_MESSAGE_LEN));
        count < self.cfg.max_reassemblies_per_peer
            && self.reassembly_bytes + len as usize <= max
            && held + len as usize <= share
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
        let ack = Acknowledgement {
            cumulative: a.cumulative,
            sacks: a.sacks,
            frame: Some(AckFrameParts {
                window_msgs: a.window_msgs,
                window_bytes: a.window_bytes,
                delay: Duration::from_micros(u64::from(a.ack_delay_us)),
            }),
        };
        self.acknowledge(now, peer, &ack);
    }

    /// Applies an acknowledgement: frees what it covers, feeds the congestion
    /// controller and loss detection; an ACK frame also updates the flow
    /// window and yields an RTT sample.
    fn acknowledge(&mut self, now: Instant, peer: u32, a: &Acknowledgement<'_>) {
        let committed = self.committed_next(peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        // An ack may name only seqs this node committed and sent (now, or
        // possibly before a restart): one covering committed but unsent seqs
        // would free messages the peer never got.
        let sent = |seq: u64| seq < committed && p.send.may_have_sent(seq);
        if !sent(a.cumulative) || a.sacks.iter().any(|r| !sent(r.last)) {
            return self.stats.drop(DropReason::BogusAck);
        }
        let s = &mut p.send;
        // RTT sample (RFC 9002 §5.1): only from the largest seq the ack names, and only if
        // this ack is the first to cover it and it was sent once. A cumulative ack that jumps
        // over a filled hole covers messages sent long ago: their age is not a round trip.
        let largest = a.sacks.iter().map(|r| r.last).fold(a.cumulative, u64::max);
        let newest_sample = s
            .entry(largest)
            .filter(|e| e.state != SentState::Acked && e.transmissions == 1)
            .map(|e| (e.sent_at, s.fragmented(e.len)));
        let mut acked_msgs = 0u64;
        let mut acked_bytes = 0usize;
        let mut progressed = false;
        s.begin_ack();
        if a.cumulative >= s.base {
            let (m, b) = s.ack_through(a.cumulative);
            acked_msgs += m;
            acked_bytes += b;
            progressed = true;
            if let Err(e) = self.store.release_outbound_through(peer, a.cumulative) {
                // The core's view and the store's now disagree: the application must know.
                tracing::error!(peer, error = %e, "release failed");
                self.fatal.get_or_insert(e);
            }
        }
        // Selectively acknowledged messages stay in the store until the cumulative ack
        // passes them (the store holds every unacknowledged seq, which is what lets a
        // damaged store be told from an intact one); only the send state learns of them.
        let (m, b) = s.ack_ranges(a.sacks.iter().map(|r| (r.first, r.last)));
        acked_msgs += m;
        acked_bytes += b;
        progressed |= m > 0;
        if let Some(f) = &a.frame {
            // Flow control: the window only ever moves forward.
            s.peer_limit = s
                .peer_limit
                .max(a.cumulative.saturating_add(u64::from(f.window_msgs)));
            s.peer_window_bytes = f.window_bytes as usize;
            if let Some((sent_at, fragmented)) = newest_sample {
                s.rtt_sample(now.saturating_duration_since(sent_at), f.delay, fragmented);
            }
        }
        s.end_ack(acked_msgs > 0);
        let next = s.next_new();
        if acked_bytes > 0 {
            s.cc.on_ack(acked_bytes, s.largest_acked, next);
        }
        if progressed {
            s.backoff = 0;
        }
        if let Some((first_lost, lost_bytes)) = s.detect_losses(now) {
            s.cc.on_loss(first_lost, lost_bytes, next);
        }
        if progressed {
            s.rearm(now);
        }
        self.stats.messages_acked += acked_msgs;
    }

    fn on_frag_ack(&mut self, now: Instant, peer: u32, f: &FragAckFrame<'_>) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let held = f.ranges.iter().map(|r| (r.start, r.end));
        let (prefix, newly) = p.send.fragment_progress(f.seq, f.received, held, now);
        if prefix > 0 {
            // The window grows with the prefix only: crediting the ranges as well let it
            // run ahead of the holes, and a hole's resend then rewrote bytes still on
            // their way (35% more bytes for a 4 MiB message with one datagram in 50 lost).
            let next = p.send.next_new();
            p.send.cc.on_ack(prefix as usize, f.seq, next);
        }
        if prefix > 0 || newly > 0 {
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
            // The echo comes from the network: an absurd value must not panic,
            // and one from the future is no sample at all.
            let sent = self
                .start
                .checked_add(Duration::from_micros(hb.echo_us - 1));
            if let Some(sent) = sent.filter(|&t| t <= now) {
                p.send
                    .rtt
                    .sample(now.saturating_duration_since(sent), Duration::ZERO);
            }
        }
        // It has something this node lacks: ack now so it learns our state.
        if hb.next_seq > p.recv.cum + 1 {
            p.recv.ack_pending = true;
        }
        // The sender no longer holds anything below first_pending: this node acknowledged it
        // at some point. A fresh stream (this node's store is new, or lost its state for the
        // peer) starts there, silently. Otherwise what this node does not hold below it was
        // lost on this side: it is recorded as lost, in order, and the application is told.
        let through = hb.first_pending.saturating_sub(1).min(MAX_SEQ);
        if through > p.recv.cum {
            if p.recv.is_fresh() && !self.store.inbound_started(peer) {
                match self.persist(peer, Persist::StartAfter { through }) {
                    Err(e) => tracing::warn!(peer, error = %e, "cannot start the inbound stream"),
                    Ok(()) => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.recv.ack_pending = true;
                        }
                    }
                }
            } else {
                let first = p.recv.cum + 1;
                self.persist_lost(now, peer, first, through);
            }
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        // `expected` is a cumulative ack in disguise.
        let cum = hb.expected.saturating_sub(1);
        if cum >= p.send.base && cum < committed {
            let ack = Acknowledgement {
                cumulative: cum,
                sacks: SackRanges::Native(&[]),
                frame: None,
            };
            self.acknowledge(now, peer, &ack);
        }
    }
}

impl Core {
    /// A LOST frame: the sender will never deliver `first..=last`. Accepted
    /// once everything before `first` is here (so marking the range costs
    /// nothing whatever its length); earlier, it is ignored and the sender
    /// repeats it.
    fn on_lost(&mut self, now: Instant, peer: u32, first: u64, last: u64) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if last > MAX_SEQ {
            return self.stats.drop(DropReason::Malformed);
        }
        if last <= p.recv.cum {
            p.recv.ack_pending = true;
            return self.stats.drop(DropReason::Duplicate);
        }
        if first > p.recv.cum + 1 {
            return self.stats.drop(DropReason::BeyondWindow);
        }
        let first = p.recv.cum + 1;
        self.persist_lost(now, peer, first, last);
    }

    /// Records `first..=last` (with `first == cum + 1`) as lost: a gap marker
    /// is persisted for each run of seqs this node does not hold (those it
    /// holds are delivered as usual), half-assembled messages in the range are
    /// dropped, and the stream moves on. Delivery turns each marker into an
    /// [`Event::Lost`]. Returns whether it did.
    pub(super) fn persist_lost(&mut self, now: Instant, peer: u32, first: u64, last: u64) -> bool {
        self.drop_reassemblies(peer, |seq| (first..=last).contains(&seq));
        let mut at = first;
        while at <= last {
            let Some(p) = self.peers.get_mut(&peer) else {
                return false;
            };
            debug_assert_eq!(at, p.recv.cum + 1);
            // The run of missing seqs from `at`: up to the next one held, or `last`.
            let end = p.recv.next_held(at, last).map_or(last, |held| held - 1);
            if let Err(e) = self.persist(
                peer,
                Persist::Lost {
                    first: at,
                    last: end,
                },
            ) {
                self.stats.drop(store_drop_reason(&e));
                return false;
            }
            // Seqs held right after the run are now below cum too.
            at = self.peers.get(&peer).map_or(last + 1, |p| p.recv.cum + 1);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        p.recv.ack_pending = true;
        if last >= p.recv.largest() {
            p.recv.ack_delay_from = Some(now);
        }
        if self.durable {
            self.unsynced = true;
        }
        true
    }

    /// Aborts the half-assembled messages of `peer` whose seq matches, returning
    /// their slots and their share of the reassembly budget.
    pub(super) fn drop_reassemblies(&mut self, peer: u32, matches: impl Fn(u64) -> bool) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        for (_, a) in p.recv.reassembly.extract_if(|&s, _| matches(s)) {
            self.reassembly_bytes = self.reassembly_bytes.saturating_sub(a.msg_len as usize);
            self.store.abort_inbound(a.slot);
        }
    }
}

/// What an acknowledgement says: from an ACK frame, or a heartbeat's
/// `expected` (a cumulative ack in disguise).
struct Acknowledgement<'a> {
    cumulative: u64,
    sacks: SackRanges<'a>,
    /// Only an ACK frame carries windows, and only its timing measures a
    /// round trip; a heartbeat's is set by the heartbeat clock.
    frame: Option<AckFrameParts>,
}

/// The parts of an ACK frame a heartbeat lacks.
struct AckFrameParts {
    window_msgs: u32,
    window_bytes: u32,
    delay: Duration,
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
