//! Congestion control: a window in bytes that grows like NewReno's and shrinks on loss that
//! looks like congestion.
//!
//! Loss is counted per round trip (from a seq's first transmission to its acknowledgement).
//! With a `loss_tolerance` of zero every loss episode halves the window, as in NewReno. With a
//! tolerance, a round's loss moves a smoothed loss rate, and the window shrinks (to 0.7 of
//! itself, at most once per round) only while that rate is above the tolerance: random loss
//! on a link that is not full (a lossy Wi-Fi hop, a relay) then costs retransmissions but not
//! throughput, while a queue that overflows (losing a large share of a round) still cuts the
//! rate at once. Queueing delay is the other signal: a round whose smallest RTT sample is
//! more than twice the path's smallest RTT plus [`QUEUE_DELAY`] shrinks the window too, so a
//! slow bottleneck with a deep buffer (a relay, a busy receiver) is not filled until its
//! buffer overflows (not with Sync durability, whose RTT samples include both sides' flushes
//! to disk). A probe timeout does not touch the window; only persistent congestion (no
//! acknowledgement across several backed-off timeouts) collapses it to the minimum.

use std::time::Duration;

/// Per-mille scale of loss rates.
const MILLE: u64 = 1000;

/// Queueing delay (on top of twice the smallest RTT) that counts as congestion.
pub(crate) const QUEUE_DELAY: Duration = Duration::from_millis(1);

/// Rounds after which the smallest RTT is measured afresh (the path may have changed).
const MIN_RTT_ROUNDS: u32 = 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Congestion {
    cwnd: usize,
    ssthresh: usize,
    min: usize,
    max: usize,
    /// Seqs below this were sent before the last reduction: their loss does not reduce again.
    recovery_until: u64,
    avoid_acc: usize,
    /// Loss (per mille of a round's bytes) tolerated before the window shrinks; 0 = NewReno.
    tolerance: u64,
    /// The current round ends when a seq at or above this is acknowledged.
    round_end: u64,
    round_acked: usize,
    round_lost: usize,
    /// This round lost a seq sent after the last reduction.
    round_new_loss: bool,
    /// Smoothed per-round loss rate, per mille.
    loss_rate: u64,
    /// Smallest RTT sample of this round.
    round_min_rtt: Option<Duration>,
    /// Smallest RTT of the path, as the last [`Congestion::on_rtt`] reported it.
    path_min_rtt: Option<Duration>,
    /// Rounds since the smallest RTT was measured afresh.
    rounds: u32,
    /// Whether queueing delay counts as congestion.
    delay_signal: bool,
}

impl Congestion {
    pub(crate) fn new(initial: usize, min: usize, max: usize, tolerance_per_mille: u32) -> Self {
        Congestion {
            cwnd: initial.clamp(min, max),
            ssthresh: usize::MAX,
            min,
            max,
            recovery_until: 0,
            avoid_acc: 0,
            tolerance: u64::from(tolerance_per_mille).min(MILLE),
            round_end: 0,
            round_acked: 0,
            round_lost: 0,
            round_new_loss: false,
            loss_rate: 0,
            round_min_rtt: None,
            path_min_rtt: None,
            rounds: 0,
            delay_signal: true,
        }
    }

    /// Ignores queueing delay: for nodes whose RTT samples include flushes to disk on both
    /// sides (Sync durability), which vary by milliseconds without any queue on the path.
    pub(crate) fn without_delay_signal(mut self) -> Self {
        self.delay_signal = false;
        self
    }

    pub(crate) fn window(&self) -> usize {
        self.cwnd
    }

    /// Smoothed loss rate, per mille of bytes sent.
    pub(crate) fn loss_rate(&self) -> u64 {
        self.loss_rate
    }

    /// An RTT sample, and the smallest RTT of the path so far. Returns the smallest sample of
    /// the last [`MIN_RTT_ROUNDS`] rounds' last round when it is time to measure the path's
    /// smallest RTT afresh (the caller resets its estimate to it).
    pub(crate) fn on_rtt(&mut self, rtt: Duration, path_min: Duration) -> Option<Duration> {
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
        self.path_min_rtt = Some(path_min);
        if self.rounds >= MIN_RTT_ROUNDS {
            self.rounds = 0;
            return self.round_min_rtt;
        }
        None
    }

    /// `bytes` newly acknowledged, the highest of them `largest`; `next_seq` is the next seq
    /// never sent (the end of the round that starts now, if one ends).
    pub(crate) fn on_ack(&mut self, bytes: usize, largest: u64, next_seq: u64) {
        self.round_acked += bytes;
        if largest >= self.round_end {
            self.end_round(next_seq);
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = (self.cwnd + bytes).min(self.max);
        } else {
            self.avoid_acc += bytes;
            if self.avoid_acc >= self.cwnd {
                self.avoid_acc -= self.cwnd;
                self.cwnd = (self.cwnd + self.min / 2).min(self.max);
            }
        }
    }

    fn end_round(&mut self, next_seq: u64) {
        let total = (self.round_acked + self.round_lost) as u64;
        if let Some(rate) = (self.round_lost as u64 * MILLE).checked_div(total) {
            self.loss_rate = (self.loss_rate * 3 + rate) / 4;
        }
        let queued = match (self.delay_signal, self.round_min_rtt, self.path_min_rtt) {
            (true, Some(round), Some(path)) => round > path.saturating_mul(2) + QUEUE_DELAY,
            _ => false,
        };
        let lossy = self.round_new_loss && self.loss_rate > self.tolerance;
        if self.tolerance > 0 && (lossy || queued) {
            self.reduce(next_seq);
        }
        self.rounds = self.rounds.saturating_add(1);
        self.round_min_rtt = None;
        self.round_acked = 0;
        self.round_lost = 0;
        self.round_new_loss = false;
        self.round_end = next_seq;
    }

