//! Store limits as a node's caller meets them: a capacity that can never work is refused when
//! the node opens; a message that can never fit is `TooLarge` (not backpressure, so a
//! well-behaved caller does not retry it forever); a full store that acks will drain is
//! `StoreFull` (backpressure); and the disk space a large message took comes back once it is
//! acknowledged and delivered, on both sides, with nothing but the ordinary poll loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
mod common;

use std::time::Duration;

use common::nodes::pump;
use hrpc_node::{Durability, NodeConfig, NodeError, SendError};

/// `(sum of file lengths, sum of allocated bytes)` of the files in `dir` (`ls -l`, `du`).
fn disk_usage(dir: &Path) -> (u64, u64) {
    let (mut len, mut alloc) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        len += m.len();
        alloc += m.blocks() * 512;
    }
    (len, alloc)
}

/// One 16 MiB message from node 1 to node 2 over loopback; once it is delivered and
/// acknowledged, both stores go back to at most 1 MiB on disk within 3 s of polling, in both
/// durability modes (the node's poll loop drives the reclaim).
#[test]
fn big_message_space_comes_back_on_both_sides() {
    for durability in [Durability::Process, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
        let mut b = NodeConfig::new(&b_dir, 2)
            .bind("127.0.0.1:0".parse().unwrap())
            .mtu(65_507)
            .durability(durability)
            .open()
            .unwrap();
        let mut a = NodeConfig::new(&a_dir, 1)
            .bind("127.0.0.1:0".parse().unwrap())
            .peer(2, b.local_addr())
            .mtu(65_507)
            .durability(durability)
            .open()
            .unwrap();
        let msg: Vec<u8> = (0..hrpc_wire::MAX_MESSAGE_LEN)
            .map(|i| (i % 251) as u8)
            .collect();
        let seq = a.send(2, &msg).unwrap();
        assert!(disk_usage(&a_dir).0 > 16 << 20);
        let mut got = [Vec::new(), Vec::new()];
        let acked = pump(
            &mut [&mut a, &mut b],
            &mut got,
            Duration::from_millis(1),
            Duration::from_secs(60),
            |n, got| {
                !got[1].is_empty() && n[0].store().outbound_pending(2) == Some((seq + 1, seq + 1))
            },
        );
        assert!(acked, "{durability:?}: not delivered and acked");
        assert!(got[1].iter().all(|g| g.2 == msg));
        let usage = || (disk_usage(&a_dir), disk_usage(&b_dir));
        let small =
            |(ua, ub): ((u64, u64), (u64, u64))| ua.0.max(ua.1).max(ub.0).max(ub.1) <= 1 << 20;
        let reclaimed = pump(
            &mut [&mut a, &mut b],
            &mut got,
            Duration::from_millis(20),
            Duration::from_secs(3),
            |_, _| small(usage()),
        );
        let (ua, ub) = usage();
        assert!(
            reclaimed,
            "{durability:?}: sender {ua:?}, receiver {ub:?} (length, allocated) after 3 s"
        );
    }
}

/// `store_capacity(1000)` is refused by `open` with a message naming the minimum.
#[test]
fn capacity_below_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = NodeConfig::new(dir.path().join("n"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .store_capacity(1000)
        .open()
        .unwrap_err();
    match &err {
        NodeError::Config(m) => {
            let m = m.to_string();
            assert!(
                m.contains("1000") && m.contains(&hrpc_store::MIN_CAPACITY.to_string()),
                "{m}"
            );
        }
        e => panic!("expected a configuration error, got {e:?}"),
    }
    assert!(
        !dir.path().join("n").exists(),
        "a refused open created the store"
    );
}

/// With the smallest legal capacity: a message larger than it is `TooLarge` and not
/// backpressure; filling the store gives `StoreFull`, which is backpressure.
#[test]
fn too_large_is_not_backpressure_but_full_is() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeConfig::new(dir.path().join("n"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .store_capacity(hrpc_store::MIN_CAPACITY)
        .open()
        .unwrap();
    let sender = node.sender();
    let cap = hrpc_store::MIN_CAPACITY as usize;
    match sender.send(2, &vec![0; cap]) {
        Err(e @ SendError::TooLarge { len, max }) => {
            assert_eq!(len, cap);
            assert!(max < cap, "{max}");
            assert!(!e.is_backpressure());
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut sent = 0;
    let err = loop {
        match sender.send(2, &vec![1; 20_000]) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "a 64 KiB store took {sent} messages of 20 kB");
    };
    assert!(sent >= 2, "{sent}");
    assert!(matches!(err, SendError::StoreFull(_)), "{err:?}");
    assert!(err.is_backpressure());
}
