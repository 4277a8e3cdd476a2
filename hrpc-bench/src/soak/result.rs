//! The soak's result: the counts the run is judged by, when they make a clean run, and the
//! human summary printed before the JSON line.

use serde::{Deserialize, Serialize};

use super::SoakOpts;

/// The result of a soak; the contract fields come first, and with `--json` it is the last
/// line of stdout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakResult {
    /// Messages committed by both senders.
    pub sent: u64,
    /// Distinct intact messages delivered.
    pub delivered: u64,
    /// Committed but never delivered.
    pub lost: u64,
    /// Deliveries of a message already delivered.
    pub duplicated: u64,
    /// New messages delivered after a higher-numbered one.
    pub reordered: u64,
    /// Deliveries that do not match the message sent with that seq (and torn log records).
    pub corrupt: u64,
    /// SIGKILLs delivered.
    pub kills: u32,
    /// Kills of side A and side B.
    pub kills_per_side: [u32; 2],
    /// Duplicates not of the handler-crash kind (see the [`soak`](crate::soak) module docs).
    pub unexplained_duplicates: u64,
    /// Both sides finished (all sent, acknowledged, delivered) before the deadline.
    pub complete: bool,
    /// Partition windows the relay began during the run.
    pub partitions: u32,
    /// Wall time in seconds.
    pub secs: f64,
}

impl SoakResult {
    /// Complete, nothing lost, reordered or corrupt, and only handler-crash duplicates, at
    /// most one per kill.
    pub fn clean(&self) -> bool {
        self.complete
            && self.lost == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.unexplained_duplicates == 0
            && self.duplicated <= u64::from(self.kills)
    }
}

/// The human summary `soak` prints before the JSON line.
pub fn summary(opts: &SoakOpts, r: &SoakResult) -> String {
    format!(
        "soak: {} msgs of {} B ({} A->B, {} B->A), {} kills (A {}, B {}), {}% loss, {} partitions{}, \
         seed {}: sent {}, delivered {}, lost {}, duplicated {} ({} unexplained), reordered {}, \
         corrupt {}; {} in {:.1} s",
        opts.msgs,
        opts.size,
        opts.quota(0),
        opts.quota(1),
        r.kills,
        r.kills_per_side[0],
        r.kills_per_side[1],
        opts.loss,
        r.partitions,
        if opts.durable { ", Sync" } else { "" },
        opts.seed,
        r.sent,
        r.delivered,
        r.lost,
        r.duplicated,
        r.unexplained_duplicates,
        r.reordered,
        r.corrupt,
        if r.complete { "complete" } else { "INCOMPLETE" },
        r.secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_result_needs_every_count_right() {
        let ok = SoakResult {
            sent: 10,
            delivered: 10,
            duplicated: 2,
            kills: 3,
            complete: true,
            ..SoakResult::default()
        };
        assert!(ok.clean());
        for bad in [
            SoakResult {
                lost: 1,
                ..ok.clone()
            },
            SoakResult {
                reordered: 1,
                ..ok.clone()
            },
            SoakResult {
                corrupt: 1,
                ..ok.clone()
            },
            SoakResult {
                duplicated: 4,
                ..ok.clone()
            },
            SoakResult {
                unexplained_duplicates: 1,
                ..ok.clone()
            },
            SoakResult {
                complete: false,
                ..ok.clone()
            },
        ] {
            assert!(!bad.clean(), "{bad:?}");
        }
        let json = serde_json::to_string(&ok).unwrap();
        assert!(json.starts_with(
            r#"{"sent":10,"delivered":10,"lost":0,"duplicated":2,"reordered":0,"corrupt":0,"kills":3,"#
        ), "{json}");
    }
}
