//! What the report holds: the matrix of hrpc configurations ([`RowSpec`], [`matrix`]), a
//! finished row with its comparison figures ([`Row`]), and the whole [`Report`] as it is
//! written to `report.json`.

use serde::{Deserialize, Serialize};

use crate::c_seed::CSeedResult;
use crate::latency::LatencyResult;
use crate::pair::PairResult;
use crate::peer::PeerResult;
use crate::soak::SoakResult;

/// One hrpc configuration of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowSpec {
    /// Message size.
    pub size: usize,
    /// UDP MTU.
    pub mtu: usize,
    /// Sync durability.
    pub durable: bool,
    /// Relay loss percentage.
    pub loss: f64,
    /// Sending nodes.
    pub peers: u32,
}

impl RowSpec {
    pub(super) const fn new(size: usize) -> Self {
        RowSpec {
            size,
            mtu: 1472,
            durable: false,
            loss: 0.0,
            peers: 1,
        }
    }

    /// `100 B, MTU 1472, Process, 0% loss, 1 peer`.
    pub fn label(&self) -> String {
        format!(
            "{} B, MTU {}, {}, {}% loss, {} peer{}",
            self.size,
            self.mtu,
            if self.durable { "Sync" } else { "Process" },
            self.loss,
            self.peers,
            if self.peers == 1 { "" } else { "s" }
        )
    }

    pub(super) fn args(&self, secs: f64) -> Vec<String> {
        let mut a = vec![
            "pair".to_owned(),
            "--json".to_owned(),
            "--size".to_owned(),
            self.size.to_string(),
            "--secs".to_owned(),
            secs.to_string(),
            "--mtu".to_owned(),
            self.mtu.to_string(),
            "--peers".to_owned(),
            self.peers.to_string(),
            "--loss".to_owned(),
            self.loss.to_string(),
        ];
        if self.durable {
            a.push("--durable".to_owned());
        }
        a
    }
}

/// The matrix: sizes 16/100/1000/64000 B, MTU 1472 and 65000, Process and Sync durability,
/// 0% and 5% loss, 1 and 1000 peers — a sensible list of rows, not every combination.
pub fn matrix() -> Vec<RowSpec> {
    let base = RowSpec::new(100);
    vec![
        base.clone(),
        RowSpec::new(16),
        RowSpec::new(1000),
        RowSpec::new(64_000),
        RowSpec {
            mtu: 65_000,
            ..base.clone()
        },
        RowSpec {
            mtu: 65_000,
            ..RowSpec::new(64_000)
        },
        RowSpec {
            durable: true,
            ..base.clone()
        },
        RowSpec {
            durable: true,
            ..RowSpec::new(64_000)
        },
        RowSpec {
            loss: 5.0,
            ..base.clone()
        },
        RowSpec {
            loss: 5.0,
            ..RowSpec::new(1000)
        },
        RowSpec {
            loss: 5.0,
            ..RowSpec::new(64_000)
        },
        RowSpec {
            peers: 1000,
            ..base.clone()
        },
        RowSpec {
            peers: 1000,
            durable: true,
            ..base
        },
    ]
}

/// One finished row of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The configuration.
    pub spec: RowSpec,
    /// hrpc's result; `None` if the run failed.
    pub hrpc: Option<PairResult>,
    /// Raw UDP msg/s at this size.
    pub raw_udp: Option<f64>,
    /// quinn and renet at this size.
    pub peer: Option<PeerResult>,
}

/// Everything the report holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Seconds per measurement.
    pub secs: f64,
    /// The rows.
    pub rows: Vec<Row>,
    /// Round trips, 100-byte messages.
    pub latency: Option<LatencyResult>,
    /// The kill-and-restart soak (`Err` text if it failed to run).
    #[serde(default)]
    pub soak: Option<Result<SoakResult, String>>,
    /// The seed README's C benchmark on hrpc-capi, if it was run (`Err` text if it failed).
    #[serde(default)]
    pub c_seed: Option<Result<CSeedResult, String>>,
    /// Wall time of the whole matrix, seconds.
    pub wall_secs: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix covers every dimension the report promises.
    #[test]
    fn matrix_covers_the_dimensions() {
        let m = matrix();
        let sizes: std::collections::BTreeSet<usize> = m.iter().map(|r| r.size).collect();
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [16, 100, 1000, 64_000]
        );
        assert!(m.iter().any(|r| r.mtu == 1472) && m.iter().any(|r| r.mtu == 65_000));
        assert!(m.iter().any(|r| r.durable) && m.iter().any(|r| !r.durable));
        assert!(m.iter().any(|r| r.loss == 5.0) && m.iter().any(|r| r.loss == 0.0));
        assert!(m.iter().any(|r| r.peers == 1000) && m.iter().any(|r| r.peers == 1));
    }
}
