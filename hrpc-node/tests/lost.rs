//! Messages that can never be delivered are reported, in order, and the
//! stream goes on: a sender that gives up on messages (`discard`), a sender
//! whose store was damaged, a receiver whose store was damaged, and peer
//! resets after long streams and after selectively acknowledged gaps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Instant;

use common::{Seen, Side, accounted, cut_in_half, drive, has_frame, open, open_with, side};
use hrpc_node::proto::{Core, CoreConfig, Event};
use hrpc_store::{StoreConfig, StoreError};
use hrpc_wire::Frame;

fn pass_all(_: u32, _: &[u8]) -> bool {
    true
}

fn unacked(core: &Core, peer: u32) -> u64 {
    core.store()
        .outbound_pending(peer)
        .map_or(0, |(low, next)| next - low)
}

/// Nodes 1 and 2, opened on `dir`, and what each has seen (nothing yet).
fn pair(dir: &Path, now: Instant) -> (Core, Core, Seen, Seen) {
    let a = open(dir, 1, now);
    let b = open(dir, 2, now);
    (a, b, Seen::default(), Seen::default())
}

/// Drives `a` and `b`, both delivering, for `rounds` steps with every datagram arriving.
fn run(a: &mut Core, sa: &mut Seen, b: &mut Core, sb: &mut Seen, now: &mut Instant, rounds: usize) {
    drive(side(a, sa), side(b, sb), now, rounds, &mut pass_all);
}

/// Cuts node `id`'s first store segment to half its length (the node must be stopped).
fn cut_first_segment(dir: &Path, id: u32) {
    cut_in_half(&dir.join(id.to_string()).join("seg-000000"));
}

/// Reopens node `id` with `recover_damaged`, so a damaged store opens and reports its loss.
fn open_recovering(dir: &Path, id: u32, now: Instant) -> Core {
    let recover = StoreConfig {
        recover_damaged: true,
        ..StoreConfig::new(id)
    };
    open_with(dir, id, now, recover, CoreConfig::default()).unwrap()
}

/// Invariant: after `discard(peer, n)` the peer reports `Lost` for exactly the
/// discarded seqs it had not received, delivers the ones it had and every
/// later message, in order, and the sender ends with nothing pending.
#[test]
fn discard_is_reported_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let (mut a, mut b, mut sa, mut sb) = pair(dir.path(), now);
    for i in 1..=3u8 {
        a.producer().send(2, &[i; 10]).unwrap();
    }
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 50);
    assert_eq!(sb.seqs(1), vec![1, 2, 3]);
    // 4..=10 never reach b.
    for i in 4..=10u8 {
        a.producer().send(2, &[i; 10]).unwrap();
    }
    let mut no_data =
        |from: u32, d: &[u8]| from != 1 || !has_frame(d, |f| matches!(f, Frame::Data(_)));
    drive(
        side(&mut a, &mut sa),
        side(&mut b, &mut sb),
        &mut now,
        20,
        &mut no_data,
    );
    assert_eq!(sb.seqs(1), vec![1, 2, 3]);
    assert_eq!(a.discard(2, 6, now).unwrap(), Some(4..=6));
    assert_eq!(a.discard(2, 3, now).unwrap(), None);
    a.producer().send(2, &[11; 10]).unwrap();
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 200);
    assert_eq!(sb.seqs(1), vec![1, 2, 3, 7, 8, 9, 10, 11]);
    assert_eq!(sb.lost(1), vec![4..=6]);
    assert_eq!(b.stats().messages_lost, 3);
    assert_eq!(unacked(&a, 2), 0);
}

