//! Round-trip time estimate and probe timeout (RFC 9002 §5–6).

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Smallest RTT seen: an ack delay is subtracted from a sample only while the result
    /// stays at or above it.
    min_rtt: Option<Duration>,
    /// Largest ack delay the peer reported lately (decays by 1/8 per sample): the probe
    /// timeout leaves the peer this long to answer.
    max_ack_delay: Duration,
    initial: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

/// Timer granularity: the smallest variance term of the timeout.
const GRANULARITY: Duration = Duration::from_micros(100);

impl RttEstimator {
    pub(crate) fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: initial / 2,
            min_rtt: None,
            max_ack_delay: Duration::ZERO,
            initial,
            min_rto,
            max_rto,
        }
    }

    /// A sample: `rtt` from sending a message to the ack naming it, of which the peer spent
    /// `ack_delay` holding the ack.
    pub(crate) fn sample(&mut self, rtt: Duration, ack_delay: Duration) {
        let min_rtt = self.min_rtt.map_or(rtt, |m| m.min(rtt));
        self.min_rtt = Some(min_rtt);
        self.max_ack_delay = (self.max_ack_delay - self.max_ack_delay / 8).max(ack_delay);
        let rtt = match rtt.checked_sub(ack_delay) {
            Some(adjusted) if adjusted >= min_rtt => adjusted,
            _ => rtt,
        };
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(diff) / 4;
                self.srtt = Some(srtt.saturating_mul(7).saturating_add(rtt) / 8);
            }
        }
    }

    /// Smallest RTT seen, if any.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Forgets the smallest RTT seen but keeps `floor` as the new one (the path may have
    /// changed: a congestion signal that compares against it must not go on forever).
    pub(crate) fn reset_min_rtt(&mut self, floor: Duration) {
        self.min_rtt = Some(floor);
    }

    pub(crate) fn has_sample(&self) -> bool {
        self.srtt.is_some()
    }

    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.initial)
    }

    /// How long after a message was sent, with later ones already acknowledged, it counts as
    /// lost (RFC 8985's reordering window: a quarter of the smoothed RTT on top of it).
    pub(crate) fn loss_delay(&self) -> Duration {
        let srtt = self.srtt();
        (srtt + srtt / 4).max(GRANULARITY)
    }

    /// Probe timeout: smoothed RTT + 4 × variance + the peer's ack delay, within
    /// `min_rto..=max_rto`.
    pub(crate) fn rto(&self) -> Duration {
        let rto = self
            .srtt()
            .saturating_add(self.rttvar.saturating_mul(4).max(GRANULARITY))
            .saturating_add(self.max_ack_delay);
        rto.clamp(self.min_rto, self.max_rto)
    }

    pub(crate) fn rto_backoff(&self, backoff: u32) -> Duration {
        let factor = 1u32 << backoff.min(16);
        self.rto().saturating_mul(factor).min(self.max_rto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc9002() {
        let ms = Duration::from_millis;
        let zero = Duration::ZERO;
        let mut r = RttEstimator::new(ms(100), ms(20), ms(2000));
        assert_eq!(r.rto(), ms(100) + ms(200));
        r.sample(ms(40), zero);
        assert_eq!(r.srtt(), ms(40));
        assert_eq!(r.rto(), ms(40) + ms(80));
        r.sample(ms(80), zero);
        // rttvar = (3*20 + 40)/4 = 25; srtt = (7*40 + 80)/8 = 45
        assert_eq!(r.srtt(), ms(45));
        assert_eq!(r.rto(), ms(145));
        assert_eq!(r.rto_backoff(1), ms(290));
        assert_eq!(r.rto_backoff(10), ms(2000));
        let mut fast = RttEstimator::new(ms(1), ms(20), ms(2000));
        fast.sample(Duration::from_micros(50), zero);
        assert_eq!(fast.rto(), ms(20), "clamped to the minimum");
    }

    /// The peer's ack delay is taken off a sample (never below the smallest RTT seen) and
    /// added to the timeout.
    #[test]
    fn ack_delay_is_subtracted_and_waited_for() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(ms(100), ms(1), ms(2000));
        r.sample(ms(10), Duration::ZERO);
        r.sample(ms(30), ms(20));
        assert_eq!(
            r.srtt(),
            ms(10),
            "30 ms of which the peer held the ack 20 ms"
        );
        // rttvar = (3*5 + 0)/4 = 3.75 ms; rto = 10 + 15 + 20 (ack delay).
        assert_eq!(r.rto(), ms(45));
        r.sample(ms(12), ms(8));
        assert_eq!(
            r.srtt(),
            (ms(10) * 7 + ms(12)) / 8,
            "12 - 8 would be below the smallest RTT seen (10): not subtracted"
        );
    }
}
