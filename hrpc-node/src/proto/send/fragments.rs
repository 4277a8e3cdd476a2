//! The sending side of fragmented messages: where each stream of fragments stands, what the
//! peer's FRAG_ACKs say it holds, and when a hole in what it holds counts as lost (after three
//! reports without progress, or a loss delay after it was first reported).

use std::time::{Duration, Instant};

use super::super::later;
use super::{REORDER_THRESHOLD, SendState, SentState, span};

impl SendState {
    /// The fragment part of [`SendState::detect_losses`]: every fragmented message whose
    /// peer's prefix has not moved for a loss delay since it was first reported short of
    /// what was written goes again from that prefix (skipping what the peer holds and what
    /// was written too recently to be missed). Counts one datagram's worth per message as
    /// lost.
    pub(super) fn fragment_holes_due(&mut self, now: Instant) -> Option<(u64, usize)> {
        if self.frag_hole.is_empty() {
            return None;
        }
        let delay = self.loss_delay();
        let mut due = Vec::new();
        for (&seq, &(received, since)) in &self.frag_hole {
            let at = later(since, delay);
            if at <= now {
                due.push((seq, received));
            } else {
                self.loss_at = Some(self.loss_at.map_or(at, |t| t.min(at)));
            }
        }
        // In seq order, whatever the map's.
        due.sort_unstable();
        let mut first = None;
        let mut bytes = 0;
        for (seq, received) in due {
            self.frag_hole.remove(&seq);
            let Some(e) = self.entry_mut(seq) else {
                continue;
            };
            if e.state == SentState::Acked || e.peer_has != received {
                continue;
            }
            let len = e.len as usize;
            if !self.resend_from(seq, received) {
                continue;
            }
            first.get_or_insert(seq);
            bytes += self.mtu.min(len);
        }
        first.map(|f| (f, bytes))
    }

    /// Another fragment of `seq` went out: its clock (and the timer) start
    /// from the newest fragment, so a long message is not declared lost
    /// while it is still being written.
    pub(crate) fn fragment_sent(&mut self, seq: u64, end: u32, now: Instant, rto: Duration) {
        if let Some(e) = self.entry_mut(seq) {
            e.sent_at = now;
            self.record_send(seq, now);
        }
        let high = self.frag_high.entry(seq).or_insert((end, now));
        if end >= high.0 {
            *high = (end, now);
        }
        let at = later(now, rto);
        self.rto_at = Some(self.rto_at.map_or(at, |t| t.max(at)));
    }

