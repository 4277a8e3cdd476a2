//! The short soaks CI runs: `hrpc-bench soak` with real child processes SIGKILLed and
//! restarted while they exchange messages through a lossy, partitioning relay. Each must exit
//! 0 within its time limit and end stdout with the JSON the soak promises: every message
//! delivered, nothing lost, reordered or corrupt, and at most one duplicate per kill.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Runs `soak --msgs msgs --kills kills --loss 5 --partition-every 0.5 extra… --json` and
/// checks its JSON.
fn soak(msgs: u64, kills: u64, extra: &[&str]) {
    let limit = Duration::from_secs(60);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hrpc-bench"))
        .args([
            "soak",
            "--msgs",
            &msgs.to_string(),
            "--kills",
            &kills.to_string(),
        ])
        .args([
            "--loss",
            "5",
            "--max-secs",
            &limit.as_secs().to_string(),
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run hrpc-bench soak");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON last line");
    eprintln!("{v} in {took:?}");
    assert_eq!(count(&v, "sent"), msgs, "{v}");
    assert_eq!(count(&v, "delivered"), msgs, "{v}");
    assert_eq!(count(&v, "lost"), 0, "{v}");
    assert_eq!(count(&v, "reordered"), 0, "{v}");
    assert_eq!(count(&v, "corrupt"), 0, "{v}");
    assert_eq!(count(&v, "kills"), kills, "{v}");
    assert!(count(&v, "duplicated") <= kills, "{v}");
    assert!(count(&v, "partitions") >= 1, "{v}");
    assert!(took < limit + Duration::from_secs(15), "took {took:?}");
}

#[test]
fn short_soak_loses_nothing_through_kills_and_chaos() {
    soak(200_000, 100, &["--seed", "12"]);
}

#[test]
fn short_durable_soak_loses_nothing() {
    // Enough messages that the run outlasts a few partition intervals.
    soak(300_000, 60, &["--durable", "--seed", "7"]);
}
