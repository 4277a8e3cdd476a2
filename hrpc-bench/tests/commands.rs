//! `raw-udp`, `latency` and `peer` run briefly, exit 0, and end stdout with one JSON object
//! holding their documented fields as positive numbers (`peer` may report `null` for a library
//! that failed, but not for both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn json(args: &[&str]) -> serde_json::Value {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hrpc-bench"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run hrpc-bench");
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{args:?} took too long"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON last line")
}

fn positive(v: &serde_json::Value, key: &str) -> bool {
    v.get(key)
        .and_then(serde_json::Value::as_f64)
        .is_some_and(|x| x > 0.0)
}

#[test]
fn raw_udp_reports_datagrams_per_second() {
    let v = json(&["raw-udp", "--size", "100", "--secs", "0.5"]);
    assert!(positive(&v, "msgs_per_sec"), "{v}");
}

#[test]
fn latency_reports_both_transports() {
    let v = json(&["latency", "--size", "100", "--count", "300"]);
    for key in ["hrpc_p50_us", "hrpc_p99_us", "raw_p50_us", "raw_p99_us"] {
        assert!(positive(&v, key), "{key} in {v}");
    }
    let p50 = v["hrpc_p50_us"].as_f64().unwrap();
    assert!(p50 <= v["hrpc_p99_us"].as_f64().unwrap(), "{v}");
}

#[test]
fn peer_reports_quinn_and_renet() {
    let v = json(&["peer", "--size", "100", "--secs", "0.5"]);
    assert!(v.get("quinn_msgs_per_sec").is_some() && v.get("renet_msgs_per_sec").is_some());
    assert!(
        positive(&v, "quinn_msgs_per_sec") || positive(&v, "renet_msgs_per_sec"),
        "{v}"
    );
}