/// Invariant: a discard of messages the peer already persisted reports
/// nothing lost there (it delivers them), and the stream goes on.
#[test]
fn discard_of_persisted_messages_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let (mut a, mut b, mut sa, mut sb) = pair(dir.path(), now);
    for i in 1..=5u8 {
        a.producer().send(2, &[i; 10]).unwrap();
    }
    // b persists everything, but its acks never arrive.
    let mut no_acks =
        |from: u32, d: &[u8]| from != 2 || !has_frame(d, |f| matches!(f, Frame::Ack(_)));
    drive(
        side(&mut a, &mut sa),
        side(&mut b, &mut sb),
        &mut now,
        30,
        &mut no_acks,
    );
    assert_eq!(sb.seqs(1), vec![1, 2, 3, 4, 5]);
    assert!(unacked(&a, 2) > 0);
    a.discard(2, 5, now).unwrap();
    a.producer().send(2, b"six").unwrap();
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 200);
    assert_eq!(sb.seqs(1), vec![1, 2, 3, 4, 5, 6]);
    assert!(sb.lost(1).is_empty(), "{:?}", sb.lost(1));
    assert_eq!(unacked(&a, 2), 0);
}

/// The sender's store loses half of its first segment while it is stopped,
/// with 300 messages pending whose acks never arrived, and with the peer
/// holding only the first ones. A plain reopen is refused; a recovering one
/// reports the lost range (`OutboundLost`), keeps its numbering, and the peer
/// reports `Lost` for exactly what it lacks, then delivers new messages.
#[test]
fn damaged_sender_store_is_refused_then_reported_and_the_peer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let (mut a, mut b, mut sa, mut sb) = pair(dir.path(), now);
    for i in 0..300u32 {
        a.producer().send(2, &i.to_le_bytes().repeat(25)).unwrap();
    }
    // b gets the first ~170 and its acks never arrive.
    let mut filter = |from: u32, d: &[u8]| match from {
        1 => !has_frame(d, |f| matches!(f, Frame::Data(x) if x.seq > 170)),
        _ => !has_frame(d, |f| matches!(f, Frame::Ack(_))),
    };
    drive(
        side(&mut a, &mut sa),
        side(&mut b, &mut sb),
        &mut now,
        40,
        &mut filter,
    );
    let had = sb.seqs(1).len() as u64;
    assert!(had >= 100, "b got only {had}");
    assert_eq!(sb.seqs(1), (1..=had).collect::<Vec<_>>());
    drop(a);
    cut_first_segment(dir.path(), 1);

    let plain = open_with(
        dir.path(),
        1,
        now,
        StoreConfig::new(1),
        CoreConfig::default(),
    );
    assert!(
        matches!(plain, Err(StoreError::Damaged { .. })),
        "{plain:?}"
    );
    let mut a = open_recovering(dir.path(), 1, now);
    let lost: Vec<_> = a.store().open_report().lost.clone();
    assert!(!lost.is_empty());
    assert_eq!(
        a.store().outbound_pending(2).unwrap().1,
        301,
        "numbering went back"
    );
    assert_eq!(a.producer().send(2, b"after").unwrap(), 301);
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 300);
    let out_lost: Vec<_> = sa
        .events
        .iter()
        .filter_map(|e| match e {
            Event::OutboundLost { peer: 2, range } => Some(range.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        out_lost,
        lost.iter().map(|r| r.first..=r.last).collect::<Vec<_>>()
    );
    // Every seq is delivered or reported lost at b, exactly once, in order.
    assert_eq!(
        accounted(&sb.seqs(1), &sb.lost(1)),
        (1..=301).collect::<Vec<_>>()
    );
    assert_eq!(*sb.seqs(1).last().unwrap(), 301);
    for r in sb.lost(1) {
        assert!(*r.start() > had, "b reported lost what it had: {r:?}");
    }
    assert_eq!(unacked(&a, 2), 0);
}

/// The receiver persisted and acknowledged 50 messages, delivered none, and
/// lost half of its segment while stopped. Reopened with `recover_damaged`,
/// it delivers what survived and reports the rest as `Lost` (the sender had
/// freed them), in order; nothing is delivered twice.
#[test]
fn damaged_receiver_store_reports_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let (mut a, mut b, mut sa, mut sb) = pair(dir.path(), now);
    for i in 0..300u32 {
        a.producer().send(2, &i.to_le_bytes().repeat(25)).unwrap();
    }
    drive(
        side(&mut a, &mut sa),
        Side {
            core: &mut b,
            seen: &mut sb,
            deliver: false,
        },
        &mut now,
        60,
        &mut pass_all,
    );
    assert_eq!(unacked(&a, 2), 0, "b acknowledged everything");
    drop(b);
    cut_first_segment(dir.path(), 2);
    let mut b = open_recovering(dir.path(), 2, now);
    a.producer().send(2, b"more").unwrap();
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 400);
    assert_eq!(
        accounted(&sb.seqs(1), &sb.lost(1)),
        (1..=301).collect::<Vec<_>>()
    );
    assert!(!sb.lost(1).is_empty(), "the loss went unreported");
    let seqs = sb.seqs(1);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
}

