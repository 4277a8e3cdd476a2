//! Delivery without consuming (`Node::poll_deferred`, `Node::consume`, `Node::redeliver`) on
//! two real nodes: a handed message is not handed again, stays in the store until consumed
//! (a reopen hands it again, a consumed one never), can be handed again on request, and a
//! gap marker waits for what was handed before it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::nodes::{DEADLINE, local, pair};
use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::Event;

/// Polls `b` (plain) and `a` (deferred, at most `max` per poll) until `a` has been handed
/// `want` more messages or a second passes with nothing new; returns the (peer, seq, payload)
/// handed.
fn hand(a: &mut Node, b: &mut Node, max: usize, want: usize) -> Vec<(u32, u64, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut quiet_since = Instant::now();
    while got.len() < want && Instant::now() < deadline {
        b.poll(&mut |_, _| {}).unwrap();
        let before = got.len();
        a.poll_deferred(max, &mut |_, d| {
            got.push((d.peer, d.seq, d.payload.to_vec()))
        })
        .unwrap();
        if got.len() > before {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    got
}

/// Polls both until A (node 1) has acknowledged B's `seq`, handing A nothing meanwhile.
fn until_acked(a: &mut Node, b: &mut Node, seq: u64) {
    let deadline = Instant::now() + DEADLINE;
    while !b.is_acked(1, seq) {
        assert!(Instant::now() < deadline, "seq {seq} never acknowledged");
        b.poll(&mut |_, _| {}).unwrap();
        a.poll_deferred(0, &mut |_, _| {}).unwrap();
        b.wait(Some(Duration::from_millis(1))).unwrap();
    }
}

fn seqs(got: &[(u32, u64, Vec<u8>)]) -> Vec<u64> {
    got.iter().map(|g| g.1).collect()
}

/// Handed messages are not handed again and not consumed; `consume` is in order and bounded
/// by what was handed; after a reopen exactly the unconsumed ones come again, to a plain
/// `poll` too.
#[test]
fn deferred_messages_stay_until_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    for i in 1..=5u8 {
        b.send(1, &[i; 10]).unwrap();
    }
    // At most 3 per poll, and none twice.
    let got = hand(&mut a, &mut b, 3, 5);
    assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5]);
    assert_eq!(got[4].2, vec![5u8; 10]);
    assert!(hand(&mut a, &mut b, 3, 1).is_empty(), "handed twice");
    assert_eq!(a.consumed_through(2), 0);

    // Consumed in order, never past what was handed.
    assert_eq!(a.consume(2, 2).unwrap(), 2);
    assert_eq!(a.consume(2, 2).unwrap(), 0);
    assert_eq!(a.consumed_through(2), 2);
    assert_eq!(a.consume(2, 3).unwrap(), 1);
    assert_eq!(a.consumed_through(2), 3);
    assert_eq!(a.consume(7, 1).unwrap(), 0, "unknown peer");

    // 4 and 5 are handed, not consumed: a reopen hands them again (to a plain poll).
    a.close(Duration::ZERO).unwrap();
    let mut a = NodeConfig::new(dir.path().join("a"), 1)
        .bind(local())
        .open()
        .unwrap();
    assert_eq!(a.consumed_through(2), 3);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        a.poll(&mut |_, d| got.push(d.seq)).unwrap();
        a.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(got, vec![4, 5]);
    assert_eq!(a.consumed_through(2), 5);
}

/// `redeliver` hands the unconsumed messages again, from the first unconsumed one; a plain
/// `poll` after `poll_deferred` hands them again and consumes them.
#[test]
fn redeliver_and_plain_poll_hand_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    for i in 1..=4u8 {
        b.send(1, &[i]).unwrap();
    }
    assert_eq!(seqs(&hand(&mut a, &mut b, 100, 4)), vec![1, 2, 3, 4]);
    a.consume(2, 1).unwrap();
    a.redeliver(2);
    // Nothing past the consumed cursor counts as handed now.
    assert_eq!(a.consume(2, 100).unwrap(), 0);
    assert_eq!(seqs(&hand(&mut a, &mut b, 100, 3)), vec![2, 3, 4]);
    let mut got = Vec::new();
    a.poll(&mut |_, d| got.push(d.seq)).unwrap();
    assert_eq!(got, vec![2, 3, 4]);
    assert_eq!(a.consumed_through(2), 4);
    assert!(hand(&mut a, &mut b, 100, 1).is_empty());
}

