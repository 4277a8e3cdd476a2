//! Batch paths: `OutboundProducer::send_batch_within`, `Store::outbound_run` and
//! `Store::put_inbound_batch` do what the one-message calls do, stop where they must, and a
//! process dying in the middle of a batch commit leaves a prefix of it (seq order), nothing
//! damaged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use hrpc_store::{InboundPut, SendWindow, Store, StoreConfig, StoreError};

const CHILD_ENV: &str = "HRPC_BATCH_CHILD";

fn cfg() -> StoreConfig {
    StoreConfig::new(1)
}

fn body(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 7 + k) as u8).collect()
}

/// A batch gets consecutive seqs, each message reads back as filled, and survives a reopen.
#[test]
fn send_batch_commits_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        let p = store.producer();
        assert_eq!(p.send(4, b"first").unwrap(), 1);
        let seqs = p
            .send_batch_within(4, 100, 600, u64::MAX, |i, b| {
                b.copy_from_slice(&body(i, 100))
            })
            .unwrap();
        assert_eq!(seqs, 2..602);
        assert_eq!(p.send(4, b"after").unwrap(), 602);
        for (i, seq) in (2..602).enumerate() {
            assert_eq!(
                store.outbound_message(4, seq).unwrap().payload(),
                &body(i, 100)[..]
            );
        }
        let empty = p.send_batch_within(4, 10, 0, u64::MAX, |_, _| {}).unwrap();
        assert!(empty.is_empty());
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.outbound_pending(4), Some((1, 603)));
    assert_eq!(
        store.outbound_message(4, 301).unwrap().payload(),
        &body(299, 100)[..]
    );
}

/// The window stops a batch short, counting what is pending; a full window is `WindowFull`.
#[test]
fn send_batch_respects_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let p = store.producer();
    p.send(3, &[1; 10]).unwrap();
    let seqs = p.send_batch_within(3, 10, 50, 20u64, |_, _| {}).unwrap();
    assert_eq!(seqs, 2..21);
    assert!(matches!(
        p.send_batch_within(3, 10, 5, 20u64, |_, _| {}),
        Err(StoreError::WindowFull { unacked: 20, .. })
    ));
    // Bytes: 20 × 10 pending, room for 5 more of 10 under 250.
    let limit = SendWindow {
        msgs: 1000,
        bytes: 250,
    };
    assert_eq!(
        p.send_batch_within(3, 10, 50, limit, |_, _| {}).unwrap(),
        21..26
    );
}

/// A panicking fill commits nothing of its chunk and gives every slot back.
#[test]
fn send_batch_fill_panic_releases() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    let p = store.producer();
    let before = store.usage().0;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.send_batch_within(8, 100, 10, u64::MAX, |i, _| {
            assert!(i < 5, "boom");
        })
    }));
    assert!(r.is_err());
    assert_eq!(store.usage().0, before);
    assert_eq!(store.outbound_pending(8).map_or(1, |(_, n)| n), 1);
    // Nothing is outstanding: closing does not wait.
    store.close_producers();
    assert!(store.wait_producers(std::time::Duration::ZERO));
    assert!(matches!(
        p.send_batch_within(8, 10, 3, u64::MAX, |_, _| {}),
        Err(StoreError::Closed)
    ));
}

/// `outbound_run` returns what `outbound_message` returns, across acks, gap markers and
/// messages committed after the run was started.
#[test]
fn outbound_run_matches_single_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    let p = store.producer();
    for i in 0..100 {
        p.send(2, &body(i, 30 + i % 7)).unwrap();
    }
    store.release_outbound_through(2, 10).unwrap();
    store.discard_outbound(2, 40).unwrap();
    let p = store.producer();
    let mut run = store.outbound_run(2, 1400);
    for seq in 1..=120 {
        if seq == 101 {
            p.send(2, b"late").unwrap();
        }
        let a = run.message(seq);
        let b = store.outbound_message(2, seq);
        assert_eq!(
            a.map(|m| (m.seq(), m.payload().to_vec(), m.lost_through(), m.crc())),
            b.map(|m| (m.seq(), m.payload().to_vec(), m.lost_through(), m.crc())),
            "seq {seq}"
        );
    }
    assert!(store.outbound_run(77, 0).message(1).is_none());
    // A small room reads short runs, with the same results.
    let mut run = store.outbound_run(2, 10);
    for seq in 41..=101 {
        assert_eq!(
            run.message(seq).map(|m| m.payload().to_vec()),
            store.outbound_message(2, seq).map(|m| m.payload().to_vec())
        );
    }
}

