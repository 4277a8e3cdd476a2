//! `cargo xtask loom`: the loom model-checking tests, each in its own release build.

use crate::plan::Step;

/// loom preemption bound: the short run (`ci`, `cargo xtask loom`) and `--long`.
const LOOM_PREEMPTIONS_SHORT: u32 = 2;
const LOOM_PREEMPTIONS_LONG: u32 = 3;
/// Crates whose `tests/loom.rs` the loom step runs.
const LOOM_CRATES: &[&str] = &["hrpc-store", "hrpc-node"];

pub(crate) fn loom_steps(long: bool) -> Vec<Step> {
    let preemptions = if long {
        LOOM_PREEMPTIONS_LONG
    } else {
        LOOM_PREEMPTIONS_SHORT
    };
    LOOM_CRATES
        .iter()
        .map(|&krate| {
            Step::cargo(
                format!("loom {krate}"),
                &["test", "--release", "-p", krate, "--test", "loom"],
            )
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", preemptions.to_string())
            .env("CARGO_TARGET_DIR", "target/loom")
        })
        .collect()
}