/// A gap marker waits until everything handed before it is consumed: its `Event::Lost` and
/// the messages after it come only then, in order.
#[test]
fn gap_marker_waits_for_handed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    b.send(1, b"first").unwrap();
    assert_eq!(seqs(&hand(&mut a, &mut b, 100, 1)), vec![1]);
    // Persisted is acknowledged, consumed or not.
    until_acked(&mut a, &mut b, 1);
    // Seq 2 is given up before it is ever transmitted; seq 3 follows.
    let second = b.send(1, b"second").unwrap();
    assert_eq!(b.discard(1, second).unwrap(), Some(2..=2));
    b.send(1, b"third").unwrap();
    // The marker and seq 3 reach A and are persisted there (acknowledged) before it is
    // checked that they wait; polled deferred with a limit of 0, A is handed nothing.
    until_acked(&mut a, &mut b, 3);
    // Neither the marker nor what follows it passes the handed, unconsumed seq 1.
    assert!(hand(&mut a, &mut b, 100, 1).is_empty());
    assert!(std::iter::from_fn(|| a.next_event()).all(|e| !matches!(e, Event::Lost { .. })));
    a.consume(2, 1).unwrap();
    let got = hand(&mut a, &mut b, 100, 1);
    assert_eq!(seqs(&got), vec![3]);
    let lost: Vec<_> = std::iter::from_fn(|| a.next_event())
        .filter_map(|e| match e {
            Event::Lost { peer, range } => Some((peer, range)),
            _ => None,
        })
        .collect();
    assert_eq!(lost, vec![(2, 2..=2)]);
    assert_eq!(a.consumed_through(2), 2);
}

/// A receiver that declines what it is handed (hands it back with `redeliver`, unconsumed)
/// pushes back on the sender through flow control: the receiver persists no more than its
/// receive window past what it consumed, and the sender's sends are refused as backpressure
/// (`WindowFull`) once its unacknowledged limit is reached. Once the receiver takes the
/// messages, the sender's stream goes on and everything arrives once, in order.
#[test]
fn declined_messages_push_back_on_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeConfig::new(dir.path().join("a"), 1)
        .bind(local())
        .recv_window(32)
        .open()
        .unwrap();
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .max_unacked_per_peer(64)
        .open()
        .unwrap();
    let total = 200u32;
    let mut sent = 0u32;
    let mut refused = false;
    let mut offered = 0u64;
    let deadline = Instant::now() + DEADLINE;
    // Until the sender is refused and has stayed refused for a while.
    let mut refused_rounds = 0;
    while refused_rounds < 200 {
        assert!(
            Instant::now() < deadline,
            "the sender was never pushed back"
        );
        while sent < total {
            match b.send(1, &sent.to_le_bytes()) {
                Ok(_) => sent += 1,
                Err(e) => {
                    assert!(matches!(e, hrpc_node::SendError::WindowFull { .. }), "{e}");
                    refused = true;
                    break;
                }
            }
        }
        if refused {
            refused_rounds += 1;
        }
        b.poll(&mut |_, _| {}).unwrap();
        a.poll_deferred(usize::MAX, &mut |_, _| offered += 1)
            .unwrap();
        // Declined: offered again later.
        a.redeliver(2);
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(offered > 0, "the receiver was offered messages");
    assert_eq!(a.consumed_through(2), 0);
    let held = a.store().inbound_seqs(2).len();
    assert!(held <= 32, "{held} held past a window of 32");
    assert!(sent < total, "the sender was held back ({sent} sent)");
    assert!(b.unacked() <= 64);

    // The receiver takes them: the stream resumes to the end.
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < total as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {total} arrived",
            got.len()
        );
        while sent < total && b.send(1, &sent.to_le_bytes()).is_ok() {
            sent += 1;
        }
        b.poll(&mut |_, _| {}).unwrap();
        a.poll(&mut |_, d| got.push(u32::from_le_bytes(d.payload.try_into().unwrap())))
            .unwrap();
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(got, (0..total).collect::<Vec<_>>());
}
