//! `hrpc-bench pair` end to end: two real child processes on loopback, every message checked.
//! A run must report exactly what it sent as delivered, with nothing lost, duplicated or
//! corrupt — with and without the impairing relay in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use hrpc_bench::pair::PairResult;

/// Runs `hrpc-bench pair ARGS --json` (bounded by `--secs 1` plus the drain) and parses the
/// last stdout line.
fn pair(args: &[&str]) -> PairResult {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hrpc-bench"))
        .args(["pair", "--secs", "1", "--json"])
        .args(args)
        .output()
        .expect("run hrpc-bench pair");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pair {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "pair took too long"
    );
    let last = stdout.lines().last().expect("pair printed nothing");
    let r: PairResult = serde_json::from_str(last).expect("last line is the JSON result");
    let v: serde_json::Value = serde_json::from_str(last).expect("valid JSON");
    for key in [
        "msgs_per_sec",
        "mb_per_sec",
        "sent",
        "delivered",
        "lost",
        "duplicated",
        "reordered",
        "corrupt",
        "rss_max_kb",
    ] {
        assert!(
            v.get(key).is_some_and(|x| x.is_number()),
            "{key} missing in {last}"
        );
    }
    r
}

fn assert_clean(r: &PairResult) {
    assert!(r.sent > 0, "nothing was sent: {r:?}");
    assert_eq!(r.delivered, r.sent, "{r:?}");
    assert_eq!((r.lost, r.duplicated, r.corrupt), (0, 0, 0), "{r:?}");
    assert!(r.msgs_per_sec > 0.0 && r.rss_max_kb > 0, "{r:?}");
}

#[test]
fn pair_delivers_everything_once() {
    assert_clean(&pair(&["--size", "100"]));
}

#[test]
fn pair_through_a_lossy_relay_delivers_everything_once() {
    assert_clean(&pair(&["--size", "100", "--loss", "5"]));
}

#[test]
fn pair_with_several_senders_and_sync_durability() {
    assert_clean(&pair(&["--size", "1000", "--peers", "8", "--durable"]));
}

#[test]
fn pair_with_several_senders_through_the_lossy_relay() {
    // The relay gives each sending node its own server-facing socket; replies must find
    // their way back to the right node or its messages are never acknowledged.
    assert_clean(&pair(&["--size", "100", "--peers", "8", "--loss", "5"]));
}
