//! The promise at its edges with real nodes on loopback UDP sockets: a store
//! damaged while its node was stopped, and a sender restarted in the middle of
//! a 16 MiB message. Every loop is bounded in count and wall time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use hrpc_node::{Event, NodeConfig, NodeError, StoreError};

/// A node with 300 messages pending for a peer that has not read them is
/// stopped, and half of its first segment is cut off. Reopening it fails with
/// `Damaged` naming the file and offset; with `recover_damaged` it opens,
/// reports the lost range (open report and `OutboundLost`), keeps numbering
/// from 301, and the peer then gets every seq delivered or reported `Lost`,
/// exactly once, in order, and the message sent after the damage.
#[test]
fn damaged_store_is_refused_then_recovered_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .bind("127.0.0.1:0".parse().unwrap())
        .open()
        .unwrap();
    let b_addr = b.local_addr();
    let a_cfg = |recover: bool| {
        NodeConfig::new(dir.path().join("a"), 1)
            .bind("127.0.0.1:0".parse().unwrap())
            .peer(2, b_addr)
            .recover_damaged(recover)
    };
    let mut a = a_cfg(false).open().unwrap();
    for i in 0..300u32 {
        a.send(2, &i.to_le_bytes().repeat(25)).unwrap();
    }
    // A few polls: the messages go out (b does not read them yet).
    for _ in 0..5 {
        a.poll(&mut |_, _| {}).unwrap();
    }
    a.close(Duration::from_millis(10)).unwrap();
    let seg = dir.path().join("a").join("seg-000000");
    let len = common::cut_in_half(&seg);

    match a_cfg(false).open() {
        Err(NodeError::Store(StoreError::Damaged { file, offset, .. })) => {
            assert_eq!(file, seg);
            assert_eq!(offset, len / 2);
        }
        other => panic!("expected a Damaged error, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len / 2);

    let mut a = a_cfg(true).open().unwrap();
    let lost: Vec<_> = a.open_report().lost.clone();
    assert!(!lost.is_empty());
    assert_eq!(a.next_outbound_seq(2), 301, "numbering went back");
    let mut outbound_lost = Vec::new();
    while let Some(e) = a.next_event() {
        if let Event::OutboundLost { peer: 2, range } = e {
            outbound_lost.push(range);
        }
    }
    assert_eq!(
        outbound_lost,
        lost.iter().map(|r| r.first..=r.last).collect::<Vec<_>>()
    );
    assert_eq!(a.send(2, b"after the damage").unwrap(), 301);

    let mut got = Vec::new();
    let mut lost_at_b = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.last() != Some(&301) && Instant::now() < deadline {
        a.poll(&mut |_, _| {}).unwrap();
        b.poll(&mut |_, d| got.push(d.seq)).unwrap();
        while let Some(e) = b.next_event() {
            if let Event::Lost { peer: 1, range } = e {
                lost_at_b.push(range);
            }
        }
        b.wait(Some(Duration::from_millis(2))).unwrap();
    }
    assert_eq!(
        common::accounted(&got, &lost_at_b),
        (1..=301).collect::<Vec<_>>(),
        "lost at b: {lost_at_b:?}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    let flushed = a.flush(Duration::from_secs(5));
    assert!(flushed.is_ok(), "{flushed:?}");
    assert!(a.is_acked(2, 301));
}

/// Two real nodes, a 16 MiB message and then a small one; the sender is
/// dropped (its store left as a killed process leaves it) once the receiver
/// holds about half, and reopened on the same store and port. Both messages
/// are delivered, in order, within a bounded time.
#[test]
fn sender_restarted_in_the_middle_of_a_large_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .bind("127.0.0.1:0".parse().unwrap())
        .open()
        .unwrap();
    let b_addr = b.local_addr();
    let a_cfg = |port: u16| {
        NodeConfig::new(dir.path().join("a"), 1)
            .bind(format!("127.0.0.1:{port}").parse().unwrap())
            .peer(2, b_addr)
    };
    let mut a = a_cfg(0).open().unwrap();
    let port = a.local_addr().port();
    let big: Vec<u8> = (0..16usize << 20).map(|i| (i % 251) as u8).collect();
    a.send(2, &big).unwrap();
    a.send(2, b"after").unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.stats().core.bytes_received < 8 << 20 && Instant::now() < deadline {
        a.poll(&mut |_, _| {}).unwrap();
        b.poll(&mut |_, d| got.push(d.payload.to_vec())).unwrap();
    }
    assert!(b.stats().core.bytes_received >= 8 << 20);
    assert!(got.is_empty(), "the whole message went before the restart");
    drop(a);
    let mut a = a_cfg(port).open().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 && Instant::now() < deadline {
        a.poll(&mut |_, _| {}).unwrap();
        b.poll(&mut |_, d| got.push(d.payload.to_vec())).unwrap();
        b.wait(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(got.len(), 2, "not delivered within 30 s of the restart");
    assert!(got[0] == big);
    assert_eq!(got[1], b"after");
}
