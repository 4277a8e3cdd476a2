//! `hrpc-bench inspect STORE_DIR [--json]` as a process: on a healthy store (closed, and open
//! in this process) it exits 0 and its JSON object holds the store's own figures; on a damaged
//! store it exits 1 and names the file and offset; on a missing directory it exits 2 with a
//! message, and never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use hrpc_store::{Store, StoreConfig};
use serde_json::Value;

/// Runs `hrpc-bench inspect` with `args`; returns the exit code, stdout and stderr.
fn inspect(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hrpc-bench"))
        .arg("inspect")
        .arg(dir)
        .args(args)
        .output()
        .expect("run hrpc-bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn json(dir: &Path, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, stdout, stderr) = inspect(dir, &a);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON object expected: {stdout}\n{stderr}"
    );
    (code, serde_json::from_str(lines[0]).expect("JSON"))
}

/// Store of node 4: 10 messages to peer 1 (3 acknowledged), 5 inbound from peer 2 (1
/// consumed).
fn build(dir: &Path) -> Store {
    let mut s = Store::open(dir, &StoreConfig::new(4)).unwrap();
    for i in 0..10u8 {
        s.producer().send(1, &[i; 100]).unwrap();
    }
    s.release_outbound_through(1, 3).unwrap();
    for seq in 1..=5u64 {
        s.put_inbound(2, seq, &[7; 50]).unwrap();
    }
    s.consume_inbound(2, 1).unwrap();
    s
}

fn peer(v: &Value, id: u64) -> &Value {
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == id)
        .unwrap_or_else(|| panic!("peer {id} in {v}"))
}

#[test]
fn healthy_store_exits_0_with_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());

    // Open in this process: the lock is held, and the figures are the store's.
    let (code, v) = json(dir.path(), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["lock"], "held");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["node_id"], 4);
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["damage_count"], 0);
    assert!(v.get("epoch").is_none(), "the epoch is a secret: {v}");
    let p1 = peer(&v, 1);
    assert_eq!(p1["lowest_outbound_seq"], 4);
    assert_eq!(p1["next_outbound_seq"], 11);
    assert_eq!(p1["acked_outbound_seq"], 3);
    assert_eq!(p1["outbound_count"], 7);
    assert_eq!(p1["outbound_bytes"], 700);
    let p2 = peer(&v, 2);
    assert_eq!(p2["consumed_inbound_seq"], 1);
    assert_eq!(p2["lowest_inbound_seq"], 2);
    assert_eq!(p2["highest_inbound_seq"], 5);
    assert_eq!(p2["inbound_count"], 4);
    assert_eq!(v["used_bytes"], store.usage().0);
    assert!(!v["segments"].as_array().unwrap().is_empty());

    // The owner still works, and `--show-secrets` prints its epoch.
    store.producer().send(1, b"x").unwrap();
    let epoch = store.epoch();
    drop(store);
    let (code, v) = json(dir.path(), &["--show-secrets"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["lock"], "free");
    assert_eq!(v["epoch"], epoch);
    assert_eq!(peer(&v, 1)["next_outbound_seq"], 12);

    // The text report.
    let (code, text, _) = inspect(dir.path(), &[]);
    assert_eq!(code, 0);
    assert!(text.contains("node 4"), "{text}");
    assert!(
        text.contains("peer 1: outbound 4..12 pending in 8 slots"),
        "{text}"
    );
    assert!(text.contains("damage: none"), "{text}");
    assert!(!text.contains(&format!("{epoch:#018x}")), "{text}");
}

#[test]
fn damaged_store_exits_1_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path()));
    let seg = dir.path().join("seg-000000");
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(64 + 192 * 5).unwrap();
    drop(f);

    let (code, v) = json(dir.path(), &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["healthy"], false);
    let d = &v["damage"][0];
    assert!(d["file"].as_str().unwrap().ends_with("seg-000000"), "{v}");
    assert_eq!(d["offset"], 64 + 192 * 5);
    assert!(
        d["what"]
            .as_str()
            .unwrap()
            .contains(&format!("of {len} bytes")),
        "{v}"
    );
    assert!(!v["lost"].as_array().unwrap().is_empty(), "{v}");

    let (code, text, _) = inspect(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!("seg-000000 @ {}: cut short", 64 + 192 * 5)),
        "{text}"
    );
}

#[test]
fn unreadable_store_exits_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let (code, stdout, stderr) = inspect(&missing, &[]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("read store directory") && stderr.contains("missing"),
        "{stderr}"
    );
    let (code, v) = json(&missing, &[]);
    assert_eq!(code, 2);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("read store directory")
    );

    // A directory that is no store, and one whose `meta` is garbage.
    let (code, _, stderr) = inspect(dir.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    std::fs::write(dir.path().join("meta"), [0xa5; 300]).unwrap();
    let (code, _, stderr) = inspect(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("corrupt"), "{stderr}");
}

/// Outstanding calls show per callee, in the JSON and the text report; a reply's consumption
/// of its request shows as recovery would make it.
#[test]
fn outstanding_calls_and_replies_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = build(dir.path());
        let p = s.producer();
        for _ in 0..2 {
            let id = p.new_call_id();
            let mut r = p.reserve(3, 4).unwrap();
            r.payload_mut().copy_from_slice(b"req?");
            r.commit_request(id, u64::MAX).unwrap();
        }
        // A reply to inbound 2 from peer 2 (consumed through 1 in the record).
        let mut r = p.reserve(2, 3).unwrap();
        r.payload_mut().copy_from_slice(b"ans");
        r.commit_reply(2).unwrap();
    }
    let (code, v) = json(dir.path(), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(peer(&v, 3)["calls_pending"], 2);
    assert_eq!(peer(&v, 3)["outbound_count"], 2);
    assert_eq!(peer(&v, 1)["calls_pending"], 0);
    assert_eq!(peer(&v, 2)["consumed_inbound_seq"], 2);
    assert_eq!(peer(&v, 2)["inbound_count"], 3);
    let (_, text, _) = inspect(dir.path(), &[]);
    assert!(text.contains("2 calls outstanding"), "{text}");
}