/// `put_inbound_batch` persists exactly what `put_inbound_checked` would have accepted, in any
/// order, and leaves the rest unchanged for the one-message path to refuse.
#[test]
fn put_inbound_batch_mask() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), &cfg()).unwrap();
        // Unknown peer: nothing (the one-message path creates its record).
        let a = body(1, 40);
        let one = [InboundPut {
            seq: 1,
            payload: &a,
            crc: crc32c::crc32c(&a),
            flags: 0,
        }];
        assert_eq!(store.put_inbound_batch(9, &one), 0);
        store.put_inbound(9, 1, &a).unwrap();
        store.consume_inbound(9, 1).unwrap();
        let bodies: Vec<Vec<u8>> = (0..8).map(|i| body(i, 50 + i)).collect();
        let put = |seq: u64, i: usize, good: bool| InboundPut {
            seq,
            payload: &bodies[i],
            crc: crc32c::crc32c(&bodies[i]) ^ u32::from(!good),
            flags: 0,
        };
        let batch = [
            put(3, 0, true),
            put(1, 1, true), // consumed already
            put(2, 2, true),
            put(4, 3, false), // bad checksum
            put(3, 4, true),  // a second copy of seq 3 in the same batch
            put(0, 5, true),  // seq 0
            put(6, 6, true),
        ];
        assert_eq!(store.put_inbound_batch(9, &batch), 0b100_0101);
        assert!(matches!(
            store.put_inbound_checked(9, 4, &bodies[3], batch[3].crc, 0),
            Err(StoreError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            store.put_inbound_checked(9, 3, &bodies[4], batch[4].crc, 0),
            Err(StoreError::BadSeq { .. })
        ));
        assert_eq!(store.inbound_seqs(9), vec![2, 3, 6]);
    }
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.inbound_seqs(9), vec![2, 3, 6]);
    assert_eq!(
        store.inbound_message(9, 3).unwrap().payload(),
        &body(0, 50)[..]
    );
    assert_eq!(
        store.inbound_message(9, 6).unwrap().payload(),
        &body(6, 56)[..]
    );
    store.consume_inbound(9, 2).unwrap();
    store.consume_inbound(9, 3).unwrap();
    assert_eq!(store.inbound_consumed(9), 3);
}

/// Child: commits a batch of 200 messages to peer 4 after one single send; the parent arms a
/// fail point that aborts the process just before the batch's 120th message is published
/// (the 121st publish, counting the single send's).
#[test]
fn batch_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir), &cfg()).unwrap();
    let p = store.producer();
    p.send(4, &body(1000, 64)).unwrap();
    let _ = p.send_batch_within(4, 64, 200, u64::MAX, |i, b| b.copy_from_slice(&body(i, 64)));
    // Not reached when the fail point fires.
    std::process::exit(0);
}

/// A process aborted in the middle of publishing a batch leaves the messages published before
/// the abort, a contiguous prefix of the batch in seq order, intact; the rest never existed.
#[test]
fn batch_abort_mid_publish_leaves_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    // The single send publishes first (hit 1); hit 121 is the batch's 120th message.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "batch_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .env("HRPC_STORE_FAILPOINT", "commit.before_publish:121")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the fail point must abort the child");
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert!(store.open_report().damage.is_empty());
    // Seq 1 is the single send, 2..=120 the first 119 of the batch.
    assert_eq!(store.outbound_seqs(4), (1..=120).collect::<Vec<_>>());
    assert_eq!(
        store.outbound_message(4, 1).unwrap().payload(),
        &body(1000, 64)[..]
    );
    for (i, seq) in (2..=120).enumerate() {
        assert_eq!(
            store.outbound_message(4, seq).unwrap().payload(),
            &body(i, 64)[..]
        );
    }
    // The seqs of the lost tail are assigned again.
    assert_eq!(store.producer().send(4, b"next").unwrap(), 121);
}