/// A receiver that loses its store after `before` messages delivered (more
/// than its receive window) starts its new stream where the sender's pending
/// messages start, and delivers the 10 sent after the reset, none lost.
fn reset_after(before: u32, cfg: CoreConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open_with(dir.path(), 1, now, StoreConfig::new(1), cfg.clone()).unwrap();
    let mut b = open_with(dir.path(), 2, now, StoreConfig::new(2), cfg.clone()).unwrap();
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    for i in 0..before {
        a.producer().send(2, &i.to_le_bytes()).unwrap();
    }
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 400);
    assert_eq!(sb.seqs(1).len(), before as usize);
    drop(b);
    std::fs::remove_dir_all(dir.path().join("2")).unwrap();
    let mut b = open_with(dir.path(), 2, now, StoreConfig::new(2), cfg).unwrap();
    let mut sb = Seen::default();
    for i in 0..10u32 {
        a.producer().send(2, &i.to_le_bytes()).unwrap();
    }
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 600);
    let first = u64::from(before) + 1;
    assert_eq!(sb.seqs(1), (first..first + 10).collect::<Vec<_>>());
    assert!(sb.lost(1).is_empty());
}

/// `reset_after` with a small window (500 messages) and 1,200 messages.
#[test]
fn peer_reset_after_more_than_a_window_of_messages() {
    let mut cfg = CoreConfig::default();
    cfg.recv_window_msgs = 500;
    reset_after(1200, cfg);
}

/// `reset_after` with the numbers: the default configuration (a receive window of
/// 65,536) and 70,000 messages before the reset.
#[test]
fn peer_reset_after_70000_messages_default_window() {
    reset_after(70_000, CoreConfig::default());
}

/// A sends 1..=10; the first copy of 6 is lost, so B acknowledges 5 and
/// selectively 7..=10. B then loses its store. A keeps 6..=10 (selectively
/// acknowledged messages are freed only by the cumulative ack), so B's new
/// session gets 6..=12: nothing is acknowledged and then never delivered.
#[test]
fn peer_reset_after_a_selectively_acknowledged_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let (mut a, mut b, mut sa, mut sb) = pair(dir.path(), now);
    for i in 1..=10u8 {
        a.producer().send(2, &[i; 700]).unwrap();
    }
    // Every copy of 6 is lost for now: b acknowledges 5 and, selectively, 7..=10.
    let mut lose_six = |from: u32, d: &[u8]| {
        from != 1 || !has_frame(d, |f| matches!(f, Frame::Data(x) if x.seq == 6))
    };
    drive(
        side(&mut a, &mut sa),
        side(&mut b, &mut sb),
        &mut now,
        50,
        &mut lose_six,
    );
    assert_eq!(sb.seqs(1), vec![1, 2, 3, 4, 5]);
    assert_eq!(b.store().inbound_seqs(1), vec![7, 8, 9, 10]);
    // Selectively acknowledged messages stay until the cumulative ack passes them.
    assert_eq!(a.store().outbound_seqs(2), vec![6, 7, 8, 9, 10]);
    drop(b);
    std::fs::remove_dir_all(dir.path().join("2")).unwrap();
    let mut b = open(dir.path(), 2, now);
    let mut sb = Seen::default();
    a.producer().send(2, &[11; 700]).unwrap();
    a.producer().send(2, &[12; 700]).unwrap();
    run(&mut a, &mut sa, &mut b, &mut sb, &mut now, 400);
    assert_eq!(sb.seqs(1), (6..=12).collect::<Vec<_>>());
    assert_eq!(unacked(&a, 2), 0);
}
