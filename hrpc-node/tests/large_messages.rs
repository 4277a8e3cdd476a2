//! Large (fragmented) messages at the edges: a reverse-path outage, a sender
//! restart in the middle of a message, and small messages queued behind a
//! large one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{Seen, drive, open, side};
use hrpc_node::proto::Core;
use hrpc_wire::{Datagram, Frame};

fn message(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8 ^ tag).collect()
}

/// Payload bytes of DATA frames in a datagram.
fn data_bytes(d: &[u8]) -> usize {
    Datagram::parse(d).map_or(0, |d| {
        d.frames()
            .map(|f| match f {
                Frame::Data(x) => x.payload.len(),
                _ => 0,
            })
            .sum()
    })
}

/// One round of `a` (node 1) and `b`, everything arriving; adds the DATA payload bytes `a`
/// sent to `sent`.
fn step_counting(
    a: &mut Core,
    sa: &mut Seen,
    b: &mut Core,
    sb: &mut Seen,
    now: &mut Instant,
    sent: &mut usize,
) {
    let mut count = |from: u32, d: &[u8]| {
        if from == 1 {
            *sent += data_bytes(d);
        }
        true
    };
    drive(side(a, sa), side(b, sb), now, 1, &mut count);
}

/// Invariant: cutting only the receiver→sender path for a few milliseconds
/// while a 4 MiB message is in flight (acks and progress reports lost) does
/// not stall it: it is delivered intact within a bounded time.
#[test]
fn reverse_path_outage_during_a_large_message() {
    for cut_at in [2usize, 4, 8] {
        let dir = tempfile::tempdir().unwrap();
        let mut now = Instant::now();
        let mut a = open(dir.path(), 1, now);
        let mut b = open(dir.path(), 2, now);
        let (mut sa, mut sb) = (Seen::default(), Seen::default());
        let msg = message(4 << 20, 1);
        a.producer().send(2, &msg).unwrap();
        let mut round = 0usize;
        for _ in 0..4000 {
            round += 1;
            let cut = round == cut_at;
            let mut pass = |from: u32, _: &[u8]| !(cut && from == 2);
            drive(
                side(&mut a, &mut sa),
                side(&mut b, &mut sb),
                &mut now,
                1,
                &mut pass,
            );
            if !sb.got.is_empty() {
                break;
            }
        }
        assert_eq!(
            sb.got.len(),
            1,
            "cut at round {cut_at}: not delivered after {round} rounds"
        );
        assert!(sb.got[0].2 == msg);
    }
}

/// Invariant: a sender restarted (same store) once the receiver holds about
/// half of a 16 MiB message does not stall the stream: the receiver's
/// progress reaches the restarted sender, the rest is sent, and the message
/// and the small one behind it are delivered, in order.
#[test]
fn sender_restart_in_the_middle_of_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    let mut b = open(dir.path(), 2, now);
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    let big = message(16 << 20, 2);
    a.producer().send(2, &big).unwrap();
    a.producer().send(2, b"after").unwrap();
    let mut passed = 0usize;
    for _ in 0..4000 {
        step_counting(&mut a, &mut sa, &mut b, &mut sb, &mut now, &mut passed);
        if passed >= 8 << 20 {
            break;
        }
    }
    assert!(passed >= 8 << 20 && sb.got.is_empty());
    drop(a);
    let mut a = open(dir.path(), 1, now);
    let mut resent = 0usize;
    let mut rounds = 0;
    while sb.got.len() < 2 && rounds < 4000 {
        rounds += 1;
        step_counting(&mut a, &mut sa, &mut b, &mut sb, &mut now, &mut resent);
    }
    assert_eq!(
        sb.seqs(1),
        vec![1, 2],
        "not delivered after {rounds} rounds"
    );
    assert!(sb.got[0].2 == big);
    assert_eq!(sb.got[1].2, b"after");
    // The receiver's copy was used: far less than the whole message went again.
    assert!(
        resent < 12 << 20,
        "{resent} bytes sent again after the restart for a 16 MiB message half delivered"
    );
}

/// Invariant: small messages queued behind a large one are not held hostage
/// by it: they reach the receiver's store while the large one is still being
/// written (delivery still waits for it: the stream is ordered).
#[test]
fn small_messages_behind_a_large_one_are_persisted_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    let mut b = open(dir.path(), 2, now);
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    a.producer().send(2, &message(16 << 20, 3)).unwrap();
    for i in 0..20u8 {
        a.producer().send(2, &[i; 50]).unwrap();
    }
    let mut seen_behind = false;
    for _ in 0..4000 {
        drive(
            side(&mut a, &mut sa),
            side(&mut b, &mut sb),
            &mut now,
            1,
            &mut |_, _| true,
        );
        if sb.got.is_empty() && b.store().inbound_seqs(1).len() == 20 {
            seen_behind = true;
        }
        if sb.got.len() == 21 {
            break;
        }
    }
    assert!(
        seen_behind,
        "the small messages waited for the large one to be sent"
    );
    assert_eq!(sb.seqs(1), (1..=21).collect::<Vec<_>>());
}

/// Invariant: fragments are acknowledged selectively. With every 50th
/// datagram from the sender lost, a 4 MiB message is delivered intact and the
/// sender puts at most 15% more payload bytes on the wire than the message
/// holds (go-back-N would resend everything after each hole).
#[test]
fn fragment_loss_resends_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    let mut b = open(dir.path(), 2, now);
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    let msg = message(4 << 20, 4);
    a.producer().send(2, &msg).unwrap();
    let (mut sent, mut n) = (0usize, 0usize);
    for _ in 0..4000 {
        let mut lossy = |from: u32, d: &[u8]| {
            if from != 1 {
                return true;
            }
            sent += data_bytes(d);
            n += 1;
            !n.is_multiple_of(50)
        };
        drive(
            side(&mut a, &mut sa),
            side(&mut b, &mut sb),
            &mut now,
            1,
            &mut lossy,
        );
        if !sb.got.is_empty() {
            break;
        }
    }
    assert_eq!(sb.got.len(), 1);
    assert!(sb.got[0].2 == msg);
    assert!(
        sent <= msg.len() * 115 / 100,
        "{sent} payload bytes sent for a {}-byte message",
        msg.len()
    );
}
