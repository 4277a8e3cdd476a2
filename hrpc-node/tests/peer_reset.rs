//! A peer that loses its store comes back with a new epoch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{addr, open};

use std::time::{Duration, Instant};

use hrpc_node::proto::{Core, Event};

/// What a core delivered: (peer, seq, payload).
type Got = Vec<(u32, u64, Vec<u8>)>;

/// Runs both cores until quiet; returns what each delivered as (peer, seq, payload).
fn drive(a: &mut Core, b: &mut Core, now: &mut Instant) -> (Got, Got) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 1472];
    for _ in 0..400 {
        *now += Duration::from_millis(5);
        let t = *now;
        for c in [&mut *a, &mut *b] {
            if c.poll_timeout().is_some_and(|x| x <= t) {
                c.handle_timeout(t);
            }
        }
        while let Some(x) = a.poll_transmit(t, &mut buf) {
            b.handle_datagram(t, addr(1), &buf[..x.len]);
        }
        while let Some(x) = b.poll_transmit(t, &mut buf) {
            a.handle_datagram(t, addr(2), &buf[..x.len]);
        }
        a.deliver(usize::MAX, &mut |d| {
            got_a.push((d.peer, d.seq, d.payload.to_vec()))
        })
        .unwrap();
        b.deliver(usize::MAX, &mut |d| {
            got_b.push((d.peer, d.seq, d.payload.to_vec()))
        })
        .unwrap();
    }
    (got_a, got_b)
}

/// Invariant: when b loses its store, a reports `PeerReset` with the range
/// of its unacknowledged messages, delivers them to b's new session (b
/// starts where a's unacknowledged messages start, not at 1), and accepts
/// b's new stream from seq 1; nothing a had not seen acknowledged is lost.
#[test]
fn store_loss_resends_unacknowledged_and_restarts_inbound() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    let mut b = open(dir.path(), 2, now);
    for m in [b"one", b"two", b"thr"] {
        a.producer().send(2, m).unwrap();
    }
    b.producer().send(1, b"old-b").unwrap();
    let (got_a, got_b) = drive(&mut a, &mut b, &mut now);
    assert_eq!(got_b.iter().map(|g| g.1).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(got_a, vec![(2, 1, b"old-b".to_vec())]);
    let old_epoch = b.session_token(1);

    // b's disk is wiped while a has two more queued for it.
    drop(b);
    std::fs::remove_dir_all(dir.path().join("2")).unwrap();
    a.producer().send(2, b"four").unwrap();
    a.producer().send(2, b"five").unwrap();
    now += Duration::from_millis(1);
    let mut b = open(dir.path(), 2, now);
    assert_ne!(
        b.session_token(1),
        old_epoch,
        "a new store has a new session"
    );
    b.producer().send(1, b"new-b").unwrap();

    let (got_a, got_b) = drive(&mut a, &mut b, &mut now);
    assert_eq!(
        got_b,
        vec![(1, 4, b"four".to_vec()), (1, 5, b"five".to_vec())],
        "b's new session gets what a never saw acknowledged"
    );
    assert_eq!(
        got_a,
        vec![(2, 1, b"new-b".to_vec())],
        "b's new stream starts at 1"
    );
    let resets: Vec<Event> = std::iter::from_fn(|| a.poll_event())
        .filter(|e| matches!(e, Event::PeerReset { .. }))
        .collect();
    assert_eq!(
        resets,
        vec![Event::PeerReset {
            peer: 2,
            old_epoch,
            new_epoch: b.session_token(1),
            resent: 4..6
        }]
    );
    assert_eq!(a.stats().peer_resets, 1);
}
