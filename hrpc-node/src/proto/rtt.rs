//! Round-trip time estimate and retransmission timeout (RFC 6298).

use std::time::Duration;

/// Smoothed RTT, its variation, and the retransmission timeout derived from them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    initial: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

/// Clock granularity term `G` of RFC 6298; the poll loop runs on µs timestamps.
const GRANULARITY: Duration = Duration::from_micros(100);

impl RttEstimator {
    pub(crate) fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: initial / 2,
            initial,
            min_rto,
            max_rto,
        }
    }

    /// Adds a sample (already corrected for the peer's ack delay).
    pub(crate) fn sample(&mut self, rtt: Duration) {
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

    /// Whether any sample has been taken.
    pub(crate) fn has_sample(&self) -> bool {
        self.srtt.is_some()
    }

    /// The smoothed RTT (the initial guess before any sample).
    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.initial)
    }

    /// RTO before backoff: `SRTT + max(G, 4·RTTVAR)`, clamped.
    pub(crate) fn rto(&self) -> Duration {
        let rto = self
            .srtt()
            .saturating_add(self.rttvar.saturating_mul(4).max(GRANULARITY));
        rto.clamp(self.min_rto, self.max_rto)
    }

    /// RTO after `backoff` consecutive timeouts (doubling, clamped).
    pub(crate) fn rto_backoff(&self, backoff: u32) -> Duration {
        let factor = 1u32 << backoff.min(16);
        self.rto().saturating_mul(factor).min(self.max_rto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimator follows RFC 6298: first sample sets SRTT and RTTVAR = R/2,
    /// later samples smooth with 1/8 and 1/4; RTO is clamped and backs off.
    #[test]
    fn follows_rfc6298() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(ms(100), ms(20), ms(2000));
        assert_eq!(r.rto(), ms(100) + ms(200));
        r.sample(ms(40));
        assert_eq!(r.srtt(), ms(40));
        assert_eq!(r.rto(), ms(40) + ms(80));
        r.sample(ms(80));
        // rttvar = (3*20 + 40)/4 = 25; srtt = (7*40 + 80)/8 = 45
        assert_eq!(r.srtt(), ms(45));
        assert_eq!(r.rto(), ms(145));
        assert_eq!(r.rto_backoff(1), ms(290));
        assert_eq!(r.rto_backoff(10), ms(2000));
        let mut fast = RttEstimator::new(ms(1), ms(20), ms(2000));
        fast.sample(Duration::from_micros(50));
        assert_eq!(fast.rto(), ms(20), "clamped to the minimum");
    }
}