    /// The peer reports every byte of `seq` below `received` written, and
    /// the byte ranges `held` past it. Returns how far the prefix moved, and the bytes newly
    /// acknowledged: for a message in flight, what left the flight (prefix and ranges
    /// alike, each byte once); otherwise the prefix's progress.
    /// A lower value than before is believed too (the peer restarted and lost
    /// the partial copy). A report past where this side is writing (this side
    /// restarted, or its view was stale) moves the writing on: what the peer
    /// holds is not sent again. The third report in a row without progress of
    /// the prefix means a fragment was lost: the message is sent again from
    /// `received`, skipping what the peer holds (selective retransmission).
    pub(crate) fn fragment_progress(
        &mut self,
        seq: u64,
        received: u32,
        held: impl Iterator<Item = (u32, u32)>,
        now: Instant,
    ) -> (u32, u32) {
        let Some(e) = self.entry_mut(seq) else {
            return (0, 0);
        };
        if e.state == SentState::Acked || received > e.len {
            return (0, 0);
        }
        let len = e.len;
        let delta = received.saturating_sub(e.peer_has);
        if received == e.peer_has {
            e.frag_dups = e.frag_dups.saturating_add(1);
        } else {
            e.frag_dups = 0;
        }
        e.peer_has = received;
        let dups = e.frag_dups;
        let loss_delay = self.loss_delay();
        // The newest report replaces the last (its ranges reuse the same vector).
        let ranges = self.frag_held.entry(seq).or_default();
        ranges.clear();
        ranges.extend(held.filter(|&(a, b)| a < b && b <= len && a > received));
        // What the peer reported holding leaves the flight (never the other way: a report
        // of less, after a restart, is found as a hole and resent as such).
        let reported = u64::from(received) + span(ranges);
        let mut newly = delta;
        let mut left = 0;
        if let Some(e) = self.entry_mut(seq)
            && e.state == SentState::InFlight
        {
            let flight = u64::from(len).saturating_sub(reported) as u32;
            newly = e.flight.saturating_sub(flight);
            left = newly;
            e.flight -= left;
        }
        self.in_flight_bytes -= left as usize;
        let ranges = self.frag_held.entry(seq).or_default();
        if let Some(&(_, last_end)) = ranges.last()
            && let Some(&(high, at)) = self.frag_high.get(&seq)
            && last_end < high
            && now.saturating_duration_since(at) < loss_delay
        {
            // Written after the newest range the peer reported, recently: in flight.
            ranges.push((last_end, high));
        }
        if ranges.is_empty() {
            self.frag_held.remove(&seq);
        }
        // Short of what was written: lost if no report moves the prefix for a loss delay.
        let written = self.frag_high.get(&seq).map_or(len, |&(high, _)| high);
        if received < written && self.rtt.has_sample() {
            let since = match self.frag_hole.get(&seq) {
                Some(&(r, since)) if r == received => since,
                _ => {
                    self.frag_hole.insert(seq, (received, now));
                    now
                }
            };
            let at = later(since, loss_delay);
            self.loss_at = Some(self.loss_at.map_or(at, |t| t.min(at)));
        } else {
            self.frag_hole.remove(&seq);
        }
        if let Some(fc) = self.frag.as_mut()
            && fc.seq == seq
            && fc.next_offset < received
        {
            fc.next_offset = received;
        }
        if dups < REORDER_THRESHOLD as u8 {
            return (delta, newly);
        }
        if let Some(e) = self.entry_mut(seq) {
            e.frag_dups = 0;
        }
        self.frag_hole.remove(&seq);
        if !self.resend_from(seq, received) {
            return (delta, newly);
        }
        // What is lost: from the prefix to the first range the peer holds (with no range
        // held, an unknown part of the tail: counted as a loss event, not in bytes).
        let gap_end = self
            .frag_held
            .get(&seq)
            .and_then(|r| r.iter().map(|&(a, _)| a).min())
            .unwrap_or(received);
        let next = self.next_new();
        self.cc
            .on_loss(seq, gap_end.saturating_sub(received) as usize, next);
        (delta, newly)
    }

    /// Stops writing the fragment stream of `seq` for now: the message is
    /// declared lost and queued for retransmission, which resumes where the
    /// peer's copy stops.
    pub(crate) fn pause_fragments(&mut self, seq: u64) {
        if self.frag.is_some_and(|f| f.seq == seq) {
            self.frag = None;
        }
        self.declare_lost(seq);
    }

    /// The bytes of `seq` past the peer's prefix `received` go again: the stream being
    /// written rewinds to it; a message written whole and in flight is declared lost.
    /// Returns whether either applied.
    fn resend_from(&mut self, seq: u64, received: u32) -> bool {
        match self.frag.as_mut() {
            Some(fc) if fc.seq == seq => {
                fc.next_offset = fc.next_offset.min(received);
                true
            }
            _ => self.declare_lost(seq),
        }
    }

    /// An in-flight message is lost: out of the flight, queued for retransmission (which
    /// resumes where the peer's copy stops). Returns whether it was in flight.
    fn declare_lost(&mut self, seq: u64) -> bool {
        let Some(e) = self.entry_mut(seq) else {
            return false;
        };
        if e.state != SentState::InFlight {
            return false;
        }
        e.state = SentState::Lost;
        let len = std::mem::take(&mut e.flight) as usize;
        self.in_flight_bytes -= len;
        self.in_flight -= 1;
        self.retransmit.push_back(seq);
        true
    }

    /// Byte ranges of `seq` the peer holds past its contiguous prefix.
    pub(crate) fn held(&self, seq: u64) -> &[(u32, u32)] {
        self.frag_held.get(&seq).map_or(&[], Vec::as_slice)
    }

    /// Whether the fragment stream of `seq` may write more past `next_offset`:
    /// at most `window` bytes beyond what the peer reported written.
    pub(crate) fn fragment_window_open(
        &mut self,
        seq: u64,
        next_offset: u32,
        window: usize,
    ) -> bool {
        self.entry_mut(seq)
            .is_none_or(|e| (next_offset.saturating_sub(e.peer_has) as usize) < window)
    }
}