    fn reduce(&mut self, next_seq: u64) {
        if next_seq <= self.recovery_until {
            return;
        }
        self.recovery_until = next_seq;
        self.ssthresh = (self.cwnd / 10 * 7).max(self.min);
        self.cwnd = self.ssthresh;
    }

    /// Messages of `bytes` were declared lost, the oldest `seq`. Returns whether the window
    /// shrank.
    pub(crate) fn on_loss(&mut self, seq: u64, bytes: usize, next_seq: u64) -> bool {
        self.round_lost += bytes;
        if seq < self.recovery_until {
            return false;
        }
        if self.tolerance == 0 {
            self.recovery_until = next_seq;
            self.ssthresh = (self.cwnd / 2).max(self.min);
            self.cwnd = self.ssthresh;
            return true;
        }
        self.round_new_loss = true;
        // Twice the tolerance of a whole window lost within one round: a queue overflowed.
        if self.round_lost as u64 * MILLE > self.cwnd as u64 * 2 * self.tolerance {
            self.reduce(next_seq);
            return true;
        }
        false
    }

    /// No acknowledgement across several backed-off probe timeouts: the path may have
    /// changed completely. Starts again from the minimum window.
    pub(crate) fn on_persistent_congestion(&mut self, next_seq: u64) {
        self.ssthresh = (self.cwnd / 2).max(self.min);
        self.cwnd = self.min;
        self.recovery_until = next_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a tolerance, rounds whose RTT stays near the path's smallest keep growing the
    /// window; rounds whose every sample waits in a queue shrink it, once per round — unless
    /// the delay signal is off (Sync durability), where the window keeps growing.
    #[test]
    fn queueing_delay_shrinks_the_window() {
        for signal in [true, false] {
            let grown = queued_rounds(signal);
            assert_eq!(grown.0, 200_000);
            if signal {
                assert!(grown.1 < grown.0 / 2, "{grown:?}");
            } else {
                assert!(grown.1 > grown.0, "{grown:?}");
            }
        }
    }

    /// Ten rounds near the smallest RTT, then five with every sample queued: the window after
    /// each phase.
    fn queued_rounds(signal: bool) -> (usize, usize) {
        let us = Duration::from_micros;
        let mut c = Congestion::new(100_000, 3_000, 1 << 30, 100);
        if !signal {
            c = c.without_delay_signal();
        }
        let mut seq = 0;
        for _ in 0..10 {
            c.on_rtt(us(150), us(100));
            c.on_ack(10_000, seq + 9, seq + 10);
            seq += 10;
        }
        let grown = c.window();
        for _ in 0..5 {
            c.on_rtt(us(2_000), us(100));
            c.on_rtt(us(1_500), us(100));
            c.on_ack(1_000, seq + 9, seq + 10);
            seq += 10;
        }
        (grown, c.window())
    }

    #[test]
    fn reno_shape_without_tolerance() {
        let mut c = Congestion::new(10_000, 3_000, 100_000, 0);
        c.on_ack(10_000, 1, 10);
        assert_eq!(c.window(), 20_000);
        assert!(c.on_loss(5, 100, 50));
        assert_eq!(c.window(), 10_000);
        assert!(!c.on_loss(20, 100, 60), "same episode");
        assert_eq!(c.window(), 10_000);
        c.on_ack(10_000, 30, 60);
        assert_eq!(c.window(), 11_500, "avoidance grows by min/2 per window");
        c.on_persistent_congestion(80);
        assert_eq!(c.window(), 3_000);
        for i in 0..1000 {
            c.on_ack(100_000, 100 + i, 200 + i);
        }
        assert_eq!(c.window(), 100_000);
    }

    /// With a 10% tolerance, a steady 5% loss never shrinks the window; losing half a window
    /// in one round does, at once, and only once per round; a sustained 20% loss does too.
    #[test]
    fn tolerates_random_loss_but_not_an_overflow() {
        let mut c = Congestion::new(100_000, 3_000, 1 << 30, 100);
        let mut seq = 0;
        for _ in 0..200 {
            // One round: 19 messages of 1000 B acknowledged, 1 lost.
            assert!(!c.on_loss(seq, 1000, seq + 20));
            c.on_ack(19_000, seq + 19, seq + 20);
            seq += 20;
        }
        assert!(c.loss_rate() <= 60, "{}", c.loss_rate());
        let before = c.window();
        assert!(before > 100_000, "the window kept growing");
        assert!(c.on_loss(seq, before / 2, seq + 40), "half a window lost");
        assert_eq!(c.window(), before / 10 * 7);
        assert!(!c.on_loss(seq + 1, before / 2, seq + 40), "same round");
        assert_eq!(c.window(), before / 10 * 7);
        // A sustained 20% loss shrinks it at the end of each round.
        let mut shrank = 0;
        for _ in 0..20 {
            seq += 50;
            let w = c.window();
            c.on_loss(seq, 2000, seq + 10);
            c.on_ack(8000, seq + 9, seq + 10);
            shrank += usize::from(c.window() < w);
        }
        assert!(shrank >= 10, "{shrank}");
    }
}
