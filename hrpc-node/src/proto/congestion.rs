//! Congestion control: NewReno-style window in bytes, with one halving per
//! round trip of loss and a collapse to the minimum on a retransmission timeout.

/// The congestion window and its slow-start threshold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Congestion {
    cwnd: usize,
    ssthresh: usize,
    min: usize,
    max: usize,
    /// Losses of messages sent before this seq belong to the recovery
    /// episode already answered.
    recovery_until: u64,
    /// Bytes acknowledged in congestion avoidance, not yet worth a full window step.
    avoid_acc: usize,
}

impl Congestion {
    pub(crate) fn new(initial: usize, min: usize, max: usize) -> Self {
        Congestion {
            cwnd: initial.clamp(min, max),
            ssthresh: usize::MAX,
            min,
            max,
            recovery_until: 0,
            avoid_acc: 0,
        }
    }

    /// Current window in bytes.
    pub(crate) fn window(&self) -> usize {
        self.cwnd
    }

    /// `bytes` were newly acknowledged.
    pub(crate) fn on_ack(&mut self, bytes: usize) {
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

    /// The message `seq` was found lost; `next_seq` is the next seq not yet sent.
    /// Returns whether this started a new recovery episode.
    pub(crate) fn on_loss(&mut self, seq: u64, next_seq: u64) -> bool {
        if seq < self.recovery_until {
            return false;
        }
        self.recovery_until = next_seq;
        self.ssthresh = (self.cwnd / 2).max(self.min);
        self.cwnd = self.ssthresh;
        true
    }

    /// A retransmission timeout fired.
    pub(crate) fn on_timeout(&mut self, next_seq: u64) {
        self.ssthresh = (self.cwnd / 2).max(self.min);
        self.cwnd = self.min;
        self.recovery_until = next_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow start grows by what is acked, one halving per recovery episode,
    /// timeout collapses to the minimum, and the window stays within bounds.
    #[test]
    fn reno_shape() {
        let mut c = Congestion::new(10_000, 3_000, 100_000);
        c.on_ack(10_000);
        assert_eq!(c.window(), 20_000);
        assert!(c.on_loss(5, 50));
        assert_eq!(c.window(), 10_000);
        assert!(!c.on_loss(20, 60), "same episode");
        assert_eq!(c.window(), 10_000);
        c.on_ack(10_000);
        assert_eq!(c.window(), 11_500, "avoidance grows by min/2 per window");
        c.on_timeout(80);
        assert_eq!(c.window(), 3_000);
        for _ in 0..1000 {
            c.on_ack(100_000);
        }
        assert_eq!(c.window(), 100_000);
    }
}
