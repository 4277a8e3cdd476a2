//! `hrpc-bench report`: the benchmark matrix behind `cargo xtask bench`.
//!
//! Every measurement runs as a child process of this binary (`pair … --json`, `raw-udp …`,
//! `peer …`, `latency …`) with a deadline, so a hung or crashed row is shown as failed and the
//! matrix goes on. Raw UDP and the peer libraries depend only on the message size, so they
//! run once per size and appear in every row of that size. A line is printed as each
//! measurement finishes; at the end the table is printed and written with an SVG chart:
//!
//! - `OUT/report.md`: configuration, hrpc msg/s and MB/s, raw UDP, quinn and renet msg/s,
//!   lost/duplicated/corrupt, peak RSS; then the kill-and-restart soak ([`SOAK_QUICK`] or
//!   [`SOAK_FULL`] messages and kills through a 5% lossy relay) and the latency figures;
//! - `OUT/throughput.svg`: msg/s per configuration, hrpc, raw UDP, quinn and renet side by side
//!   (log scale);
//! - `OUT/report.json`: the same numbers.
//!
//! The run fails (returns `false`) if an hrpc row failed, reported lost, duplicated or
//! corrupt messages, or ended its drain with messages unacknowledged, or if the soak failed
//! or was not clean.

mod chart;
mod child;
mod markdown;
mod rows;
mod run;

pub use chart::chart;
pub use child::{CHILD_ENV, run_json};
pub use markdown::markdown;
pub use rows::{Report, Row, RowSpec, matrix};
pub use run::{ReportOpts, run};

/// The soak row of the quick matrix: (messages, kills), 5% loss.
pub const SOAK_QUICK: (u64, u32) = (50_000, 30);
/// The soak row with `--full`.
pub const SOAK_FULL: (u64, u32) = (1_000_000, 500);
/// Relay loss of the soak row, percent.
pub const SOAK_LOSS: f64 = 5.0;
