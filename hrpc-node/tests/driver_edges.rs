//! The promise at its edges with real nodes on loopback UDP sockets: a store
//! damaged while its node was stopped, and a sender restarted in the middle of
//! a 16 MiB message. Every loop is bounded in count and wall time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::nodes::Mesh;
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
    let b = NodeConfig::new(dir.path().join("b"), 2)
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

    let mut mesh = Mesh::new();
    mesh.insert(a);
    mesh.insert(b);
    mesh.run_until(
        |m| m.got(2).last().map(|g| g.1) == Some(301),
        Duration::from_millis(2),
        Duration::from_secs(30),
    );
    let got: Vec<u64> = mesh.got(2).iter().map(|g| g.1).collect();
    let lost_at_b: Vec<_> = mesh.events[&2]
        .iter()
        .filter_map(|e| match e {
            Event::Lost { peer: 1, range } => Some(range.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        common::accounted(&got, &lost_at_b),
        (1..=301).collect::<Vec<_>>(),
        "lost at b: {lost_at_b:?}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    let a = mesh.node(1);
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
    let b = NodeConfig::new(dir.path().join("b"), 2)
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
    let mut mesh = Mesh::new();
    mesh.insert(a);
    mesh.insert(b);
    let received = |m: &mut Mesh| m.node(2).stats().core.bytes_received;
    mesh.run_until(
        |m| received(m) >= 8 << 20,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    assert!(received(&mut mesh) >= 8 << 20);
    assert!(
        mesh.got(2).is_empty(),
        "the whole message went before the restart"
    );
    drop(mesh.remove(1));
    mesh.insert(a_cfg(port).open().unwrap());
    mesh.run_until(
        |m| m.got(2).len() >= 2,
        Duration::from_millis(1),
        Duration::from_secs(30),
    );
    let got: Vec<&[u8]> = mesh.got(2).iter().map(|g| g.2.as_slice()).collect();
    assert_eq!(got.len(), 2, "not delivered within 30 s of the restart");
    assert!(got[0] == big.as_slice());
    assert_eq!(got[1], b"after");
}
